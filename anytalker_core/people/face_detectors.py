"""The face detector backends behind :func:`~.faces.find_faces` (see its module docstring for what each does and
when ``"auto"`` picks it): YuNet through OpenCV's ``FaceDetectorYN`` (two passes for close-ups), InsightFace's
SCRFD / RetinaFace ONNX detector when it is installed with its files, OpenCV's Haar cascade as a last resort.

Each ``*_detect`` takes a uint8 RGB picture [H, W, 3] and a threshold in 0..1 and returns its hits in the picture's
pixels: (box, score, five landmarks or None).
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .masks import Box

DEFAULT_THRESHOLDS = {"yunet": 0.8, "insightface": 0.15, "haar": 0.5}  # insightface: the reference's det_thresh
YUNET_FILE = Path(__file__).resolve().parent / "face_models" / "yunet_s_640_640.onnx"
YUNET_OPENCV = (4, 8)  # the 2023 YuNet model needs cv2.FaceDetectorYN of OpenCV 4.8 or newer
YUNET_MAX_SIDE = 1920  # long side of the first pass (the picture's own size up to this)
YUNET_SMALL_SIDE = 320  # long side of the second pass (close-ups)
YUNET_LARGE_FACE = 256  # a first-pass face larger than this (detector pixels) is out of YuNet's range: 2nd pass
YUNET_NMS = 0.3
YUNET_MIN_SIDE = 64  # smaller detector inputs are padded to this (see _yunet_pass)
HAAR_FILE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_FACTOR = 1.1
HAAR_MIN_FACE = 40  # pixels of the input image
HAAR_MAX_SIDE = 1600  # long side of the main detection pass
HAAR_SECOND_SIDE = 800  # long side of the extra pass on larger images
INSIGHTFACE_ENV = "ANYTALKER_INSIGHTFACE_ROOT"
INSIGHTFACE_SIZE = (640, 640)
INSIGHTFACE_PREFERRED = ("buffalo_l/det_10g.onnx", "antelopev2/scrfd_10g_bnkps.onnx")
OPENCV_FIX = 'pip install "opencv-python-headless>=4.8,<6"'
HAAR_FIX = 'pip install "opencv-python-headless>=4.8,<5"'

Point = tuple[float, float]
Hit = tuple[Box, float, tuple[Point, ...] | None]  # a detector's box, score and landmarks (None: none)


class FaceError(ValueError):
    """Fewer faces found than needed, or a face detector that cannot run."""

    def __init__(self, message: str, found: int | None = None, needed: int | None = None):
        super().__init__(message)
        self.found = found
        self.needed = needed


def _import_cv2():
    try:
        import cv2
    except ImportError as exc:
        raise FaceError(
            f"face detection needs OpenCV (module cv2), which is not importable ({exc}). Fix: {OPENCV_FIX}"
        ) from exc
    return cv2


def _resized(cv2, image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """(image with its long side at most ``side``, the scale applied)."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1.0:
        return image, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _clip_box(box: Sequence[float], width: int, height: int) -> Box:
    x0, y0, x1, y1 = (float(v) for v in box)
    return max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _merge(hits: list, iou: float = 0.3) -> list:
    """Greedy non-maximum suppression over (box, score, ...) hits: of overlapping boxes keep the higher score."""
    kept: list = []
    for hit in sorted(hits, key=lambda h: -h[1]):
        if all(_iou(hit[0], k[0]) <= iou for k in kept):
            kept.append(hit)
    return kept


# ---------------------------------------------------------------------------------------------- yunet


def yunet_status() -> str:
    """The empty string when the YuNet backend can run, else the reason it cannot (with the fix)."""
    try:
        cv2 = _import_cv2()
    except FaceError as err:
        return str(err)
    version = getattr(cv2, "__version__", "0")
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if not hasattr(cv2, "FaceDetectorYN") or parts < YUNET_OPENCV:
        return f"YuNet needs OpenCV 4.8 or newer (cv2.FaceDetectorYN), this is OpenCV {version}. Fix: {OPENCV_FIX}"
    if not YUNET_FILE.is_file():
        return f"the YuNet model file {YUNET_FILE} is missing from the pack; reinstall the pack"
    return ""


_YUNET_LOCK = threading.Lock()  # one detector object, reconfigured per call


@lru_cache(maxsize=1)
def _yunet_model(path: str) -> Any:
    cv2 = _import_cv2()
    return cv2.FaceDetectorYN.create(path, "", (320, 320), DEFAULT_THRESHOLDS["yunet"], YUNET_NMS, 5000)


def _yunet_pass(rgb: np.ndarray, side: int, threshold: float) -> list[Hit]:
    """One YuNet pass on the picture resized to long side ``side``: hits in the picture's pixels."""
    cv2 = _import_cv2()
    small, scale = _resized(cv2, rgb, side)
    # Padded (black, right and bottom) to at least YUNET_MIN_SIDE a side: on inputs with a side of 32 px or less
    # OpenCV's FaceDetectorYN returns rows of garbage (NaN, 1e27, score 1.0) in about a third of the calls.
    pad_h, pad_w = max(0, YUNET_MIN_SIDE - small.shape[0]), max(0, YUNET_MIN_SIDE - small.shape[1])
    if pad_h or pad_w:
        small = cv2.copyMakeBorder(small, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    bgr = np.ascontiguousarray(small[:, :, ::-1])
    with _YUNET_LOCK:
        model = _yunet_model(str(YUNET_FILE))
        model.setInputSize((bgr.shape[1], bgr.shape[0]))
        model.setScoreThreshold(float(threshold))
        _, rows = model.detect(bgr)
    height, width = rgb.shape[:2]
    hits: list[Hit] = []
    for row in np.zeros((0, 15)) if rows is None else np.asarray(rows, np.float64).reshape(-1, 15):
        x, y, w, h = row[:4] / scale
        box = _clip_box((x, y, x + w, y + h), width, height)
        if not np.isfinite(row).all() or box[2] - box[0] < 1 or box[3] - box[1] < 1:
            continue  # nothing real: outside the picture (its padding) or not a number
        points = tuple((float(row[4 + 2 * k] / scale), float(row[5 + 2 * k] / scale)) for k in range(5))
        hits.append((box, float(row[14]), points))
    return hits


def yunet_detect(rgb: np.ndarray, threshold: float, n: int | None) -> tuple[list[Hit], str, dict]:
    """YuNet: the first pass at the picture's own size; a second pass at a small size when it found fewer faces than
    needed (``n``, or none at all) or a face too large for YuNet (a close-up); the two merged."""
    long_side = max(rgb.shape[:2])
    first = min(long_side, YUNET_MAX_SIDE)
    hits = _yunet_pass(rgb, first, threshold)
    passes = [(first, len(hits))]
    scale = first / long_side
    largest = max((max(b[2] - b[0], b[3] - b[1]) * scale for b, _, _ in hits), default=0.0)
    second = min(YUNET_SMALL_SIDE, long_side // 2)
    if (len(hits) < (n or 1) or largest > YUNET_LARGE_FACE) and second >= 32:
        more = _yunet_pass(rgb, second, threshold)
        passes.append((second, len(more)))
        hits = _merge(hits + more, YUNET_NMS)
    return hits, str(YUNET_FILE), {"passes": passes}


# ---------------------------------------------------------------------------------------------- haar


@lru_cache(maxsize=None)
def _haar_cascade() -> tuple[Any, str]:
    cv2 = _import_cv2()
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    version = getattr(cv2, "__version__", "?")
    path = Path(folder) / HAAR_FILE if folder else None
    if path is None or not path.is_file():
        raise FaceError(
            f"OpenCV {version} provides no {HAAR_FILE} (looked in cv2.data.haarcascades = {folder!r}); "
            f'OpenCV 5 wheels ship no Haar cascades. Use backend="yunet" (or "auto"), or fix: {HAAR_FIX} '
            "(if opencv-python is also installed, it must be 4.x too)"
        )
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FaceError(f"OpenCV could not load the Haar cascade {path}. Fix: reinstall OpenCV 4.x: {HAAR_FIX}")
    return cascade, str(path)


def haar_detect(rgb: np.ndarray, threshold: float) -> tuple[list[Box], list[float], str]:
    cv2 = _import_cv2()
    cascade, path = _haar_cascade()
    height, width = rgb.shape[:2]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    long_side = max(height, width)
    sides = [min(long_side, HAAR_MAX_SIDE)]
    if long_side > HAAR_SECOND_SIDE:
        sides.append(HAAR_SECOND_SIDE)
    neighbours = int(round(10 * threshold))
    hits: list[tuple[Box, float]] = []
    for side in sides:
        small, scale = _resized(cv2, gray, side)
        min_face = max(24, round(HAAR_MIN_FACE * scale))
        rects, _levels, weights = cascade.detectMultiScale3(
            small,
            scaleFactor=HAAR_SCALE_FACTOR,
            minNeighbors=neighbours,
            minSize=(min_face, min_face),
            outputRejectLevels=True,
        )
        for (x, y, w, h), score in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            box = (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
            hits.append((tuple(min(float(v), lim) for v, lim in zip(box, (width, height) * 2)), float(score)))
    kept = _merge(hits)
    return [b for b, _ in kept], [s for _, s in kept], path


# ---------------------------------------------------------------------------------------------- insightface


def _insightface_roots(root: str | os.PathLike | None) -> list[Path]:
    roots: list[Path] = []
    if root:
        roots.append(Path(root).expanduser())
    if os.environ.get(INSIGHTFACE_ENV):
        roots.append(Path(os.environ[INSIGHTFACE_ENV]).expanduser())
    roots.append(Path("~/.insightface").expanduser())
    return roots


def find_insightface_detector(root: str | os.PathLike | None = None) -> Path | None:
    """The InsightFace detector ONNX file already on disk (see the module docs for where it looks), or None."""
    for base in _insightface_roots(root):
        if base.is_file() and base.suffix == ".onnx":
            return base
        if not base.is_dir():
            continue
        for folder in (base / "models", base):
            for rel in INSIGHTFACE_PREFERRED:
                if (folder / rel).is_file():
                    return folder / rel
        for pattern in ("det_*.onnx", "scrfd*.onnx", "*/det_*.onnx", "*/scrfd*.onnx", "models/*/det_*.onnx"):
            found = sorted(base.glob(pattern))
            if found:
                return found[0]
    return None


def insightface_status(root: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """(detector file, "") when the InsightFace backend can run, else (None, the reason it cannot)."""
    try:
        import insightface  # noqa: F401
    except Exception as exc:  # ImportError, or a broken onnxruntime underneath
        return None, f"the insightface package is not importable ({type(exc).__name__}: {exc})"
    path = find_insightface_detector(root)
    if path is None:
        where = ", ".join(str(p) for p in _insightface_roots(root))
        return None, (
            f"no InsightFace detector model (det_*.onnx, e.g. buffalo_l/det_10g.onnx) found under: {where}; "
            f"nothing is downloaded (set {INSIGHTFACE_ENV} or pass root to point at it)"
        )
    return path, ""


@lru_cache(maxsize=4)
def _insightface_model(path: str) -> Any:
    from insightface.model_zoo import get_model

    try:
        model = get_model(path, providers=["CPUExecutionProvider"])
    except TypeError:  # older insightface without the providers argument
        model = get_model(path)
    if model is None or not hasattr(model, "detect"):
        raise FaceError(f"{path} is not an InsightFace face detection model")
    model.prepare(ctx_id=-1, input_size=INSIGHTFACE_SIZE)
    return model


def insightface_detect(rgb: np.ndarray, threshold: float, path: Path) -> tuple[list[Hit], str]:
    model = _insightface_model(str(path))
    if hasattr(model, "det_thresh"):
        model.det_thresh = threshold
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # InsightFace reads OpenCV's BGR order
    dets, kps = model.detect(bgr, input_size=INSIGHTFACE_SIZE, max_num=0)
    dets = np.asarray(dets, np.float64).reshape(-1, 5)
    kps = None if kps is None else np.asarray(kps, np.float64).reshape(len(dets), 5, 2)
    height, width = rgb.shape[:2]
    hits: list[Hit] = []
    for k, row in enumerate(dets):
        if float(row[4]) < threshold:
            continue
        points = None if kps is None else tuple((float(x), float(y)) for x, y in kps[k])
        hits.append((_clip_box(row[:4], width, height), float(row[4]), points))
    return hits, str(path)

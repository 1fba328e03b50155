"""Face detection: one square face box per person, ordered left to right (the reference's
``utils/get_face_bbox.py`` semantics: detect, keep the ``n`` largest by box area, sort by the left edge,
make each box square with :func:`anytalker_core.people.masks.square_box`), plus each face's score and landmarks.

Backends
--------
- ``"yunet"`` (what ``"auto"`` uses without InsightFace): the YuNet face detector (2023, Apache-2.0), a 232 KB
  ONNX file shipped in ``face_models/`` beside this module, run by OpenCV's ``cv2.FaceDetectorYN`` (OpenCV 4.8
  or newer). It finds profile, three-quarter and hat-shadowed faces, and returns five landmarks per face.
  The detector sees the picture at its own size (long side at most :data:`YUNET_MAX_SIDE`). It was trained on
  faces of about 10-300 px, so on close-ups it misses the face or finds parts of it (an ear, a chin): when the
  first pass finds fewer faces than needed, or a face larger than :data:`YUNET_LARGE_FACE` px, a second pass
  runs at long side :data:`YUNET_SMALL_SIDE` and the two are merged (overlapping hits count once, the higher
  score wins).
- ``"insightface"`` (what the reference uses): the InsightFace SCRFD/RetinaFace detector ONNX file, when the
  ``insightface`` package is installed and a detector file is already on disk. Nothing is ever downloaded.
  Model folders searched, first hit wins: the ``root`` argument (the node pack passes ComfyUI's
  ``models/insightface``; the core never imports the host), ``$ANYTALKER_INSIGHTFACE_ROOT``, ``~/.insightface``.
  Inside a root the layout is InsightFace's own, ``<root>/models/<pack>/det_*.onnx`` (``buffalo_l/det_10g.onnx``
  preferred); a pack folder or a direct ``.onnx`` file path also works.
- ``"haar"`` (a last resort, by name only): OpenCV's frontal-face Haar cascade
  ``haarcascade_frontalface_default.xml`` from the OpenCV 4.x wheels (``cv2.data.haarcascades``; OpenCV 5 wheels
  ship none). Frontal faces only; no landmarks. Large pictures run at long side 1600, and also at 800 (merged):
  the cascade's hit on a hat-shadowed face depends on the scale.
- ``"auto"``: InsightFace when its package and files are present, otherwise YuNet; why InsightFace was not used
  is logged on the ``AnyTalker`` logger and recorded in :attr:`FaceDetection.note`.

``threshold`` is one knob in 0..1 for every backend (higher: fewer, surer faces; the default depends on the
backend, :data:`DEFAULT_THRESHOLDS`):
- YuNet: the score threshold; default 0.8: true faces score 0.89-0.96 on the example photos, an ear on a
  close-up 0.75;
- InsightFace: the detector's score threshold ``det_thresh`` itself; default 0.15, the reference's documented
  ``--det_thresh 0.15``;
- Haar: ``minNeighbors = round(10 * threshold)`` (the number of overlapping raw hits a face needs; the default
  0.5 gives OpenCV's customary 5). The per-face scores reported are the cascade's ``levelWeights`` from
  ``detectMultiScale3`` (not probabilities; about 10 for a clear face).

Landmarks (YuNet, InsightFace; :data:`LANDMARKS`): five (x, y) points in image pixels, image-left first: the
eye on the image's left (the person's right eye), the other eye, the nose tip, the mouth corner on the image's
left, the other mouth corner.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..images import as_rgb
from .masks import Box, square_box

log = logging.getLogger("AnyTalker")

BACKENDS = ("auto", "yunet", "insightface", "haar")
DEFAULT_THRESHOLDS = {"yunet": 0.8, "insightface": 0.15, "haar": 0.5}  # insightface: the reference's det_thresh
LANDMARKS = ("right_eye", "left_eye", "nose", "right_mouth", "left_mouth")  # the person's right = image left
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


@dataclass(frozen=True)
class Face:
    """One face: ``box`` the square box routing uses, ``raw_box`` the detector's own box, its ``score`` and its
    five ``landmarks`` (x, y) in image pixels, in :data:`LANDMARKS` order (None: the backend gives none)."""

    box: Box
    raw_box: Box
    score: float
    landmarks: tuple[Point, ...] | None = None


@dataclass
class FaceDetection:
    """What :func:`find_faces` found, left to right. ``boxes`` are the square boxes that :func:`detect_faces`
    returns; ``raw_boxes``, ``scores`` and ``landmarks`` are the detector's own for the same faces (same order);
    :attr:`faces` gives them together."""

    boxes: list[Box]
    raw_boxes: list[Box]
    scores: list[float]
    backend: str  # "yunet", "insightface" or "haar": the backend that ran
    width: int
    height: int
    seconds: float = 0.0
    note: str = ""  # why "auto" did not use InsightFace, when it did not
    detector: str = ""  # the cascade or model file used
    total_found: int = 0  # faces the detector found before keeping the n largest
    threshold: float = 0.0  # the threshold used
    landmarks: list[tuple[Point, ...] | None] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # yunet: "passes", [(long side, faces found), ...]

    @property
    def faces(self) -> list[Face]:
        marks = self.landmarks or [None] * len(self.boxes)
        return [Face(*parts) for parts in zip(self.boxes, self.raw_boxes, self.scores, marks)]


# ---------------------------------------------------------------------------------------------- input


def to_uint8_rgb(image: Any, name: str = "image") -> np.ndarray:
    """A picture (see ``images.as_rgb``) -> uint8 numpy [H, W, 3] for the detectors. In numpy: torch's thread
    pool costs tens of milliseconds here on a busy 2-core machine, more than the detection itself."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image
    if isinstance(array, np.ndarray) and array.dtype == np.uint8:
        array = array[0] if array.ndim == 4 and array.shape[0] == 1 else array
        if array.ndim == 3 and array.shape[2] == 3 and min(array.shape[:2]) >= 1:
            return np.ascontiguousarray(array)
    rgb = as_rgb(image, name).detach().cpu().numpy()  # checked, float32 (uint8 / 255)
    return np.clip(np.rint(rgb * np.float32(255.0)), 0, 255).astype(np.uint8)


def _check_threshold(threshold: float | None) -> float | None:
    """``threshold`` checked (None: the backend's default, chosen once the backend is known)."""
    if threshold is None:
        return None
    t = float(threshold)
    if not (0.0 <= t <= 1.0) or math.isnan(t):
        raise ValueError(f"threshold: expected a number in 0..1 (default: {DEFAULT_THRESHOLDS}), got {threshold!r}")
    return t


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


def _yunet_detect(rgb: np.ndarray, threshold: float, n: int | None) -> tuple[list[Hit], str, dict]:
    """The first pass at the picture's own size; a second pass at a small size when it found fewer faces than
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


def _haar_detect(rgb: np.ndarray, threshold: float) -> tuple[list[Box], list[float], str]:
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


def _insightface_detect(rgb: np.ndarray, threshold: float, path: Path) -> tuple[list[Hit], str]:
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


# ---------------------------------------------------------------------------------------------- public


def _choose(backend: str, root: str | os.PathLike | None) -> tuple[str, Path | None, str]:
    """(the backend to run, the InsightFace file when that one, why "auto" did not use InsightFace)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    note, path = "", None
    if backend in ("auto", "insightface"):
        path, reason = insightface_status(root)
        if path is not None:
            return "insightface", path, ""
        if backend == "insightface":
            raise FaceError(f'backend="insightface" cannot run: {reason}. Use backend="auto" or "yunet".')
        note = f"InsightFace not used: {reason}"
        log.info("AnyTalker faces: %s; using YuNet", note)
        backend = "yunet"
    if backend == "yunet":
        reason = yunet_status()
        if reason:
            raise FaceError(f'backend="yunet" cannot run: {reason}. backend="haar" is a last resort.')
    return backend, path, note


def find_faces(
    image: Any,
    n: int | None = None,
    backend: str = "auto",
    threshold: float | None = None,
    *,
    root: str | os.PathLike | None = None,
) -> FaceDetection:
    """Detect faces, as :func:`detect_faces`, and return them with their scores, landmarks (``.faces``: box,
    score and five points each) and the backend that ran."""
    rgb = to_uint8_rgb(image)
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        raise ValueError(f"n: expected a positive whole number of faces or None (all), got {n!r}")
    t = _check_threshold(threshold)
    chosen, detector_path, note = _choose(backend, root)
    height, width = rgb.shape[:2]
    t = DEFAULT_THRESHOLDS[chosen] if t is None else t
    extra: dict[str, Any] = {}
    start = time.perf_counter()
    if chosen == "insightface":
        assert detector_path is not None
        hits, detector = _insightface_detect(rgb, t, detector_path)
    elif chosen == "yunet":
        hits, detector, extra = _yunet_detect(rgb, t, n)
    else:
        boxes, scores, detector = _haar_detect(rgb, t)
        hits = [(b, s, None) for b, s in zip(boxes, scores)]
    seconds = time.perf_counter() - start
    total = len(hits)

    if n is not None and total < n:
        raise FaceError(
            f"found {total} face{'s' if total != 1 else ''} but {n} {'are' if n != 1 else 'is'} needed "
            f"(backend {chosen}, threshold {t}). Try a lower threshold (e.g. {max(0.0, round(t - 0.2, 2))}), "
            "another backend, or paint one mask per person instead of detecting faces.",
            found=total,
            needed=n,
        )

    area = [(b[2] - b[0]) * (b[3] - b[1]) for b, _, _ in hits]
    order = list(range(total))
    if n is not None:  # the n largest by box area (stable: equal areas keep the detector's order)
        order = sorted(order, key=lambda i: -area[i])[:n]
    order.sort(key=lambda i: hits[i][0][0])  # left to right by the left edge
    raw = [hits[i][0] for i in order]
    result = FaceDetection(
        boxes=[tuple(float(v) for v in square_box(b, width, height)) for b in raw],
        raw_boxes=raw,
        scores=[hits[i][1] for i in order],
        backend=chosen,
        width=width,
        height=height,
        seconds=seconds,
        note=note,
        detector=detector,
        total_found=total,
        threshold=t,
        landmarks=[hits[i][2] for i in order],
        extra=extra,
    )
    log.info(
        "AnyTalker faces: %s found %d face(s) in %dx%d, kept %d, %.3f s",
        chosen,
        total,
        width,
        height,
        len(raw),
        seconds,
    )
    return result


def detect_faces(
    image: Any,
    n: int | None = None,
    backend: str = "auto",
    threshold: float | None = None,
    *,
    root: str | os.PathLike | None = None,
) -> list[Box]:
    """Square face boxes ``(x0, y0, x1, y1)`` in pixels, ordered left to right.

    image: [H, W, 3] (or [1, H, W, 3]) RGB, uint8 0..255 or float 0..1, numpy or torch.
    n: keep the n largest faces by box area (None: all); fewer than n found raises :class:`FaceError`.
    backend: "auto" (InsightFace when its package and detector file are present, else YuNet), "yunet",
    "insightface" (an error when unavailable), "haar" (a last resort). threshold: 0..1, see the module docs
    (default: YuNet 0.8, InsightFace 0.15, the reference's, Haar 0.5).
    root: where InsightFace models live (inside ComfyUI pass models/insightface; also searched:
    ``$ANYTALKER_INSIGHTFACE_ROOT``, ~/.insightface). The backend that ran is logged; :func:`find_faces` returns it
    with each face's score and landmarks.
    """
    return find_faces(image, n=n, backend=backend, threshold=threshold, root=root).boxes

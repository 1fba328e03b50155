"""Face detection: one square face box per person, ordered left to right (the reference's
``utils/get_face_bbox.py`` semantics: detect, keep the ``n`` largest by box area, sort by the left edge,
make each box square with :func:`anytalker_core.routing.square_box`).

Backends
--------
- ``"haar"`` (the default that always works offline): OpenCV's frontal-face Haar cascade
  ``haarcascade_frontalface_default.xml``, which ships inside the ``opencv-python-headless`` /
  ``opencv-python`` 4.x wheels (``cv2.data.haarcascades``). OpenCV 5 wheels ship no cascades; the error then
  names the fix. Frontal faces only: profile or strongly turned faces are often missed.
- ``"insightface"`` (what the reference uses): the InsightFace SCRFD/RetinaFace detector ONNX file, when the
  ``insightface`` package is installed and a detector file is already on disk. Nothing is ever downloaded.
  Model folders searched, first hit wins: the ``root`` argument (the node pack passes ComfyUI's
  ``models/insightface``; the core never imports the host), ``$ANYTALKER_INSIGHTFACE_ROOT``, ``~/.insightface``.
  Inside a root the layout is InsightFace's own, ``<root>/models/<pack>/det_*.onnx`` (``buffalo_l/det_10g.onnx``
  preferred); a pack folder or a direct ``.onnx`` file path also works.
- ``"auto"``: InsightFace when available, otherwise Haar; the fallback and its reason are logged on the
  ``AnyTalker`` logger and recorded in :attr:`FaceDetection.note`.

``threshold`` is one knob in 0..1 for every backend (higher: fewer, surer faces; the default depends on the
backend, :data:`DEFAULT_THRESHOLDS`):
- InsightFace: the detector's score threshold ``det_thresh`` itself; default 0.15, the reference's documented
  ``--det_thresh 0.15``;
- Haar: ``minNeighbors = round(10 * threshold)`` (the number of overlapping raw hits a face needs; the default
  0.5 gives OpenCV's customary 5; 0.3 gives 3, more faces and more false hits). The per-face scores reported
  are the cascade's ``levelWeights`` from ``detectMultiScale3`` (not probabilities; about 10 for a clear face).

Large images are downscaled before detection (long side 1600 for the main pass) and boxes are scaled back.
Haar also runs a second pass at long side 800 on larger images and merges the two (overlapping hits count
once): on the example photos the cascade's hit on a hat-shadowed face depends on the scale, and the second
scale makes it hold.
"""

from __future__ import annotations

import logging
import math
import os
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

BACKENDS = ("auto", "haar", "insightface")
DEFAULT_THRESHOLDS = {"haar": 0.5, "insightface": 0.15}  # insightface: the reference's --det_thresh 0.15
HAAR_FILE = "haarcascade_frontalface_default.xml"
HAAR_SCALE_FACTOR = 1.1
HAAR_MIN_FACE = 40  # pixels of the input image
HAAR_MAX_SIDE = 1600  # long side of the main detection pass
HAAR_SECOND_SIDE = 800  # long side of the extra pass on larger images
INSIGHTFACE_ENV = "ANYTALKER_INSIGHTFACE_ROOT"
INSIGHTFACE_SIZE = (640, 640)
INSIGHTFACE_PREFERRED = ("buffalo_l/det_10g.onnx", "antelopev2/scrfd_10g_bnkps.onnx")
OPENCV_FIX = 'pip install "opencv-python-headless>=4.5,<5"'


class FaceError(ValueError):
    """Fewer faces found than needed, or a face detector that cannot run."""

    def __init__(self, message: str, found: int | None = None, needed: int | None = None):
        super().__init__(message)
        self.found = found
        self.needed = needed


@dataclass
class FaceDetection:
    """What :func:`find_faces` found. ``boxes`` are the square boxes that :func:`detect_faces` returns;
    ``raw_boxes`` and ``scores`` are the detector's own boxes and scores for the same faces (same order)."""

    boxes: list[Box]
    raw_boxes: list[Box]
    scores: list[float]
    backend: str  # "haar" or "insightface": the backend that ran
    width: int
    height: int
    seconds: float = 0.0
    note: str = ""  # why "auto" did not use InsightFace, when it did not
    detector: str = ""  # the cascade or model file used
    total_found: int = 0  # faces the detector found before keeping the n largest
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- input


def to_uint8_rgb(image: Any, name: str = "image") -> np.ndarray:
    """A picture (see ``images.as_rgb``) -> uint8 numpy [H, W, 3] for the detectors."""
    return (as_rgb(image, name) * 255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def _check_threshold(threshold: float | None) -> float | None:
    """``threshold`` checked (None: the backend's default, chosen once the backend is known)."""
    if threshold is None:
        return None
    t = float(threshold)
    if not (0.0 <= t <= 1.0) or math.isnan(t):
        raise ValueError(f"threshold: expected a number in 0..1 (default: {DEFAULT_THRESHOLDS}), got {threshold!r}")
    return t


# ---------------------------------------------------------------------------------------------- haar


def _import_cv2():
    try:
        import cv2
    except ImportError as exc:
        raise FaceError(
            f"face detection needs OpenCV 4.x (module cv2), which is not importable ({exc}). Fix: {OPENCV_FIX}"
        ) from exc
    return cv2


@lru_cache(maxsize=None)
def _haar_cascade() -> tuple[Any, str]:
    cv2 = _import_cv2()
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    version = getattr(cv2, "__version__", "?")
    path = Path(folder) / HAAR_FILE if folder else None
    if path is None or not path.is_file():
        raise FaceError(
            f"OpenCV {version} provides no {HAAR_FILE} (looked in cv2.data.haarcascades = {folder!r}); "
            "OpenCV 5 wheels ship no Haar cascades. Fix: "
            f"{OPENCV_FIX} (if opencv-python is also installed, it must be 4.x too), "
            "or install insightface with its detector models under ComfyUI/models/insightface"
        )
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FaceError(f"OpenCV could not load the Haar cascade {path}. Fix: reinstall OpenCV 4.x: {OPENCV_FIX}")
    return cascade, str(path)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _merge(hits: list[tuple[Box, float]], iou: float = 0.3) -> list[tuple[Box, float]]:
    """Greedy non-maximum suppression: of overlapping boxes keep the one with the higher score."""
    kept: list[tuple[Box, float]] = []
    for box, score in sorted(hits, key=lambda h: -h[1]):
        if all(_iou(box, k[0]) <= iou for k in kept):
            kept.append((box, score))
    return kept


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
        scale = side / long_side
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        else:
            scale, small = 1.0, gray
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


def _insightface_detect(rgb: np.ndarray, threshold: float, path: Path) -> tuple[list[Box], list[float], str]:
    model = _insightface_model(str(path))
    if hasattr(model, "det_thresh"):
        model.det_thresh = threshold
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # InsightFace reads OpenCV's BGR order
    dets, _kps = model.detect(bgr, input_size=INSIGHTFACE_SIZE, max_num=0)
    height, width = rgb.shape[:2]
    boxes, scores = [], []
    for row in np.asarray(dets).reshape(-1, 5):
        if float(row[4]) < threshold:
            continue
        x0, y0, x1, y1 = (float(v) for v in row[:4])
        boxes.append((max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)))
        scores.append(float(row[4]))
    return boxes, scores, str(path)


# ---------------------------------------------------------------------------------------------- public


def find_faces(
    image: Any,
    n: int | None = None,
    backend: str = "auto",
    threshold: float | None = None,
    *,
    root: str | os.PathLike | None = None,
) -> FaceDetection:
    """Detect faces; see :func:`detect_faces`. Returns the boxes with the backend that ran and its scores."""
    rgb = to_uint8_rgb(image)
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
        raise ValueError(f"n: expected a positive whole number of faces or None (all), got {n!r}")
    t = _check_threshold(threshold)
    height, width = rgb.shape[:2]

    note = ""
    chosen = backend
    detector_path: Path | None = None
    if backend in ("auto", "insightface"):
        detector_path, reason = insightface_status(root)
        if detector_path is None:
            if backend == "insightface":
                raise FaceError(f'backend="insightface" cannot run: {reason}. Use backend="auto" or "haar".')
            chosen = "haar"
            note = f"InsightFace not used: {reason}"
            log.info("AnyTalker faces: %s; using OpenCV's Haar cascade", note)
        else:
            chosen = "insightface"

    t = DEFAULT_THRESHOLDS[chosen] if t is None else t
    start = time.perf_counter()
    if chosen == "insightface":
        assert detector_path is not None
        boxes, scores, detector = _insightface_detect(rgb, t, detector_path)
    else:
        boxes, scores, detector = _haar_detect(rgb, t)
    seconds = time.perf_counter() - start
    total = len(boxes)

    if n is not None and total < n:
        raise FaceError(
            f"found {total} face{'s' if total != 1 else ''} but {n} {'are' if n != 1 else 'is'} needed "
            f"(backend {chosen}, threshold {t}). Try a lower threshold (e.g. {max(0.0, round(t - 0.2, 2))}), "
            "another backend, or paint one mask per person instead of detecting faces.",
            found=total,
            needed=n,
        )

    order = list(range(total))
    if n is not None:  # the n largest by box area (stable: equal areas keep the detector's order)
        order = sorted(order, key=lambda i: -(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))[:n]
    order.sort(key=lambda i: boxes[i][0])  # left to right by the left edge
    raw = [boxes[i] for i in order]
    result = FaceDetection(
        boxes=[tuple(float(v) for v in square_box(b, width, height)) for b in raw],
        raw_boxes=raw,
        scores=[scores[i] for i in order],
        backend=chosen,
        width=width,
        height=height,
        seconds=seconds,
        note=note,
        detector=detector,
        total_found=total,
    )
    log.info(
        "AnyTalker faces: %s found %d face(s) in %dx%d, kept %d, %.2f s",
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
    backend: "auto" (InsightFace when its package and detector file are present, else Haar), "haar",
    "insightface" (an error when unavailable). threshold: 0..1, see the module docs (default: Haar 0.5,
    InsightFace 0.15, the reference's).
    root: where InsightFace models live (inside ComfyUI pass models/insightface; also searched:
    ``$ANYTALKER_INSIGHTFACE_ROOT``, ~/.insightface). The backend that ran is logged; :func:`find_faces` returns it.
    """
    return find_faces(image, n=n, backend=backend, threshold=threshold, root=root).boxes

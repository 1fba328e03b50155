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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..images import as_rgb
from .face_detectors import (
    DEFAULT_THRESHOLDS,
    FaceError,
    Point,
    haar_detect,
    insightface_detect,
    insightface_status,
    yunet_detect,
    yunet_status,
)
from .masks import Box, square_box

log = logging.getLogger("AnyTalker")

BACKENDS = ("auto", "yunet", "insightface", "haar")
LANDMARKS = ("right_eye", "left_eye", "nose", "right_mouth", "left_mouth")  # the person's right = image left

__all__ = [
    "BACKENDS", "DEFAULT_THRESHOLDS", "LANDMARKS", "Face", "FaceDetection", "FaceError", "detect_faces", "find_faces",
]  # fmt: skip


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
        hits, detector = insightface_detect(rgb, t, detector_path)
    elif chosen == "yunet":
        hits, detector, extra = yunet_detect(rgb, t, n)
    else:
        boxes, scores, detector = haar_detect(rgb, t)
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

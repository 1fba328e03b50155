"""The window engine: a clip of any length in overlapping windows, whoever samples them.

The clip of F frames (24 fps) is cut into windows of W frames (4n+1, default 81, what the model was trained on)
that overlap by M motion frames (1 + 4k, default 5). Window 1 starts from the input picture, exactly as a
one-pass clip does (a clip of at most W frames *is* one window). Each later window starts from the last M frames
of the window before: their VAE latents fill the first 1 + k latent frames of ``y`` and their mask channels are
all ones, as frame 0 is marked for the picture; later frames keep the face-mask channels. The overlapping frames
are written once.

What stays anchored to the input picture in every window: the image-encoder features of the picture and the
face crops (the :class:`~.scene.Scene`, never taken from generated frames), the audio (encoded once on the clip's
timeline; each window builds its features from the stored layer outputs, exactly the whole clip's slice), and,
optionally, the colours (:mod:`.colors`). Faces can be
re-detected on each window's known frames (:func:`track_boxes`), keeping every voice on its face.

:class:`WindowRun` runs the windows with a "sample this window" function (:data:`SampleWindow`): the standalone
pipeline samples with its own models (:func:`anytalker_core.pipeline.standalone.render`), the ComfyUI Long Video
node through the host's sampler. Only one window's frames are held at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .. import timeline
from ..people.faces import FaceError, detect_faces
from ..people.masks import Box
from ..people.routing import Routing, route_from_boxes
from ..sampling import SamplingCancelled
from .colors import anchor_colors, color_stats
from .condition import prepare_image
from .scene import Scene

log = logging.getLogger(__name__)

WINDOW = 81
MOTION_FRAMES = 5


@dataclass(frozen=True)
class Window:
    """Video frames ``[start, start + length)`` of the clip; the first ``known`` are given (the picture for window
    0, the previous window's last frames after it). Window 0 writes all its frames, later ones ``length - known``."""

    index: int
    start: int
    length: int
    known: int

    @property
    def written(self) -> tuple[int, int]:
        """The frames of the clip this window adds to the file: ``[first, end)``."""
        first = self.start if self.index == 0 else self.start + self.known
        return first, self.start + self.length

    @property
    def latents(self) -> slice:
        """The clip's latent frames this window covers."""
        return timeline.latent_span(self.start, self.length)


def plan_windows(total: int, window: int = WINDOW, motion_frames: int = MOTION_FRAMES) -> list[Window]:
    """Cut ``total`` frames (4n+1) into windows of ``window`` frames overlapping by ``motion_frames``.

    Every window is 4n+1 frames; the last one is shortened to end exactly at ``total`` (no frame is dropped or
    doubled). A clip of at most ``window`` frames is one window.
    """
    total = timeline.check_frames(total, "the clip length")
    window = timeline.check_frames(window, "window", minimum=5)
    motion = timeline.check_frames(motion_frames, "motion_frames")
    if motion >= window:
        raise ValueError(f"motion_frames ({motion}) must be shorter than the window ({window})")
    plan = [Window(0, 0, min(window, total), 1)]
    covered = plan[0].length
    while covered < total:
        start = covered - motion
        plan.append(Window(len(plan), start, min(window, total - start), motion))
        covered = start + plan[-1].length
    return plan


@dataclass(frozen=True)
class WindowInputs:
    """What one window's sampler needs besides the :class:`Scene`.

    ``known``: the frames the window starts from, float32 ``[3, M, H, W]`` in [-1, 1].
    ``audio``: per person, the features of the window's frames ``[length, 5, 12, 768]``.
    ``token_masks``: per person ``[T, H/16, W/16]``; ``y_mask``: ``[4, T, H/8, W/8]`` with the known frames
    marked as given (T latent frames of the window).
    """

    window: Window
    known: torch.Tensor
    audio: tuple[torch.Tensor, ...]
    token_masks: tuple[torch.Tensor, ...]
    y_mask: torch.Tensor


def first_frame(scene: Scene) -> torch.Tensor:
    """The picture at the video size as the known frame of window 0: ``[3, 1, H, W]`` in [-1, 1]."""
    return prepare_image(scene.picture, scene.size)[:, None]


def window_inputs(
    scene: Scene, window: Window, known: torch.Tensor | None = None, routing: Routing | None = None
) -> WindowInputs:
    """The inputs of ``window``: the clip's audio for its frames (built from the stored per-frame layer outputs, equal
    to the whole clip's features sliced) and the routing's masks sliced to its latent frames.

    ``known``: ``[3, M, H, W]`` in [-1, 1] (None: the picture, for window 0). ``routing``: faces found again for
    this window (made for its length); None: the clip's routing, sliced.
    """
    known = first_frame(scene) if known is None else known
    if known.shape[1] != window.known:
        raise ValueError(f"window {window.index + 1} starts from {window.known} known frames, got {known.shape[1]}")
    latents = window.latents if routing is None else slice(0, timeline.latent_frames(window.length))
    routing = scene.routing if routing is None else routing
    y_mask = routing.y_mask[:, latents].clone()
    y_mask[:, : timeline.latent_frames(window.known)] = 1.0  # the given frames, marked as frame 0 always is
    return WindowInputs(
        window=window,
        known=known,
        audio=tuple(scene.layout.window_features(window.start, window.length)),
        token_masks=tuple(m[latents] for m in routing.token_masks),
        y_mask=y_mask,
    )


# ------------------------------------------------------------------------------------------------------- faces


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _matched(found: Sequence[Box], previous: Sequence[Box]) -> list[Box]:
    """``found`` in the order of ``previous``: each previous face takes the nearest found one (centre distance)."""
    left, matched = list(found), []
    for box in previous:
        cx, cy = _centre(box)
        best = min(left, key=lambda b: (_centre(b)[0] - cx) ** 2 + (_centre(b)[1] - cy) ** 2)
        matched.append(best)
        left.remove(best)
    return matched


def track_boxes(
    frames: np.ndarray, previous: Sequence[Box], backend: str = "auto", root: str | None = None
) -> list[Box]:
    """The faces on ``frames`` in the order of ``previous`` (each matched to the nearest previous face, in pixels
    of these frames).

    ``frames``: one frame ``[H, W, 3]`` or several ``[K, H, W, 3]`` (a window's known frames): the faces are found
    on each, and each face's box is the median (centre and size) over the frames where all faces were found,
    which keeps it steadier than one frame's detection (``benchmarks/bench_faces.py``). The previous boxes are
    kept when no frame shows as many faces.
    """
    stack = frames[None] if frames.ndim == 3 else frames
    per_frame = []
    for frame in stack:
        try:
            per_frame.append(_matched(detect_faces(frame, n=len(previous), backend=backend, root=root), previous))
        except FaceError as err:
            log.info("face tracking: %s", err)
    if not per_frame:
        log.info("face tracking: too few faces on the window's first frames; keeping the previous boxes")
        return list(previous)
    found = np.asarray(per_frame, dtype=np.float64)  # [frames, faces, 4]
    centres, sizes = (found[..., :2] + found[..., 2:]) / 2, found[..., 2:] - found[..., :2]
    centre, size = np.median(centres, axis=0), np.median(sizes, axis=0)  # [faces, 2] each
    return [tuple(float(v) for v in (*(c - s / 2), *(c + s / 2))) for c, s in zip(centre, size)]


def bound_order(boxes: Sequence[Box]) -> list[int]:
    """``order`` for ``route_from_boxes`` that keeps voice i on boxes[i] (it numbers faces left to right)."""
    ranks = sorted(range(len(boxes)), key=lambda i: boxes[i][0])
    return [ranks.index(i) + 1 for i in range(len(boxes))]


SampleWindow = Callable[[WindowInputs], torch.Tensor]
"""Samples and decodes one window: ``inputs -> uint8 frames [length, H, W, 3]`` (torch or numpy). It may raise
:class:`~anytalker_core.sampling.SamplingCancelled` to stop the run after the finished windows."""


def to_uint8(frames_m11: torch.Tensor) -> torch.Tensor:
    """Decoded video ``[1, 3, F, H, W]`` in [-1, 1] -> uint8 ``[F, H, W, 3]`` on the CPU (rounded)."""
    frames = frames_m11[0].permute(1, 2, 3, 0).add(1)  # one float copy, then in place: long clips stay lean
    return frames.mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).cpu()


class WindowRun:
    """The windows of one clip, run one after another; iterate to get each window's new frames (uint8
    ``[n, H, W, 3]`` numpy, the overlap with the previous window left out).

    ``sample_window``: see :data:`SampleWindow`. ``color_anchor``: match each later window's colours to the
    picture's. ``follow_faces``: find the faces again on each later window's known frames (:func:`track_boxes`)
    and keep every voice on its face; off when the faces are moving masks (they already say where the faces are).
    ``should_stop()`` is asked before each later window; ``on_window(window, total)`` is called before each
    window. After the run: ``done`` windows, ``frames`` written, ``cancelled``.
    """

    def __init__(
        self,
        scene: Scene,
        sample_window: SampleWindow,
        *,
        window: int = WINDOW,
        motion_frames: int = MOTION_FRAMES,
        color_anchor: bool = True,
        follow_faces: bool = False,
        face_backend: str = "auto",
        face_root: str | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_window: Callable[[Window, int], None] | None = None,
    ):
        self.scene = scene
        self.plan = plan_windows(scene.frames, window, motion_frames)
        self.sample_window = sample_window
        self.motion_frames = motion_frames
        self.color_anchor = color_anchor
        self.follow_faces = follow_faces and not scene.routing.moving  # moving masks already say where faces are
        if follow_faces and scene.routing.moving:
            log.info("face following: off, the faces are moving masks")
        self.face_backend, self.face_root = face_backend, face_root
        self.should_stop, self.on_window = should_stop, on_window
        self.done = 0
        self.frames = 0
        self.cancelled = False

    def __iter__(self) -> Iterator[np.ndarray]:
        scene = self.scene
        target = color_stats(to_uint8(first_frame(scene)[None])[0].numpy())
        sx, sy = scene.size[1] / scene.picture.shape[1], scene.size[0] / scene.picture.shape[0]
        boxes = [(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in scene.routing.boxes]  # video pixels
        known, routing = None, None
        for w in self.plan:
            if w.index > 0 and self.should_stop is not None and self.should_stop():
                self.cancelled = True
                return
            if self.follow_faces and known is not None:
                boxes = track_boxes(known, boxes, self.face_backend, self.face_root)  # the window's known frames
                routing = route_from_boxes(known[0], boxes, w.length, order=bound_order(boxes), size=scene.size)
            if self.on_window is not None:
                self.on_window(w, len(self.plan))
            known_m11 = None if known is None else torch.from_numpy(known).permute(3, 0, 1, 2).float().div(127.5).sub(1)
            try:
                frames = self.sample_window(window_inputs(scene, w, known_m11, routing))
            except SamplingCancelled:
                self.cancelled = True
                return
            frames = np.asarray(frames)
            if self.color_anchor and w.index > 0:
                frames = anchor_colors(frames, target)
            known = frames[-self.motion_frames :]
            first, end = w.written
            self.done += 1
            self.frames += end - first
            yield frames[first - w.start :]

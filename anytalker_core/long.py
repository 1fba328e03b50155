"""Long videos: the clip in overlapping windows at constant memory, streamed to the file as it is made.

The clip of F frames (24 fps) is cut into windows of W frames (4n+1, default 81, what the model was trained on)
that overlap by M motion frames (1 + 4k, default 5). Window 1 starts from the input picture, exactly as a
one-pass clip does (a clip of at most W frames *is* one window: same numbers as :func:`pipeline.generate`).
Each later window is conditioned on the last M frames of the window before: the VAE latents of those frames
fill the first 1 + k latent frames of ``y`` and their mask channels are all ones, as frame 0 is marked for the
picture; later frames keep the face-mask channels. The overlapping frames are written once.

What stays anchored to the input picture in every window: the image-encoder features of the picture and the
face crops (never taken from generated frames), the audio (features computed once on the clip's timeline,
each window takes its slice), and, optionally, the colours (:func:`anchor_colors`: each later window's
per-channel mean and spread in CIE Lab matched to the picture's, so colours neither drift nor saturate at the
seams). Faces can be re-detected on each window's first frame (:func:`track_boxes`), keeping the binding of
the first window. Frames go to the mp4 window by window; only one window is ever held in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .condition import prepare_image
from .faces import FaceError, detect_faces
from .identities import Routing, route_from_boxes
from .pipeline import FPS, Models, _frames_uint8, _free_memory, prepare, sample_window
from .routing import Box
from .solvers import SamplingCancelled
from .speakers import SpeakerLayout
from .video import write_video

log = logging.getLogger(__name__)

WINDOW = 81
MOTION_FRAMES = 5
AUDIO_CHUNK_FRAMES = 2880  # tracks longer than 2 minutes are encoded in overlapping chunks


@dataclass(frozen=True)
class Window:
    """Video frames ``[start, start + length)``; the first ``known`` are given (the picture for window 0, the
    previous window's last frames after it). Window 0 writes all its frames, later ones ``length - known``."""

    index: int
    start: int
    length: int
    known: int

    @property
    def written(self) -> tuple[int, int]:
        """The frames of the clip this window adds to the file: ``[first, end)``."""
        first = self.start if self.index == 0 else self.start + self.known
        return first, self.start + self.length


def _check_4n1(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum or (value - 1) % 4:
        raise ValueError(f"{name} must be 4n+1 frames and at least {minimum} (1, 5, 9, ..., 81), got {value!r}")
    return int(value)


def plan_windows(total: int, window: int = WINDOW, motion_frames: int = MOTION_FRAMES) -> list[Window]:
    """Cut ``total`` frames (4n+1) into windows of ``window`` frames overlapping by ``motion_frames``.

    Every window is 4n+1 frames; the last one is shortened to end exactly at ``total`` (no frame is dropped or
    doubled). A clip of at most ``window`` frames is one window.
    """
    total = _check_4n1(total, "the clip length")
    window = _check_4n1(window, "window", 5)
    motion = _check_4n1(motion_frames, "motion_frames")
    if motion >= window:
        raise ValueError(f"motion_frames ({motion}) must be shorter than the window ({window})")
    plan = [Window(0, 0, min(window, total), 1)]
    covered = plan[0].length
    while covered < total:
        start = covered - motion
        plan.append(Window(len(plan), start, min(window, total - start), motion))
        covered = start + plan[-1].length
    return plan


# ------------------------------------------------------------------------------------------------------ colour


def _lab(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[n, H, W, 3]`` -> float32 CIE Lab (L 0..100, a and b about -128..127), same shape."""
    import cv2

    n, h, w, _ = frames.shape
    rgb = frames.reshape(n * h, w, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).reshape(n, h, w, 3)


def color_stats(frames: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation in CIE Lab of uint8 RGB frames ``[n, H, W, 3]`` (or one picture)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    lab = _lab(frames).reshape(-1, 3).astype(np.float64)
    return lab.mean(0), lab.std(0)


def anchor_colors(
    frames: np.ndarray | torch.Tensor, target: tuple[np.ndarray, np.ndarray], strength: float = 1.0
) -> np.ndarray:
    """Match the frames' Lab mean and spread to ``target`` (:func:`color_stats` of the picture), per channel,
    over the whole window (one transform for all its frames, so motion and lighting within it are kept).
    ``strength`` in 0..1 blends the transform (1 = full match). uint8 RGB in, uint8 RGB out."""
    import cv2

    frames = np.asarray(frames)
    if strength == 0:
        return frames
    lab = _lab(frames)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
    scale = np.where(std > 1e-3, target[1] / np.maximum(std, 1e-3), 1.0)
    matched = (lab - mean) * scale + target[0]
    lab = (lab + strength * (matched - lab)).astype(np.float32)
    n, h, w, _ = frames.shape
    rgb = cv2.cvtColor(lab.reshape(n * h, w, 3), cv2.COLOR_Lab2RGB).reshape(n, h, w, 3)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------- faces


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def track_boxes(
    frame: np.ndarray, previous: Sequence[Box], backend: str = "auto", root: str | None = None
) -> list[Box]:
    """The faces on ``frame`` in the order of ``previous`` (each matched to the nearest previous face, in pixels
    of this frame); the previous boxes when the detector does not find as many faces."""
    try:
        found = detect_faces(frame, n=len(previous), backend=backend, root=root)
    except FaceError as err:
        log.info("face tracking: %s; keeping the previous boxes", err)
        return list(previous)
    left, matched = list(found), []
    for box in previous:
        cx, cy = _centre(box)
        best = min(left, key=lambda b: (_centre(b)[0] - cx) ** 2 + (_centre(b)[1] - cy) ** 2)
        matched.append(best)
        left.remove(best)
    return matched


def bound_order(boxes: Sequence[Box]) -> list[int]:
    """``order`` for ``route_from_boxes`` that keeps voice i on boxes[i] (it numbers faces left to right)."""
    ranks = sorted(range(len(boxes)), key=lambda i: boxes[i][0])
    return [ranks.index(i) + 1 for i in range(len(boxes))]


# ------------------------------------------------------------------------------------------------------ render


@dataclass
class LongVideo:
    """What :func:`render` made. ``frames``: how many are in the file; ``cancelled``: stopped early (the file
    then holds the finished windows, with the audio cut to match)."""

    path: Path | None
    frames: int
    windows: list[Window]
    windows_done: int
    layout: SpeakerLayout
    routing: Routing
    seed: int
    size: tuple[int, int]
    cancelled: bool = False


def _window_inputs(job, routing: Routing, w: Window, offset: int):
    """Audio slices, token masks and y mask channels of one window (the latent frames of the clip it covers)."""
    latent_frames = (w.length - 1) // 4 + 1
    audio = [f[w.start : w.start + w.length] for f in job.layout.features]
    masks = [m[offset : offset + latent_frames] for m in routing.token_masks]
    y_mask = routing.y_mask[:, offset : offset + latent_frames].clone()
    y_mask[:, : (w.known - 1) // 4 + 1] = 1.0  # the given frames, marked as frame 0 always is
    return audio, masks, y_mask


@torch.no_grad()
def render(
    models: Models,
    image: Any,
    audio: Sequence[Any],
    prompt: str,
    out: str | Path,
    *,
    window: int = WINDOW,
    motion_frames: int = MOTION_FRAMES,
    color_anchor: bool = True,
    track_faces: bool | None = None,
    overwrite: bool = False,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    on_window: Callable[[Window, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    status: Callable[[str], None] | None = None,
    **options: Any,
) -> LongVideo:
    """Make the video window by window and stream it to ``out`` (mp4, H.264 + AAC, written atomically).

    ``window`` / ``motion_frames``: see the module docstring. ``color_anchor``: match each later window's colours
    to the picture's. ``track_faces``: re-detect the faces on each window's first frame (default: when the faces
    were detected, not given). ``on_window(window, total)`` before each window; ``callback(step, total, x0)``
    after each sampling step; ``should_stop()`` between steps and windows: the finished windows stay in the file
    (``LongVideo.cancelled``); when nothing was finished, :class:`SamplingCancelled` is raised and nothing is
    written. Other keywords as :func:`anytalker_core.pipeline.generate`.
    """
    say = status or (lambda message: log.info(message))
    options.setdefault("audio_chunk_frames", AUDIO_CHUNK_FRAMES)
    plan_windows(5, window, motion_frames)  # check the arguments before any work
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"{str(out)!r} already exists; pass overwrite=True to replace it, or choose another name")
    job = prepare(models, image, audio, prompt, status=say, **options)
    plan = plan_windows(job.frames, window, motion_frames)
    if track_faces is None:
        track_faces = options.get("faces") is None and not job.routing.moving
    say(f"{len(plan)} window(s) of up to {window} frames, {motion_frames} motion frames; seed {job.seed}")

    height, width = job.size
    target = color_stats(_frames_uint8(prepare_image(job.picture, job.size)[None, :, None])[0].numpy())
    scale_x, scale_y = width / job.picture.shape[1], height / job.picture.shape[0]
    boxes = [(b[0] * scale_x, b[1] * scale_y, b[2] * scale_x, b[3] * scale_y) for b in job.routing.boxes]
    state = {"done": 0, "frames": 0, "cancelled": False}

    def windows() -> Iterator[np.ndarray]:
        nonlocal boxes
        known = prepare_image(job.picture, job.size)[:, None]  # [3, 1, H, W] in [-1, 1]
        for w in plan:
            if should_stop is not None and w.index > 0 and should_stop():
                state["cancelled"] = True
                return
            routing, offset = job.routing, w.start // 4
            if track_faces and w.index > 0:
                frame = _frames_uint8(known[None, :, :1])[0].numpy()  # the window's first frame
                boxes = track_boxes(frame, boxes, options.get("face_backend", "auto"), options.get("face_root"))
                routing = route_from_boxes(frame, boxes, w.length, order=bound_order(boxes), size=job.size)
                offset = 0
            if on_window is not None:
                on_window(w, len(plan))
            audio_w, masks, y_mask = _window_inputs(job, routing, w, offset)
            try:
                _, video = sample_window(job, known, audio_w, masks, y_mask, callback, should_stop)
            except SamplingCancelled:
                state["cancelled"] = True
                return
            frames = _frames_uint8(video).numpy()
            del video
            _free_memory()  # each window starts from the same memory, however many came before
            if color_anchor and w.index > 0:
                frames = anchor_colors(frames, target)
            known = torch.from_numpy(frames[-motion_frames:]).permute(3, 0, 1, 2).float().div(127.5).sub(1)
            first, end = w.written
            state["done"] += 1
            state["frames"] += end - first
            yield frames[first - w.start :]

    path = Path(out)
    try:
        write_video(path, windows(), FPS, job.layout.mix, job.layout.mix_rate, overwrite=overwrite)
    except ValueError as err:
        if state["cancelled"] and state["frames"] == 0:
            raise SamplingCancelled(0, job.steps * len(plan)) from err  # nothing finished, nothing written
        raise
    if state["cancelled"]:
        say(f"cancelled: kept {state['done']} of {len(plan)} window(s), {state['frames']} frames")
    return LongVideo(
        path=path, frames=state["frames"], windows=plan, windows_done=state["done"], layout=job.layout,
        routing=job.routing, seed=job.seed, size=job.size, cancelled=state["cancelled"],
    )  # fmt: skip

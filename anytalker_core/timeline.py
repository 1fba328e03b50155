"""The clip's timeline: video frames at 24 fps, the VAE's latent frames, and the 4n+1 rule between them.

The Wan2.1 VAE keeps video frame 0 as latent frame 0 and packs every later 4 video frames into one latent
frame, so a clip of F video frames has T = (F - 1) / 4 + 1 latent frames and F must be 4n+1 (1, 5, 9, ..., 81).
Latent frame j >= 1 covers video frames 4(j-1)+1 .. 4j. A stretch of the clip that starts on a video frame that
is a multiple of 4 starts on latent frame start / 4 (windows of a long video do).

Every frame count, latent-frame count and seconds <-> frames conversion in the package comes from here.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

FPS = 24  # video frames per second (the reference's a2v fps)
STRIDE = 4  # video frames per latent frame after the first (the VAE's temporal stride)


def is_4n1(frames: Any) -> bool:
    """Whether ``frames`` is a whole number of the form 4n+1 (1, 5, 9, ...)."""
    return (
        isinstance(frames, numbers.Integral)
        and not isinstance(frames, bool)
        and frames >= 1
        and (frames - 1) % STRIDE == 0
    )


def round_down(frames: int) -> int:
    """The largest 4n+1 count <= ``frames`` (at least 1)."""
    return max(1, (int(frames) - 1) // STRIDE * STRIDE + 1)


def round_up(frames: int) -> int:
    """The smallest 4n+1 count >= ``frames``."""
    frames = max(1, int(frames))
    return frames + (1 - frames) % STRIDE


def check_frames(value: Any, name: str, *, minimum: int = 1, error: type[Exception] = ValueError) -> int:
    """``value`` as an int when it is a 4n+1 frame count of at least ``minimum``; else ``error`` naming ``name``,
    the value, and the nearest valid counts."""
    if not is_4n1(value) or value < minimum:
        hint = ""
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            below, above = round_down(math.floor(value)), round_up(math.ceil(value))
            below, above = max(below, round_up(minimum)), max(above, round_up(minimum))
            hint = f": use {below}" if below == above else f": use {below} or {above}"
        at_least = f", at least {minimum}" if minimum > 1 else ""
        raise error(f"{name} is {value!r}; the model needs 4n+1 video frames (1, 5, 9, ..., 81{at_least}){hint}")
    return int(value)


def latent_frames(video_frames: int) -> int:
    """T = (F - 1) / 4 + 1 latent frames for F video frames (F must be 4n+1)."""
    return (check_frames(video_frames, "video_frames") - 1) // STRIDE + 1


def video_frames(latent_frames: int) -> int:
    """F = 4(T - 1) + 1 video frames for T latent frames."""
    return STRIDE * (int(latent_frames) - 1) + 1


def video_span(latent_frame: int) -> slice:
    """The video frames latent frame ``j`` stands for: frame 0 for j = 0, else 4(j-1)+1 .. 4j."""
    if latent_frame == 0:
        return slice(0, 1)
    return slice(STRIDE * (latent_frame - 1) + 1, STRIDE * latent_frame + 1)


def latent_start(video_frame: int) -> int:
    """The latent frame a stretch starting on ``video_frame`` (a multiple of 4, or 0) starts on."""
    if video_frame % STRIDE:
        raise ValueError(f"a stretch of the clip must start on a multiple of {STRIDE} video frames, got {video_frame}")
    return video_frame // STRIDE


def latent_span(start: int, length: int) -> slice:
    """The latent frames of the video frames ``[start, start + length)`` (``start`` a multiple of 4, ``length``
    4n+1): ``slice(start / 4, start / 4 + T)``."""
    first = latent_start(start)
    return slice(first, first + latent_frames(length))


def seconds(frames: int, fps: int = FPS) -> float:
    """How long ``frames`` video frames last."""
    return frames / fps


def frame_at(seconds: float, fps: int = FPS) -> int:
    """The video frame nearest to a time in seconds (halves round up)."""
    return math.floor(seconds * fps + 0.5)

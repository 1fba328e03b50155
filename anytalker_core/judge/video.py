"""The video to judge, frame by frame: an mp4 (or any file PyAV reads) or frames in memory.

Frames come one at a time as uint8 RGB [H, W, 3], so a long video never sits in memory whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch


class JudgeError(ValueError):
    """Input the judge cannot score; the message names the input and what to do."""


@dataclass
class Frames:
    """``count`` frames at ``fps``, each ``width`` x ``height``; :meth:`__iter__` yields uint8 [H, W, 3]."""

    source: Any
    count: int
    fps: float
    width: int
    height: int
    name: str

    def __iter__(self) -> Iterator[np.ndarray]:
        if isinstance(self.source, Path):
            yield from _decode(self.source)
        else:
            for frame in self.source:
                yield _uint8(frame)


def open_video(video: Any, fps: float | None = None) -> Frames:
    """``video``: a file path (fps from the file unless given), or frames [T, H, W, 3] (uint8 0..255 or float
    0..1, numpy or torch; then ``fps`` is required)."""
    if fps is not None and (isinstance(fps, bool) or not math.isfinite(float(fps)) or float(fps) <= 0):
        raise JudgeError(f"fps: expected a positive number of frames per second, got {fps!r}")
    if isinstance(video, (str, Path)):
        return _open_file(Path(video).expanduser(), fps)
    if isinstance(video, (np.ndarray, torch.Tensor)):
        if video.ndim != 4 or video.shape[-1] not in (3, 4) or video.shape[0] < 1:
            raise JudgeError(f"video: expected frames [T, H, W, 3], got shape {tuple(video.shape)}")
        if fps is None:
            raise JudgeError("fps: frames in memory carry no frame rate; pass fps (e.g. 24, AnyTalker's)")
        count, height, width = (int(v) for v in video.shape[:3])
        return Frames(video, count, float(fps), width, height, f"{count} frames")
    raise JudgeError(f"video: expected an mp4 path or frames [T, H, W, 3], got {type(video).__name__}")


def _open_file(path: Path, fps: float | None) -> Frames:
    import av

    if not path.is_file():
        raise JudgeError(f"video: file not found: {path}")
    try:
        with av.open(str(path)) as container:
            stream = next((s for s in container.streams if s.type == "video"), None)
            if stream is None:
                raise JudgeError(f"video: {path.name} has no video stream")
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            width, height = stream.codec_context.width, stream.codec_context.height
            count = stream.frames or sum(1 for _ in container.decode(stream))
    except av.error.FFmpegError as err:
        raise JudgeError(f"video: cannot read {path.name} ({err}); use an mp4, mov, mkv or webm file") from None
    if fps is None and rate <= 0:
        raise JudgeError(f"video: {path.name} states no frame rate; pass fps")
    if count == 0:
        raise JudgeError(f"video: {path.name} holds no frames")
    return Frames(path, count, float(fps or rate), width, height, path.name)


def _decode(path: Path) -> Iterator[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _uint8(frame: Any) -> np.ndarray:
    array = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    array = array[..., :3]
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)

"""A track's per-frame wav2vec2 layer outputs, written once and read window by window at constant memory."""

from __future__ import annotations

import tempfile

import numpy as np
import torch

WINDOW = 5  # video frames stacked per frame: f-2 .. f+2, clamped at the ends
MEMORY_FRAMES = 2880  # a track's hidden states stay in memory up to this many frames (2 minutes), beyond in a file


def audio_windows(hidden: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """[n, layers, channels] -> [n, window, layers, channels]: frame f stacks f-2 .. f+2, clamped at the ends."""
    n = hidden.shape[0]
    half = window // 2
    index = (torch.arange(n)[:, None] + torch.arange(-half, half + 1)[None]).clamp(0, n - 1)
    return hidden[index]


class HiddenStates:
    """One encoded track's per-frame layer outputs, written once (layer by layer) and read by frame ranges.

    ``frames``: n, the encoded track's length in video frames (a window at its ends clamps to it). ``stored``: how
    many of its first frames are kept (the windows of the frames a clip uses need 2 more, not the rest).
    Up to ``MEMORY_FRAMES`` stored frames (or ``in_memory=True``) live in memory as float32
    ``[stored, layers, channels]``; more go to an unnamed temporary file (``tempfile.TemporaryFile``: in ``$TMPDIR``,
    removed when closed or garbage-collected; float32, one ``[stored, channels]`` block per layer), so the memory
    does not grow with the track (disk: ``stored * layers * channels * 4`` bytes, 36 KiB a frame for
    wav2vec2-base). Reads go through the file, never a memory map, so read pages do not stay resident.
    """

    def __init__(self, frames: int, stored: int, layers: int, channels: int, *, in_memory: bool | None = None):
        if not 0 < stored <= frames:
            raise ValueError(f"stored must be 1..{frames} frames, got {stored}")
        self.frames, self.stored, self.layers, self.channels = frames, stored, layers, channels
        in_memory = stored <= MEMORY_FRAMES if in_memory is None else in_memory
        self._data = torch.empty(stored, layers, channels) if in_memory else None
        self._file = None if in_memory else tempfile.TemporaryFile(prefix="anytalker-audio-", buffering=0)

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def _offset(self, layer: int, frame: int) -> int:
        return (layer * self.stored + frame) * self.channels * 4

    def write(self, layer: int, first: int, values: torch.Tensor) -> None:
        """Frames ``[first, first + k)`` of one layer: ``values`` [k, channels] (any dtype or device)."""
        if not 0 <= first <= first + values.shape[0] <= self.stored:
            raise ValueError(f"frames {first}..{first + values.shape[0]} do not fit the {self.stored} stored")
        if self._data is not None:
            self._data[first : first + values.shape[0], layer].copy_(values)
            return
        array = values.detach().to("cpu", torch.float32).contiguous().numpy()
        self._file.seek(self._offset(layer, first))
        view = memoryview(array).cast("B")
        while view:
            view = view[self._file.write(view) :]

    def rows(self, start: int, end: int) -> torch.Tensor:
        """Frames ``[start, end)``: float32 ``[end - start, layers, channels]`` (a view when in memory)."""
        if not 0 <= start <= end <= self.stored:
            raise ValueError(f"frames {start}..{end} are outside the {self.stored} stored")
        if self._data is not None:
            return self._data[start:end]
        out = np.empty((self.layers, end - start, self.channels), np.float32)
        for layer in range(self.layers):
            self._file.seek(self._offset(layer, start))
            view = memoryview(out[layer]).cast("B")
            while view:
                got = self._file.readinto(view)
                if not got:
                    raise OSError("the audio feature cache file ended early")
                view = view[got:]
        return torch.from_numpy(out).transpose(0, 1)

    def windows(self, first: int, count: int, window: int = WINDOW) -> torch.Tensor:
        """Frames ``[first, first + count)`` as :func:`audio_windows` gives them over the whole track:
        ``[count, window, layers, channels]``, frame f stacking f-2 .. f+2 clamped to the track's ends."""
        half = window // 2
        lo, hi = max(0, first - half), min(self.frames, first + count + half)
        index = (torch.arange(first, first + count)[:, None] + torch.arange(-half, half + 1)[None]).clamp(
            0, self.frames - 1
        )
        return self.rows(lo, hi)[index - lo]

    def close(self) -> None:
        """Remove the temporary file now (it also goes when the store is garbage-collected)."""
        if self._file is not None:
            self._file.close()

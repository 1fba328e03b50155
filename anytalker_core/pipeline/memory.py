"""Where the models live while a clip is made, and giving memory back between windows.

- :func:`on_device`: run a step with one model on the device, moving it back to the CPU afterwards (offload);
- :func:`free_memory`: Python's garbage, CUDA's cache and glibc's heap, between windows of a long video;
- :func:`lean_heap`: for a process of our own (the CLI, benchmarks) only: large buffers served by ``mmap``.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Any, Iterator

import torch


def _movable(obj: Any) -> Any:
    """The object whose ``.to(device)`` moves a model: our wrappers, ``AudioEncoder.model``, or a module."""
    if hasattr(obj, "to") and callable(obj.to):
        return obj
    inner = getattr(obj, "model", None)
    return inner if hasattr(inner, "to") else None


@contextmanager
def on_device(obj: Any, device: torch.device | None, offload: bool) -> Iterator[None]:
    """Run with ``obj`` on ``device``; with ``offload`` move it back to the CPU afterwards (and free the cache)."""
    movable = _movable(obj) if device is not None else None
    if movable is not None:
        movable.to(device)
    try:
        yield
    finally:
        if movable is not None and offload and torch.device(device).type != "cpu":
            movable.to("cpu")
            free_memory()


def free_memory() -> None:
    """Give freed memory back: Python's garbage, CUDA's cache, and glibc's heap (which otherwise keeps the peak of
    every window's large temporary buffers as fragmented free space)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _trim_heap()


def lean_heap(threshold: int = 1 << 20) -> None:
    """For a process of our own (the CLI, benchmarks): serve allocations of ``threshold`` bytes and more with
    ``mmap`` so they go back to the system when freed. glibc otherwise raises this threshold as big buffers are
    freed and then keeps later ones in its heap, where they fragment: a long video's resident memory would creep
    up window after window. Linux/glibc only; a no-op elsewhere. Not for a host process (ComfyUI) to call."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(-3, int(threshold))  # -3 = M_MMAP_THRESHOLD
        except (OSError, AttributeError):
            pass


def _trim_heap() -> None:
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
            pass

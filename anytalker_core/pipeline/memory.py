"""Where the models live while a clip is made, and giving memory back between windows.

- :func:`on_device`: run a step with one model on the device, moving it back to the CPU afterwards (offload);
- :func:`free_memory`: Python's garbage, CUDA's cache and glibc's heap, between windows of a long video;
- :func:`lean_heap`: for a process of our own (the CLI, benchmarks) only: large buffers served by ``mmap``;
- :func:`context_cache_budget`: how much a sampling run's context cache may hold on a device.
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


CACHE_SHARE = 0.1  # of the device's free memory a run's context cache may hold


def context_cache_budget(device: torch.device | str | None) -> int:
    """Bytes for a run's context cache (``AnyTalkerDiT.context_cache``): :data:`CACHE_SHARE` of the free memory
    of ``device`` (CUDA: the driver's free memory; CPU: Linux's MemAvailable; 0 where it cannot be read)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            with open("/proc/meminfo") as handle:
                free = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:"))
        except (OSError, StopIteration):
            free = 0
    return int(free * CACHE_SHARE)

"""A per-run cache of what the blocks read besides the video: the context's keys and values.

The text, picture, face and audio tokens, and every block's keys and values of them, depend on the
conditioning only, never on the noisy latent or the step. Within one sampling run (one clip, one window)
the model sees the same few conditionings at every step (the prompt, the negative, maybe the audio-free
pass), so they are computed at the first step and reused at every later one.

- An entry belongs to one conditioning: the exact tensors (text, picture, audio, faces, masks) of one
  forward, compared element for element (``torch.equal``), so cond and uncond, or a batch of both, each get
  their own entry and an entry is never reused for different inputs.
- Every stored tensor counts against ``max_bytes`` (the conditioning copies the entry is keyed by, the
  projected tokens, each block's keys and values). What would not fit is not stored and is recomputed at
  every step, as without a cache: the budget bounds memory, never correctness.
- The cache lives for one run (``AnyTalkerDiT.context_cache``); weights changed within a run (a LoRA whose
  strength varies per step) would make it stale, so whoever opens it must not do so then.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["CacheEntry", "ContextCache", "tensor_bytes"]


def tensor_bytes(value: Any) -> int:
    """Bytes of every tensor in a nested structure of tuples, lists, dicts and dataclass-like objects."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if hasattr(value, "__dataclass_fields__"):
        return sum(tensor_bytes(getattr(value, name)) for name in value.__dataclass_fields__)
    return 0


def _same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and x.device == y.device and torch.equal(x, y) for x, y in zip(a, b)
    )


class CacheEntry:
    """One conditioning's projected context and, per block module, its keys and values."""

    def __init__(self, cache: ContextCache | None, key: tuple[torch.Tensor, ...]):
        self.cache = cache  # None: a transient entry (the budget had no room even for the key)
        self.key = key
        self.context: dict[str, Any] | None = None
        self.kv: dict[torch.nn.Module, Any] = {}

    def keep_context(self, parts: dict[str, Any]) -> None:
        """Keep the projected text, picture and identity tokens of this conditioning (when they fit)."""
        if self.cache is not None and self.cache.reserve(tensor_bytes(parts)):
            self.context = parts

    def keys_values(self, module: torch.nn.Module, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per (conditioning, module); later calls return the stored result if it fit."""
        found = self.kv.get(module)
        if found is None:
            found = compute()
            if self.cache is not None and self.cache.reserve(tensor_bytes(found)):
                self.kv[module] = found
        return found


class ContextCache:
    """Entries for one run, at most ``max_bytes`` of tensors in all (see the module docstring).

    Counters for reports: ``bytes`` stored, ``hits`` / ``misses`` (forwards that found / created their
    conditioning's entry), ``refused`` (results not stored because the budget was full).
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.entries: list[CacheEntry] = []
        self.bytes = 0
        self.hits = self.misses = self.refused = 0

    def reserve(self, n_bytes: int) -> bool:
        """Count ``n_bytes`` against the budget; False (and nothing counted) when they do not fit."""
        if self.bytes + n_bytes > self.max_bytes:
            self.refused += 1
            return False
        self.bytes += n_bytes
        return True

    def entry(self, key: tuple[torch.Tensor, ...]) -> CacheEntry:
        """The entry of the conditioning ``key`` (its tensors, in a fixed order), created on first sight."""
        for entry in self.entries:
            if _same(entry.key, key):
                self.hits += 1
                return entry
        self.misses += 1
        copy = tuple(t.detach().clone() for t in key)  # the caller may reuse its buffers
        if not self.reserve(tensor_bytes(copy)):
            return CacheEntry(None, key)
        entry = CacheEntry(self, copy)
        self.entries.append(entry)
        return entry

    def summary(self) -> str:
        return (
            f"{len(self.entries)} conditionings, {self.bytes / 2**20:.1f} of {self.max_bytes / 2**20:.0f} MiB, "
            f"{self.hits} forwards reused it, {self.refused} results did not fit"
        )

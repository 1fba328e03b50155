"""What every block of one forward reads besides the video tokens, computed once per forward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .context_cache import CacheEntry
from .hooks import NO_HOOKS, ForwardHooks
from .identity_attention import Identities


@dataclass
class Context:
    """What every block reads besides the video tokens (computed once per forward, or once per run)."""

    text: torch.Tensor  # [B, Lt, D] text tokens
    text_bias: torch.Tensor | None  # [1, Lt] additive attention bias counting the merged padding rows
    clip: torch.Tensor  # [B, 257, D] picture tokens
    identities: Identities | None
    grid: tuple[int, int, int]  # (T, h, w) token grid
    rope: torch.Tensor  # complex rotations [L, 1, head_dim/2]
    attention: Callable[..., torch.Tensor]
    dtype: torch.dtype  # compute dtype of linear layers and attention
    hooks: ForwardHooks = NO_HOOKS  # where a host steps in (block runs, patch points)
    cache: CacheEntry | None = None  # this conditioning's entry of the run's context cache, if one is open
    # the video tokens' first latent frame in the whole clip (not 0 on a rank of a frame split, ``parallel``)
    first_frame: int = 0
    self_attention: Callable[..., torch.Tensor] | None = None  # the self-attention's own function; None: attention

    def keys_values(self, module: torch.nn.Module, compute: Callable[[], Any]) -> Any:
        """``module``'s keys and values of the context: ``compute()``, reused for the whole run when cached."""
        if self.cache is None:
            return compute()
        return self.cache.keys_values(module, compute)

"""What every block of one forward reads besides the video tokens, computed once per forward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .identity_attention import Identities


@dataclass
class Context:
    """What every block reads besides the video tokens (computed once per forward)."""

    text: torch.Tensor  # [B, Lt, D] text tokens
    text_bias: torch.Tensor | None  # [1, Lt] additive attention bias counting the merged padding rows
    clip: torch.Tensor  # [B, 257, D] picture tokens
    identities: Identities | None
    grid: tuple[int, int, int]  # (T, h, w) token grid
    rope: torch.Tensor  # complex rotations [L, 1, head_dim/2]
    attention: Callable[..., torch.Tensor]
    dtype: torch.dtype  # compute dtype of linear layers and attention

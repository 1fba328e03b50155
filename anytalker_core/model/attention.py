"""The one attention function every attention in the model goes through.

A host (ComfyUI) can hand the model its own function with the same signature, e.g. one that
dispatches to SageAttention or flash-attention: set ``model.attention = fn``.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F


class AttentionFn(Protocol):
    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None
    ) -> torch.Tensor: ...


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Multi-head softmax attention through ``torch.nn.functional.scaled_dot_product_attention``.

    q: [B, Lq, heads*d]; k, v: [B, Lk, heads*d]; mask: None, or an additive float bias / boolean
    (True = attend) broadcastable to [B, heads, Lq, Lk]. Returns [B, Lq, heads*d].
    """
    b, lq, inner = q.shape
    d = inner // heads
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, lq, inner)


DEFAULT_ATTENTION: Callable[..., torch.Tensor] = sdpa_attention

"""Where a host steps into one forward: the attention it uses, how each block runs, named patch points.

The model itself does nothing at these places (:class:`ForwardHooks`' methods are identities); a host passes
its own subclass to ``AnyTalkerDiT.forward(..., hooks=...)`` (ComfyUI's block replacements, attention
overrides and attention-output patches, in ``nodes/model.py``). Nothing here knows a host.

Patch points (:data:`PATCH_POINTS`), each ``[B, L, D]`` in and out, in the order one block reaches them:

- ``self_attention``: the self-attention's output before its projection ``o`` (extras ``q``, ``k``:
  ``[B, L, heads, head_dim]`` after the rotary embedding);
- ``self_attention_output``: the self-attention branch after ``o``, before its gate and the residual add;
- ``cross_attention_output``: the cross-attention branch (text, picture, people) before the residual add;
- ``after_cross_attention``: the residual stream after the cross-attention (and ``legacy``'s audio attention).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

PATCH_POINTS = ("self_attention", "self_attention_output", "cross_attention_output", "after_cross_attention")


class ForwardHooks:
    """One forward's hooks; this base class changes nothing (the model's own behaviour, bit for bit)."""

    def attention(self, attention: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """The attention function every attention of this forward calls (given: the model's)."""
        return attention

    def block(self, index: int, block: torch.nn.Module, x: torch.Tensor, e0: torch.Tensor, ctx: Any) -> torch.Tensor:
        """Run block ``index`` on the stream x [B, L, D] (float32, updated in place) with modulation e0 [B, 6, D]
        and the forward's ``Context``."""
        return block(x, e0, ctx)

    def patch(self, point: str, x: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        """The tensor at patch point ``point`` (one of :data:`PATCH_POINTS`), possibly replaced."""
        return x


NO_HOOKS = ForwardHooks()

"""Small building blocks shared by the backbone and the identity modules.

Every learnable layer is built through an ``operations`` namespace (``Linear``, ``LayerNorm``,
``Conv3d``), ``torch.nn`` by default, so a host can pass its own manual-cast / fp8 / low-VRAM layers,
as ComfyUI does for its own Wan model.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F


class Operations(Protocol):
    """The layer classes the model is built from: ``torch.nn`` itself, or a host's namespace (``comfy.ops``)."""

    Linear: type[nn.Linear]
    LayerNorm: type[nn.LayerNorm]
    Conv3d: type[nn.Conv3d]


class RMSNorm(nn.Module):
    """RMS normalisation over the last dim with a learned scale, computed in float32 (as Wan does)."""

    def __init__(self, dim: int, eps: float, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., dim] -> [..., dim] in x's dtype."""
        xf = x.float()
        normed = (xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)).type_as(x)
        return normed.mul_(self.weight.to(x.dtype))


class MLPProj(nn.Module):
    """Image-encoder features -> model width: LN, Linear, GELU, Linear, LN (keys ``proj.0/1/3/4``).

    Used twice: ``img_emb`` for the whole picture and ``audio_ref_emb`` for each person's face.
    """

    def __init__(self, in_dim: int, out_dim: int, ops: Operations, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.proj = nn.Sequential(
            ops.LayerNorm(in_dim, **kw),
            ops.Linear(in_dim, in_dim, **kw),
            nn.GELU(),
            ops.Linear(in_dim, out_dim, **kw),
            ops.LayerNorm(out_dim, **kw),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: [..., 257, in_dim] -> [..., 257, out_dim]."""
        return self.proj(features)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """LN(x) * (1 + scale) + shift in float32, LN without affine (Wan's norm1/norm2/head norm).

    x: [B, L, D]; shift, scale: [B, 1, D]. Returns a new [B, L, D] float32 tensor.
    """
    return F.layer_norm(x.float(), (x.shape[-1],), eps=eps).mul_(1 + scale).add_(shift)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Timesteps [B] -> [B, dim] float32: cos of t * 10000^(-k/half) in the first half, sin in the second."""
    half = dim // 2
    t = t.float()
    freqs = torch.pow(10000, -torch.arange(half, device=t.device, dtype=torch.float32).div(half))
    angles = torch.outer(t, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def _rope_angles(positions: int, channels: int, device) -> torch.Tensor:
    """[positions, channels/2] float32 angles pos * 10000^(-2j/channels)."""
    inv = 1.0 / torch.pow(10000, torch.arange(0, channels, 2, device=device, dtype=torch.float32).div(channels))
    return torch.outer(torch.arange(positions, device=device), inv)


def rope_freqs(grid: tuple[int, int, int], head_dim: int, device) -> torch.Tensor:
    """Rotary rotations for a (T, h, w) token grid, tokens in (t, h, w) row-major order.

    The head dim is split into temporal d - 4*(d//6), height 2*(d//6) and width 2*(d//6) channels.
    Returns complex64 [T*h*w, 1, head_dim/2].
    """
    t, h, w = grid
    sixth = head_dim // 6
    parts = [head_dim - 4 * sixth, 2 * sixth, 2 * sixth]
    ang_t, ang_h, ang_w = (_rope_angles(n, c, device) for n, c in zip((t, h, w), parts))
    angles = torch.cat(
        [
            ang_t[:, None, None].expand(t, h, w, -1),
            ang_h[None, :, None].expand(t, h, w, -1),
            ang_w[None, None, :].expand(t, h, w, -1),
        ],
        dim=-1,
    ).reshape(t * h * w, 1, -1)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x [B, L, heads, d] by freqs [L, 1, d/2] (complex, float32 math)."""
    rotated = torch.view_as_complex(x.float().unflatten(-1, (-1, 2))) * freqs
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)

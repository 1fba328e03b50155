"""Cross-attention: every video token attends the text, the picture and, per variant, each person.

Both variants start from Wan2.1's i2v cross-attention (:class:`CrossAttention`, keys ``cross_attn.*``)
and differ in what else it sees (``docs/model.md``, "The two variants"):

- :class:`AFCrossAttention` (``af``, 1.3B): also each identity's face and voice, masked to the face,
  summed before the output projection;
- :class:`LegacyCrossAttention` (``legacy``, 14B): its text keys are the picture tokens followed by the
  text; the people are attended afterwards by a separate module (``LegacyBlock``'s ``audio_cross_attn``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import AnyTalkerConfig
from .context import Context
from .identity_attention import add_masked, af_identity_attention
from .layers import Operations, RMSNorm


class CrossAttention(nn.Module):
    """Wan2.1 i2v cross-attention: out = o(text_attn + image_attn), q RMS-normed once and shared.

    text_attn: keys RMSNorm(k(text)), values v(text); image_attn: keys RMSNorm(k_img(clip)), values v_img(clip).
    """

    def __init__(self, cfg: AnyTalkerConfig, ops: Operations, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.heads = cfg.num_heads
        dim, eps = cfg.dim, cfg.eps
        self.q, self.k, self.v, self.o = (ops.Linear(dim, dim, **kw) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps, **kw)
        self.norm_k = RMSNorm(dim, eps, **kw)
        self.k_img = ops.Linear(dim, dim, **kw)
        self.v_img = ops.Linear(dim, dim, **kw)
        self.norm_k_img = RMSNorm(dim, eps, **kw)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D] (LN3 of the stream) -> the shared, RMS-normed queries [B, L, D]."""
        return self.norm_q(self.q(x))

    def forward(self, q: torch.Tensor, ctx: Context) -> torch.Tensor:
        """q: [B, L, D] from ``query`` -> [B, L, D]."""
        return self.o(self.attend(q, ctx))

    def attend(self, q: torch.Tensor, ctx: Context) -> torch.Tensor:
        """The summed attention outputs before ``o``: q [B, L, D] -> [B, L, D].

        The keys and values [B, Lk, D] depend on the context only: ``ctx.keys_values`` reuses them for a run.
        """
        text, text_bias = self.text_keys(ctx)
        text_k, text_v = ctx.keys_values((self, "text"), lambda: (self.norm_k(self.k(text)), self.v(text)))
        out = ctx.attention(q, text_k, text_v, self.heads, mask=text_bias)
        del text_k, text_v
        clip_k, clip_v = ctx.keys_values(
            (self, "picture"), lambda: (self.norm_k_img(self.k_img(ctx.clip)), self.v_img(ctx.clip))
        )
        return out.add_(ctx.attention(q, clip_k, clip_v, self.heads))

    def text_keys(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The tokens the text attention sees [B, Lt, D] and their padding bias [1, Lt] (or None)."""
        return ctx.text, ctx.text_bias


class AFCrossAttention(CrossAttention):
    """``af``: out = o(text_attn + image_attn + sum_i mask_i * identity_attn_i).

    identity_attn_i attends identity i's face tokens (k_face/v_face, RMSNorm on k) and its audio tokens
    (k_audio/v_audio, RMSNorm on k), frame-blocked as in :func:`.identity_attention.af_identity_attention`.
    """

    def __init__(self, cfg: AnyTalkerConfig, ops: Operations, device=None, dtype=None):
        super().__init__(cfg, ops, device=device, dtype=dtype)
        kw = dict(device=device, dtype=dtype)
        self.audio_tokens = cfg.audio_tokens
        dim, eps = cfg.dim, cfg.eps
        self.k_audio = ops.Linear(dim, dim, **kw)
        self.v_audio = ops.Linear(dim, dim, **kw)
        self.norm_k_audio = RMSNorm(dim, eps, **kw)
        self.k_face = ops.Linear(dim, dim, **kw)
        self.v_face = ops.Linear(dim, dim, **kw)
        self.norm_k_face = RMSNorm(dim, eps, **kw)

    def attend(self, q: torch.Tensor, ctx: Context) -> torch.Tensor:
        out = super().attend(q, ctx)
        ids = ctx.identities
        if ids is None:
            return out
        for i, (face, audio, mask, box) in enumerate(zip(ids.faces, ids.audio, ids.masks, ids.boxes)):
            if box is None:  # nobody to drive: the reference adds exact zeros
                continue
            kv = ctx.keys_values((self, i), lambda: self.identity_keys_values(face, audio))
            face_k, face_v, audio_k, audio_v = kv
            routed = af_identity_attention(
                q, face_k, face_v, audio_k, audio_v, box, ctx.grid, self.heads, self.audio_tokens, ctx.attention,
                first_frame=ctx.first_frame,
            )  # fmt: skip
            add_masked(out, routed, mask, ctx.grid, box)
        return out

    def identity_keys_values(self, face: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """face [B, 257, D], audio [B, F*32, D] tokens -> face keys, face values, audio keys, audio values."""
        return self.norm_k_face(self.k_face(face)), self.v_face(face), self.norm_k_audio(self.k_audio(audio)), \
            self.v_audio(audio)  # fmt: skip


class LegacyCrossAttention(CrossAttention):
    """``legacy``: the text attention sees the 257 picture tokens first, then the text (as the 14B was trained)."""

    def text_keys(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor | None]:
        pictures = ctx.clip.shape[1]
        bias = None if ctx.text_bias is None else F.pad(ctx.text_bias, (pictures, 0))
        return torch.cat([ctx.clip, ctx.text], dim=1), bias

"""The AnyTalker diffusion transformer: Wan2.1 i2v plus identity-aware audio+face attention.

Written from the facts in ``shared/spec/anytalker-model.md`` (AnyTalker, arXiv 2511.23475; Wan2.1).
Parameter names follow the original Wan layout (``blocks.N.self_attn.q.weight``, ...) so published
checkpoints and Wan LoRAs map onto it unchanged.

Precision: the residual stream, the timestep modulation, norms and rotary embeddings are float32;
linear layers and attention run in the model's compute dtype (``self.dtype``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn

from .attention import DEFAULT_ATTENTION
from .config import AnyTalkerConfig
from .identity import (
    AudioProjection,
    Identities,
    LegacyAudioAttention,
    LegacyAudioProjection,
    af_identity_attention,
    mask_boxes,
)
from .inputs import check_inputs
from .layers import MLPProj, Operations, RMSNorm, apply_rope, layer_norm_fp32, rope_cos_sin, sinusoidal_embedding

__all__ = ["AnyTalkerDiT"]


@dataclass
class Context:
    """What every block reads besides the video tokens (computed once per forward)."""

    text: torch.Tensor  # [B, Lt, D] text tokens (legacy: the 257 image tokens, then the text)
    clip: torch.Tensor  # [B, 257, D] image tokens
    identities: Identities | None
    grid: tuple[int, int, int]  # (T, h, w) token grid
    rope: tuple[torch.Tensor, torch.Tensor]  # cos, sin [L, 1, head_dim/2]
    attention: Callable[..., torch.Tensor]
    dtype: torch.dtype  # compute dtype of linear layers and attention


class SelfAttention(nn.Module):
    """Self-attention over all video tokens with RMS-normed q/k and 3-axis rotary embeddings."""

    def __init__(self, cfg: AnyTalkerConfig, ops: Operations, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.heads = cfg.num_heads
        self.q = ops.Linear(cfg.dim, cfg.dim, **kw)
        self.k = ops.Linear(cfg.dim, cfg.dim, **kw)
        self.v = ops.Linear(cfg.dim, cfg.dim, **kw)
        self.o = ops.Linear(cfg.dim, cfg.dim, **kw)
        self.norm_q = RMSNorm(cfg.dim, cfg.eps, **kw)
        self.norm_k = RMSNorm(cfg.dim, cfg.eps, **kw)

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        """x: [B, L, D] -> [B, L, D]."""
        b, seq, d = x.shape
        cos, sin = ctx.rope
        q = apply_rope(self.norm_q(self.q(x)).view(b, seq, self.heads, -1), cos, sin)
        k = apply_rope(self.norm_k(self.k(x)).view(b, seq, self.heads, -1), cos, sin)
        out = ctx.attention(q.view(b, seq, d), k.view(b, seq, d), self.v(x), self.heads)
        return self.o(out)


class CrossAttention(nn.Module):
    """Attention to the text and the picture; in ``af`` also each identity's face and voice.

    out = o(text_attn + image_attn + sum_i mask_i * identity_attn_i), q RMS-normed once and shared.
    """

    def __init__(self, cfg: AnyTalkerConfig, ops: Operations, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.heads = cfg.num_heads
        self.audio_tokens = cfg.audio_tokens
        dim, eps = cfg.dim, cfg.eps
        self.q, self.k, self.v, self.o = (ops.Linear(dim, dim, **kw) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps, **kw)
        self.norm_k = RMSNorm(dim, eps, **kw)
        self.k_img = ops.Linear(dim, dim, **kw)
        self.v_img = ops.Linear(dim, dim, **kw)
        self.norm_k_img = RMSNorm(dim, eps, **kw)
        self.identity_aware = cfg.variant == "af"
        if self.identity_aware:
            self.k_audio = ops.Linear(dim, dim, **kw)
            self.v_audio = ops.Linear(dim, dim, **kw)
            self.norm_k_audio = RMSNorm(dim, eps, **kw)
            self.k_face = ops.Linear(dim, dim, **kw)
            self.v_face = ops.Linear(dim, dim, **kw)
            self.norm_k_face = RMSNorm(dim, eps, **kw)

    def forward(self, x: torch.Tensor, ctx: Context) -> torch.Tensor:
        """x: [B, L, D] (already normed) -> [B, L, D]."""
        attention = ctx.attention
        q = self.norm_q(self.q(x))
        out = attention(q, self.norm_k(self.k(ctx.text)), self.v(ctx.text), self.heads)
        out = out + attention(q, self.norm_k_img(self.k_img(ctx.clip)), self.v_img(ctx.clip), self.heads)
        ids = ctx.identities
        if self.identity_aware and ids is not None and len(ids):
            af_identity_attention(
                q,
                out,
                self.norm_k_face(self.k_face(ids.faces)),
                self.v_face(ids.faces),
                self.norm_k_audio(self.k_audio(ids.audio)),
                self.v_audio(ids.audio),
                ids,
                ctx.grid,
                self.heads,
                self.audio_tokens,
                attention,
            )
        return self.o(out)


class Block(nn.Module):
    """One Wan block: modulated self-attention, cross-attention, (legacy: audio attention), FFN."""

    ffn_chunk = 1024  # tokens per FFN chunk: bounds the [chunk, ffn_dim] activation

    def __init__(self, cfg: AnyTalkerConfig, ops: Operations, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.eps = cfg.eps
        self.self_attn = SelfAttention(cfg, ops, **kw)
        self.norm3 = ops.LayerNorm(cfg.dim, eps=cfg.eps, **kw)
        self.cross_attn = CrossAttention(cfg, ops, **kw)
        self.ffn = nn.Sequential(
            ops.Linear(cfg.dim, cfg.ffn_dim, **kw), nn.GELU(approximate="tanh"), ops.Linear(cfg.ffn_dim, cfg.dim, **kw)
        )
        self.modulation = nn.Parameter(torch.empty(1, 6, cfg.dim, **kw))
        if cfg.variant == "legacy":
            self.audio_cross_attn = LegacyAudioAttention(cfg, ops, **kw)
            self.norm_x = ops.LayerNorm(cfg.dim, eps=cfg.eps, **kw)

    def forward(self, x: torch.Tensor, e0: torch.Tensor, ctx: Context) -> torch.Tensor:
        """x: [B, L, D] float32 residual stream; e0: [B, 6, D] float32 timestep modulation."""
        dtype = ctx.dtype
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.float() + e0).chunk(6, dim=1)
        # 1. self-attention
        h = layer_norm_fp32(x, self.eps) * (1 + scale1) + shift1
        x = x + self.self_attn(h.to(dtype), ctx).float() * gate1
        # 2. cross-attention to text, picture and identities
        x = x + self.cross_attn(self.norm3(x.to(dtype)), ctx).float()
        if ctx.identities is not None and len(ctx.identities) and hasattr(self, "audio_cross_attn"):
            x = x + self.audio_cross_attn(self.norm_x(x.to(dtype)), ctx.identities, ctx.grid, ctx.attention).float()
        # 3. feed-forward, in token chunks to bound its activation memory
        h = (layer_norm_fp32(x, self.eps) * (1 + scale2) + shift2).to(dtype)
        y = torch.cat([self.ffn(chunk) for chunk in h.split(self.ffn_chunk, dim=1)], dim=1)
        return x + y.float() * gate2


class Head(nn.Module):
    """Modulated output projection to patch values (keys ``head.head``, ``head.modulation``)."""

    def __init__(self, cfg: AnyTalkerConfig, ops: Operations, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.eps = cfg.eps
        patch_values = cfg.out_dim * cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
        self.head = ops.Linear(cfg.dim, patch_values, **kw)
        self.modulation = nn.Parameter(torch.empty(1, 2, cfg.dim, **kw))

    def forward(self, x: torch.Tensor, e: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """x: [B, L, D] float32; e: [B, D] float32 -> [B, L, out_dim * prod(patch)] float32."""
        shift, scale = (self.modulation.float() + e[:, None]).chunk(2, dim=1)
        return self.head((layer_norm_fp32(x, self.eps) * (1 + scale) + shift).to(dtype)).float()


class AnyTalkerDiT(nn.Module):
    """The AnyTalker DiT (both variants). Build with ``AnyTalkerDiT(config)`` or load with ``load_dit``.

    ``operations``: namespace of Linear/LayerNorm/Conv3d classes (default ``torch.nn``).
    ``attention``: the attention function (``anytalker_core.attention.sdpa_attention`` signature);
    replace ``model.attention`` to route every attention through a host's kernel.
    ``dtype`` is the parameter dtype and the compute dtype of linear layers and attention.
    """

    def __init__(
        self,
        config: AnyTalkerConfig,
        *,
        operations: Operations = nn,
        attention: Callable[..., torch.Tensor] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        cfg = self.config = config
        ops = operations
        kw = dict(device=device, dtype=dtype)
        self.dtype = dtype or torch.get_default_dtype()
        self.attention = attention or DEFAULT_ATTENTION
        dim = cfg.dim

        self.patch_embedding = ops.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size, **kw)
        self.text_embedding = nn.Sequential(
            ops.Linear(cfg.text_dim, dim, **kw), nn.GELU(approximate="tanh"), ops.Linear(dim, dim, **kw)
        )
        self.time_embedding = nn.Sequential(ops.Linear(cfg.freq_dim, dim, **kw), nn.SiLU(), ops.Linear(dim, dim, **kw))
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(dim, 6 * dim, **kw))
        self.blocks = nn.ModuleList(Block(cfg, ops, **kw) for _ in range(cfg.num_layers))
        self.head = Head(cfg, ops, **kw)
        self.img_emb = MLPProj(cfg.clip_dim, dim, ops, **kw)
        self.audio_ref_emb = MLPProj(cfg.clip_dim, dim, ops, **kw)
        if cfg.variant == "af":
            self.audio_emb = AudioProjection(cfg, ops, **kw)
        else:
            self.audio_proj = LegacyAudioProjection(cfg, ops, **kw)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        text: torch.Tensor,
        clip: torch.Tensor,
        y: torch.Tensor,
        audio: Sequence[torch.Tensor] = (),
        faces: Sequence[torch.Tensor] = (),
        masks: Sequence[torch.Tensor] = (),
    ) -> torch.Tensor:
        """Predict the flow-matching velocity.

        x: [B, 16, T, H, W] noisy latent; t: [B] timesteps in [0, 1000]; text: [B, L, text_dim], L <= text_len;
        clip: [B, 257, 1280]; y: [B, 20, T, H, W] condition. Per identity i (any number):
        audio[i]: [B, F, 5, 12, 768] with F = 4(T-1)+1; faces[i]: [B, 257, 1280]; masks[i]: [B, T, H/2, W/2].
        Returns [B, 16, T, H, W] float32.
        """
        t = check_inputs(self.config, x, t, text, clip, y, audio, faces, masks)
        cfg, dtype = self.config, self.dtype
        b = x.shape[0]

        # 1. patch embedding: [B, 36, T, H, W] -> [B, L, D] tokens in (t, h, w) order
        tokens = self.patch_embedding(torch.cat([x, y], dim=1).to(dtype))
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2).float()

        # 2. timestep embedding
        e = self.time_embedding(sinusoidal_embedding(t, cfg.freq_dim).to(dtype)).float()
        e0 = self.time_projection(e.to(dtype)).float().unflatten(1, (6, cfg.dim))

        # 3. context: text (zero-padded to text_len before the MLP), picture, identities
        text = torch.cat([text, text.new_zeros(b, cfg.text_len - text.shape[1], text.shape[2])], dim=1)
        text_tokens = self.text_embedding(text.to(dtype))
        clip_tokens = self.img_emb(clip.to(dtype))
        if cfg.variant == "legacy":  # the 14B model's text attention also sees the picture tokens first
            text_tokens = torch.cat([clip_tokens, text_tokens], dim=1)
        ctx = Context(
            text=text_tokens,
            clip=clip_tokens,
            identities=self._identities(audio, faces, masks, grid) if len(audio) else None,
            grid=grid,
            rope=rope_cos_sin(grid, cfg.head_dim, tokens.device),
            attention=self.attention,
            dtype=dtype,
        )

        # 4. transformer blocks
        for block in self.blocks:
            tokens = block(tokens, e0, ctx)

        # 5. head, then 6. unpatchify: [B, L, 16*1*2*2] -> [B, 16, T, H, W]
        out = self.head(tokens, e, dtype)
        t_, h, w = grid
        pt, ph, pw = cfg.patch_size
        out = out.view(b, t_, h, w, pt, ph, pw, cfg.out_dim)
        return torch.einsum("bthwpqrc->bctphqwr", out).reshape(b, cfg.out_dim, t_ * pt, h * ph, w * pw)

    def _identities(self, audio, faces, masks, grid) -> Identities:
        """Project every identity's audio and face once per forward; identities stacked first."""
        dtype = self.dtype
        audio = torch.stack(list(audio)).to(dtype)  # [N, B, F, 5, 12, 768]
        n, b = audio.shape[:2]
        if self.config.variant == "af":
            audio_tokens = self.audio_emb(audio.flatten(0, 1)).unflatten(0, (n, b))  # [N, B, F*32, D]
        else:
            audio_tokens = self.audio_proj(audio.flatten(0, 1)).unflatten(0, (n, b))  # [N, B, T, 32, 768]
        face_tokens = self.audio_ref_emb(torch.stack(list(faces)).to(dtype))  # [N, B, 257, D]
        mask_grid = torch.stack(list(masks)).to(face_tokens.device)  # [N, B, T, h, w]
        return Identities(faces=face_tokens, audio=audio_tokens, masks=mask_grid, boxes=mask_boxes(mask_grid))

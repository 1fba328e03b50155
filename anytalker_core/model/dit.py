"""The AnyTalker diffusion transformer: Wan2.1 i2v plus identity-aware audio+face attention.

Written from the facts in ``docs/model.md`` (AnyTalker, arXiv 2511.23475; Wan2.1).
Parameter names follow the original Wan layout (``blocks.N.self_attn.q.weight``, ...) so published
checkpoints and Wan LoRAs map onto it unchanged.

Precision: the residual stream, the timestep modulation, norms and rotary embeddings are float32;
linear layers and attention run in the model's compute dtype (``compute_dtype``, else the weights' dtype).

The two checkpoint variants differ in their blocks (cross-attention, legacy's extra audio attention) and
in their audio projection; the model picks them once, from :data:`VARIANT_PARTS`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn

from .attention import DEFAULT_ATTENTION
from .audio_projection import AudioProjection, LegacyAudioProjection
from .checks import check_inputs, normalize_mask
from .config import AnyTalkerConfig
from .context import Context
from .context_cache import ContextCache
from .cross_attention import AFCrossAttention, CrossAttention, LegacyCrossAttention
from .hooks import NO_HOOKS, ForwardHooks
from .identity_attention import Identities, LegacyAudioAttention, mask_boxes
from .layers import MLPProj, Operations, RMSNorm, apply_rope, modulate, rope_freqs, sinusoidal_embedding

__all__ = ["AnyTalkerDiT"]


class SelfAttention(nn.Module):
    """Self-attention over all video tokens with RMS-normed q/k and 3-axis rotary embeddings."""

    def __init__(self, cfg: AnyTalkerConfig, ops: Operations, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.heads = cfg.num_heads
        self.eps = cfg.eps
        self.q = ops.Linear(cfg.dim, cfg.dim, **kw)
        self.k = ops.Linear(cfg.dim, cfg.dim, **kw)
        self.v = ops.Linear(cfg.dim, cfg.dim, **kw)
        self.o = ops.Linear(cfg.dim, cfg.dim, **kw)
        self.norm_q = RMSNorm(cfg.dim, cfg.eps, **kw)
        self.norm_k = RMSNorm(cfg.dim, cfg.eps, **kw)

    def forward(self, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Attention over LN(x) * (1 + scale) + shift. x: [B, L, D] float32; shift, scale: [B, 1, D]."""
        b, seq, d = x.shape
        h = modulate(x, shift, scale, self.eps).to(ctx.dtype)
        q = apply_rope(self.norm_q(self.q(h)).view(b, seq, self.heads, -1), ctx.rope)
        k = apply_rope(self.norm_k(self.k(h)).view(b, seq, self.heads, -1), ctx.rope)
        v = self.v(h)
        del h  # free the modulated input before the attention's own buffers
        attention = ctx.self_attention or ctx.attention
        out = attention(q.view(b, seq, d), k.view(b, seq, d), v, self.heads)
        out = ctx.hooks.patch("self_attention", out, q=q, k=k)
        del q, k, v
        return self.o(out)


class Block(nn.Module):
    """One Wan block (``af``): modulated self-attention, cross-attention to text, picture and people, FFN."""

    cross_attention: type[CrossAttention] = AFCrossAttention  # blocks.N.cross_attn
    ffn_chunk = 512  # tokens per FFN chunk: bounds the [chunk, ffn_dim] activation

    def __init__(self, cfg: AnyTalkerConfig, ops: Operations, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.eps = cfg.eps
        self.self_attn = SelfAttention(cfg, ops, **kw)
        self.norm3 = ops.LayerNorm(cfg.dim, eps=cfg.eps, **kw)
        self.cross_attn = self.cross_attention(cfg, ops, **kw)
        self.ffn = nn.Sequential(
            ops.Linear(cfg.dim, cfg.ffn_dim, **kw), nn.GELU(approximate="tanh"), ops.Linear(cfg.ffn_dim, cfg.dim, **kw)
        )
        self.modulation = nn.Parameter(torch.empty(1, 6, cfg.dim, **kw))

    def forward(self, x: torch.Tensor, e0: torch.Tensor, ctx: Context) -> torch.Tensor:
        """x: [B, L, D] float32 residual stream, updated in place; e0: [B, 6, D] float32 modulation."""
        dtype = ctx.dtype
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.float() + e0).chunk(6, dim=1)
        # 1. self-attention
        x.addcmul_(ctx.hooks.patch("self_attention_output", self.self_attn(x, shift1, scale1, ctx)), gate1)
        # 2. cross-attention to text, picture and people
        self.attend_context(x, ctx)
        x = ctx.hooks.patch("after_cross_attention", x)
        # 3. feed-forward, in token chunks so its [chunk, ffn_dim] activation stays small
        h = modulate(x, shift2, scale2, self.eps).to(dtype)
        for start in range(0, x.shape[1], self.ffn_chunk):
            part = slice(start, start + self.ffn_chunk)
            x[:, part].addcmul_(self.ffn(h[:, part]), gate2)
        return x

    def attend_context(self, x: torch.Tensor, ctx: Context) -> None:
        """x [B, L, D] float32 += cross_attn(LN3(x)), in place."""
        out = self.cross_attn(self.cross_attn.query(self.norm3(x.to(ctx.dtype))), ctx)
        x.add_(ctx.hooks.patch("cross_attention_output", out))


class LegacyBlock(Block):
    """``legacy`` block: the text+picture cross-attention, then each person's audio attention (MultiTalk style).

    x += audio_cross_attn(norm_x(x)) after the cross-attention (keys ``audio_cross_attn.*``, ``norm_x.*``).
    """

    cross_attention = LegacyCrossAttention

    def __init__(self, cfg: AnyTalkerConfig, ops: Operations, device=None, dtype=None):
        super().__init__(cfg, ops, device=device, dtype=dtype)
        kw = dict(device=device, dtype=dtype)
        self.audio_cross_attn = LegacyAudioAttention(cfg, ops, **kw)
        self.norm_x = ops.LayerNorm(cfg.dim, eps=cfg.eps, **kw)

    def attend_context(self, x: torch.Tensor, ctx: Context) -> None:
        super().attend_context(x, ctx)
        if ctx.identities is not None:
            q = self.audio_cross_attn.query(self.norm_x(x.to(ctx.dtype)))
            out = self.audio_cross_attn(q, ctx.identities, ctx.grid, ctx.attention, ctx.keys_values, ctx.first_frame)
            x.add_(out)


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
        return self.head(modulate(x, shift, scale, self.eps).to(dtype)).float()


@dataclass(frozen=True)
class VariantParts:
    """What one checkpoint variant builds (``docs/model.md``, "The two variants")."""

    block: type[Block]  # blocks.N.*
    audio_projection: type[AudioProjection | LegacyAudioProjection]  # each person's audio -> audio tokens
    audio_projection_key: str  # the projection's name in the checkpoint


VARIANT_PARTS = {
    "af": VariantParts(Block, AudioProjection, "audio_emb"),
    "legacy": VariantParts(LegacyBlock, LegacyAudioProjection, "audio_proj"),
}


class AnyTalkerDiT(nn.Module):
    """The AnyTalker DiT (both variants). Build with ``AnyTalkerDiT(config)`` or load with ``load_dit``.

    ``operations``: namespace of Linear/LayerNorm/Conv3d classes (default ``torch.nn``).
    ``attention``: the attention function (``anytalker_core.model.attention.sdpa_attention`` signature);
    replace ``model.attention`` to route every attention through a host's kernel.
    ``dtype`` is the parameter dtype. Linear layers and attention compute in ``model.compute_dtype``, or,
    when that is None (the default), in the dtype of the weights, so ``model.half()`` just works; a host
    that stores weights in fp8 sets ``compute_dtype`` to the dtype its layers cast them to.
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
        parts = VARIANT_PARTS[cfg.variant]
        ops = operations
        kw = dict(device=device, dtype=dtype)
        self.compute_dtype: torch.dtype | None = None
        self.attention = attention or DEFAULT_ATTENTION
        self._context_cache: ContextCache | None = None  # open during a run (``context_cache``)
        dim = cfg.dim

        self.patch_embedding = ops.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size, **kw)
        self.text_embedding = nn.Sequential(
            ops.Linear(cfg.text_dim, dim, **kw), nn.GELU(approximate="tanh"), ops.Linear(dim, dim, **kw)
        )
        self.time_embedding = nn.Sequential(ops.Linear(cfg.freq_dim, dim, **kw), nn.SiLU(), ops.Linear(dim, dim, **kw))
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(dim, 6 * dim, **kw))
        self.blocks = nn.ModuleList(parts.block(cfg, ops, **kw) for _ in range(cfg.num_layers))
        self.head = Head(cfg, ops, **kw)
        self.img_emb = MLPProj(cfg.clip_dim, dim, ops, **kw)
        self.audio_ref_emb = MLPProj(cfg.clip_dim, dim, ops, **kw)
        self._audio_projection_key = parts.audio_projection_key
        self.add_module(parts.audio_projection_key, parts.audio_projection(cfg, ops, **kw))

    @property
    def audio_projection(self) -> nn.Module:
        """Each person's audio features -> audio tokens: ``audio_emb`` (af) or ``audio_proj`` (legacy)."""
        return getattr(self, self._audio_projection_key)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        text: torch.Tensor,
        clip: torch.Tensor,
        y: torch.Tensor,
        audio: Sequence[torch.Tensor] | None = None,
        faces: Sequence[torch.Tensor] | None = None,
        masks: Sequence[torch.Tensor] | None = None,
        hooks: ForwardHooks = NO_HOOKS,
    ) -> torch.Tensor:
        """Predict the flow-matching velocity.

        x: [B, 16, T, H, W] noisy latent; t: [B] timesteps in [0, 1000]; text: [B, L, text_dim], L <= text_len;
        clip: [B, 257, 1280]; y: [B, 20, T, H, W] condition. Per identity i (any number):
        audio[i]: [B, F, 5, 12, 768] with F = 4(T-1)+1; faces[i]: [B, 257, 1280]; masks[i]: [B, T, H/2, W/2]
        (or the reference's [B, 1, T, H/2, W/2]; soft or boolean).
        ``hooks``: where a host steps into this forward (:mod:`.hooks`); the default changes nothing.
        Returns [B, 16, T, H, W] float32.
        """
        audio, faces, masks = ([] if v is None else list(v) for v in (audio, faces, masks))
        masks = [normalize_mask(m) for m in masks]
        t = check_inputs(self.config, x, t, text, clip, y, audio, faces, masks)
        cfg = self.config
        dtype = self.compute_dtype or self.patch_embedding.weight.dtype
        b = x.shape[0]

        # 1. patch embedding: [B, 36, T, H, W] -> [B, L, D] tokens in (t, h, w) order
        tokens = self.patch_embedding(torch.cat([x, y], dim=1).to(dtype))
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2).float().contiguous()

        # 2. timestep embedding
        e = self.time_embedding(sinusoidal_embedding(t, cfg.freq_dim).to(dtype)).float()
        e0 = self.time_projection(e.to(dtype)).float().unflatten(1, (6, cfg.dim))

        # 3. context: text, picture, identities (once per run when a context cache is open)
        entry = None
        if self._context_cache is not None:
            entry = self._context_cache.entry((text, clip, *audio, *faces, *masks))
        parts = entry.context if entry is not None else None
        if parts is None:
            parts = self._context_parts(text, clip, audio, faces, masks, tokens.device, dtype)
            if entry is not None:
                entry.keep_context(parts)
        ctx = Context(
            **parts,
            grid=grid,
            rope=rope_freqs(grid, cfg.head_dim, tokens.device),
            attention=hooks.attention(self.attention),
            dtype=dtype,
            hooks=hooks,
            cache=entry,
        )

        # 4. transformer blocks
        for index, block in enumerate(self.blocks):
            tokens = hooks.block(index, block, tokens, e0, ctx)

        # 5. head, then 6. unpatchify: [B, L, 16*1*2*2] -> [B, 16, T, H, W]
        out = self.head(tokens, e, dtype)
        t_, h, w = grid
        pt, ph, pw = cfg.patch_size
        out = out.view(b, t_, h, w, pt, ph, pw, cfg.out_dim)
        return torch.einsum("bthwpqrc->bctphqwr", out).reshape(b, cfg.out_dim, t_ * pt, h * ph, w * pw)

    @contextmanager
    def context_cache(self, max_bytes: int) -> Iterator[ContextCache]:
        """Within this block, one sampling run: each conditioning's text, picture, face and audio tokens and
        every block's keys and values of them are computed once and reused (:mod:`.context_cache`), at most
        ``max_bytes`` of them. Yields the cache (its ``bytes``, ``hits``, ``refused`` counters)."""
        previous, self._context_cache = self._context_cache, ContextCache(max_bytes)
        try:
            yield self._context_cache
        finally:
            self._context_cache = previous

    def _context_parts(self, text, clip, audio, faces, masks, device, dtype) -> dict:
        """The context's tokens: text, its padding bias, picture and identities (``Context`` fields)."""
        text_tokens, text_bias = self._text_tokens(text, dtype)
        return dict(
            text=text_tokens,
            text_bias=text_bias,
            clip=self.img_emb(clip.to(dtype)),
            identities=self._identities(audio, faces, masks, device, dtype) if audio else None,
        )

    def _text_tokens(self, text: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text rows [B, L, text_dim] -> tokens [B, L', D] and an additive attention bias [1, L'] (or None).

        The model zero-pads the text to text_len rows before its MLP and attends all of them, so the
        n = text_len - L padding rows become n identical keys and values. They are computed once: one
        padding row whose attention logit gets + log(n), which is the same softmax (n e^s = e^(s + log n)).
        """
        padding = self.config.text_len - text.shape[1]
        if padding:
            text = torch.cat([text, text.new_zeros(text.shape[0], 1, text.shape[2])], dim=1)
        tokens = self.text_embedding(text.to(dtype))
        if padding <= 1:
            return tokens, None
        bias = torch.zeros(1, tokens.shape[1], device=tokens.device, dtype=tokens.dtype)
        bias[0, -1] = math.log(padding)
        return tokens, bias

    def _identities(self, audio, faces, masks, device, dtype) -> Identities:
        """Project every identity's audio and face once per forward; identities stacked first."""
        kw = dict(device=device, dtype=dtype)
        audio = torch.stack(audio).to(**kw)  # [N, B, F, 5, 12, 768]
        n, b = audio.shape[:2]
        # af: [N, B, F*32, D]; legacy: [N, B, T, 32, audio_token_dim]
        audio_tokens = self.audio_projection(audio.flatten(0, 1)).unflatten(0, (n, b))
        face_tokens = self.audio_ref_emb(torch.stack(faces).to(**kw))  # [N, B, 257, D]
        mask_grid = torch.stack(masks).to(device)  # [N, B, T, h, w]
        return Identities(faces=face_tokens, audio=audio_tokens, masks=mask_grid, boxes=mask_boxes(mask_grid))

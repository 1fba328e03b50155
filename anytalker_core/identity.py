"""Identity-aware audio+face attention: each person's voice drives only that person's face.

Per identity i the model has an audio track (wav2vec2 features), a face embedding (image-encoder
features of the face crop) and a token mask (1 where the face is). The reference builds a dense
boolean mask [all video tokens x (F*32 + 257)] per identity and block. The visible audio is regular,
so we compute the same numbers frame by frame instead:

- ``af`` (1.3B): queries of latent frame 0 see the 257 face tokens and the audio tokens of every
  video frame; queries of latent frame j >= 1 see the face tokens and the 4*32 audio tokens of video
  frames 4(j-1)+1 .. 4j.
- ``legacy`` (14B): queries of latent frame j see the 257 face tokens and that latent frame's own 32
  audio tokens.

The output is multiplied by the identity's token mask, so only queries inside the mask's bounding box
(over all frames) are computed at all; outside it the reference adds exact zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from .config import AnyTalkerConfig
from .layers import Operations

Box = tuple[int, int, int, int]  # token-grid rows r0:r1, cols c0:c1


@dataclass
class Identities:
    """Per-forward identity context, identities stacked first (N identities, batch B).

    Identities are projected together (one batched MLP call each) but attended one by one, each only
    inside its own box, so the attention's memory does not grow with the number of people.

    faces: [N, B, 257, dim] face tokens (``audio_ref_emb`` of the face features).
    audio: af: [N, B, F*32, dim] audio tokens, (frame, token) order;
           legacy: [N, B, T, 32, audio_token_dim] audio tokens per latent frame.
    masks: [N, B, T, h, w] token masks.
    boxes: per identity the bounding box of its mask on the token grid, or None when the mask is empty.
    """

    faces: torch.Tensor
    audio: torch.Tensor
    masks: torch.Tensor
    boxes: list[Box | None]


def mask_boxes(masks: torch.Tensor) -> list[Box | None]:
    """Bounding boxes of the nonzero entries of masks [N, B, T, h, w] over batch and time."""
    boxes: list[Box | None] = []
    for footprint in (masks != 0).flatten(1, 2).any(dim=1).cpu():  # [h, w] per identity
        rows = footprint.any(dim=1).nonzero()
        cols = footprint.any(dim=0).nonzero()
        if len(rows) == 0:
            boxes.append(None)
        else:
            boxes.append((int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1))
    return boxes


class AudioProjection(nn.Module):
    """``af`` audio MLP (keys ``audio_emb.*``): each video frame's window -> 32 tokens of model width.

    [.., F, 5, 12, 768] -> flatten 46080 -> Linear 512, ReLU, Linear 512, ReLU, Linear 32*dim -> LN(dim).
    """

    def __init__(self, cfg: AnyTalkerConfig, ops: Operations, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.tokens = cfg.audio_tokens
        self.proj1 = ops.Linear(cfg.audio_feature_dim, cfg.audio_hidden, **kw)
        self.proj2 = ops.Linear(cfg.audio_hidden, cfg.audio_hidden, **kw)
        self.proj3 = ops.Linear(cfg.audio_hidden, cfg.audio_tokens * cfg.dim, **kw)
        self.norm = ops.LayerNorm(cfg.dim, **kw)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: [N, F, window, layers, channels] -> [N, F*32, dim]."""
        n, frames = audio.shape[:2]
        h = torch.relu(self.proj1(audio.reshape(n * frames, -1)))
        h = torch.relu(self.proj2(h))
        tokens = self.norm(self.proj3(h).view(n * frames, self.tokens, -1))
        return tokens.view(n, frames * self.tokens, -1)


class LegacyAudioProjection(nn.Module):
    """``legacy`` audio MLP (keys ``audio_proj.*``): 32 tokens of width 768 per latent frame.

    Latent frame 0 takes video frame 0's 5-slot window (``proj1``). Latent frame j >= 1 groups video
    frames 4j-3..4j and keeps 8 slots: the first 3 of the first frame, the centre slot of the two
    middle frames, the last 3 of the fourth frame (``proj1_vf``). Then ReLU, proj2, ReLU, proj3, LN.
    """

    def __init__(self, cfg: AnyTalkerConfig, ops: Operations, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.stride = cfg.vae_stride_t
        self.window = cfg.audio_window
        self.tokens = cfg.audio_tokens
        grouped_slots = cfg.audio_window + cfg.vae_stride_t - 1
        per_slot = cfg.audio_layers * cfg.audio_channels
        self.proj1 = ops.Linear(cfg.audio_feature_dim, cfg.audio_hidden, **kw)
        self.proj1_vf = ops.Linear(grouped_slots * per_slot, cfg.audio_hidden, **kw)
        self.proj2 = ops.Linear(cfg.audio_hidden, cfg.audio_hidden, **kw)
        self.proj3 = ops.Linear(cfg.audio_hidden, cfg.audio_tokens * cfg.audio_token_dim, **kw)
        self.norm = ops.LayerNorm(cfg.audio_token_dim, **kw)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio: [N, F, window, layers, channels] with F = 4(T-1)+1 -> [N, T, 32, audio_token_dim]."""
        n, frames = audio.shape[:2]
        mid = self.window // 2
        groups = audio[:, 1:].unflatten(1, (-1, self.stride))  # [N, T-1, 4, window, layers, channels]
        grouped = torch.cat(
            [groups[:, :, 0, : mid + 1], groups[:, :, 1:-1, mid], groups[:, :, -1, mid:]], dim=2
        )  # [N, T-1, 8, layers, channels]
        first = torch.relu(self.proj1(audio[:, :1].flatten(2)))  # [N, 1, hidden]
        rest = torch.relu(self.proj1_vf(grouped.flatten(2)))  # [N, T-1, hidden]
        h = torch.relu(self.proj2(torch.cat([first, rest], dim=1)))
        tokens = self.proj3(h).unflatten(-1, (self.tokens, -1))  # [N, T, 32, audio_token_dim]
        return self.norm(tokens)


def frame_blocked_attention(
    q_frames: torch.Tensor,
    face_k: torch.Tensor,
    face_v: torch.Tensor,
    audio_k: torch.Tensor,
    audio_v: torch.Tensor,
    heads: int,
    attention: Callable[..., torch.Tensor],
) -> torch.Tensor:
    """Each frame's queries attend [the face tokens, that frame's audio tokens].

    q_frames: [B, T', S, D]; face_k/v: [B, 257, D] (shared by all frames); audio_k/v: [B, T', La, D].
    Returns [B, T', S, D].
    """
    b, frames, s, d = q_frames.shape
    faces = face_k.shape[1]
    k = torch.cat([face_k[:, None].expand(b, frames, faces, d), audio_k], dim=2).flatten(0, 1)
    v = torch.cat([face_v[:, None].expand(b, frames, faces, d), audio_v], dim=2).flatten(0, 1)
    out = attention(q_frames.reshape(b * frames, s, d), k, v, heads)
    return out.view(b, frames, s, d)


def crop_queries(q: torch.Tensor, grid: tuple[int, int, int], box: Box) -> torch.Tensor:
    """q [B, T*h*w, D] -> the queries inside box on every frame: [B, T, rows*cols, D]."""
    t, h, w = grid
    r0, r1, c0, c1 = box
    return q.view(q.shape[0], t, h, w, -1)[:, :, r0:r1, c0:c1].flatten(2, 3)


def add_masked(
    acc: torch.Tensor, out: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int, int], box: Box
) -> None:
    """acc[B, T*h*w, D] (inside box) += out [B, T, rows*cols, D] * mask [B, T, h, w] (inside box)."""
    t, h, w = grid
    r0, r1, c0, c1 = box
    region = acc.view(acc.shape[0], t, h, w, -1)[:, :, r0:r1, c0:c1]
    out = out.view(region.shape) * mask[:, :, r0:r1, c0:c1, None].to(out.dtype)
    region.add_(out.to(acc.dtype))


def af_identity_attention(
    q: torch.Tensor,
    face_k: torch.Tensor,
    face_v: torch.Tensor,
    audio_k: torch.Tensor,
    audio_v: torch.Tensor,
    box: Box,
    grid: tuple[int, int, int],
    heads: int,
    tokens_per_frame: int,
    attention: Callable[..., torch.Tensor],
) -> torch.Tensor:
    """One identity's audio+face attention for the queries inside its box (``af``).

    q: [B, T*h*w, D]; face_k/v: [B, 257, D]; audio_k/v: [B, F*32, D] with F = 4(T-1)+1.
    Returns [B, T, rows*cols, D] (not yet masked).
    """
    t = grid[0]
    b, d = q.shape[0], q.shape[-1]
    q = crop_queries(q, grid, box)  # [B, T, S, D]
    # latent frame 0 sees every video frame's audio
    parts = [frame_blocked_attention(q[:, :1], face_k, face_v, audio_k[:, None], audio_v[:, None], heads, attention)]
    if t > 1:  # latent frame j >= 1 sees video frames 4(j-1)+1 .. 4j
        later_k = audio_k[:, tokens_per_frame:].reshape(b, t - 1, -1, d)
        later_v = audio_v[:, tokens_per_frame:].reshape(b, t - 1, -1, d)
        parts.append(frame_blocked_attention(q[:, 1:], face_k, face_v, later_k, later_v, heads, attention))
    return torch.cat(parts, dim=1)


class LegacyAudioAttention(nn.Module):
    """``legacy`` per-frame audio+face attention (keys ``audio_cross_attn.*``); no q/k norms.

    Each latent frame's queries attend [257 face tokens (k_face/v_face), its 32 audio tokens
    (kv_linear)]; outputs are masked per identity, summed, then projected once.
    """

    def __init__(self, cfg: AnyTalkerConfig, ops: Operations, device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.heads = cfg.num_heads
        self.q_linear = ops.Linear(cfg.dim, cfg.dim, **kw)
        self.kv_linear = ops.Linear(cfg.audio_token_dim, 2 * cfg.dim, **kw)
        self.proj = ops.Linear(cfg.dim, cfg.dim, **kw)
        self.k_face = ops.Linear(cfg.dim, cfg.dim, **kw)
        self.v_face = ops.Linear(cfg.dim, cfg.dim, **kw)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D] (norm_x of the stream) -> queries [B, L, D]."""
        return self.q_linear(x)

    def forward(self, q: torch.Tensor, ctx) -> torch.Tensor:
        """q: [B, T*h*w, D] from ``query``; ctx: the model's per-forward context -> [B, T*h*w, D]."""
        ids, grid = ctx.identities, ctx.grid
        acc = torch.zeros_like(q)
        for face, audio, mask, box in zip(ids.faces, ids.audio, ids.masks, ids.boxes):
            if box is None:
                continue
            audio_k, audio_v = self.kv_linear(audio).chunk(2, dim=-1)  # [B, T, 32, D] each
            routed = frame_blocked_attention(
                crop_queries(q, grid, box), self.k_face(face), self.v_face(face), audio_k, audio_v, self.heads,
                ctx.attention,
            )
            add_masked(acc, routed, mask, grid, box)
        return self.proj(acc)

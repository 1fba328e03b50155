"""Identity-aware audio+face attention: each person's voice drives only that person's face.

Per identity i the model has audio tokens (:mod:`.audio_projection`), face tokens (``audio_ref_emb`` of
the image-encoder features of the face crop) and a token mask (nonzero where the face is). The reference
builds a dense boolean mask [all video tokens x (audio + 257 face tokens)] per identity and block. The
visible audio is regular, so we compute the same numbers frame by frame instead
(``docs/model.md``, "Identity attention"):

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
KeysValues = Callable[[object, Callable[[], tuple[torch.Tensor, ...]]], tuple[torch.Tensor, ...]]


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


@torch.compiler.disable  # data-dependent Python ints (slice bounds): one clean graph break, before the blocks
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


def add_masked(acc: torch.Tensor, out: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int, int], box: Box) -> None:
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
    first_frame: int = 0,
) -> torch.Tensor:
    """One identity's audio+face attention for the queries inside its box (``af``).

    q: [B, T'*h*w, D], the T' latent frames from ``first_frame`` on (T' = grid[0]; all of them unless the frames
    are split over ranks); face_k/v: [B, 257, D]; audio_k/v: [B, F*32, D], the whole clip's audio, F = 4(T-1)+1.
    Returns [B, T', rows*cols, D] (not yet masked).
    """
    t = grid[0]
    b, d = q.shape[0], q.shape[-1]
    q = crop_queries(q, grid, box)  # [B, T', S, D]
    parts = []
    if first_frame == 0:  # latent frame 0 sees every video frame's audio
        parts.append(frame_blocked_attention(q[:, :1], face_k, face_v, audio_k[:, None], audio_v[:, None], heads,
                                             attention))  # fmt: skip
    later = 1 if first_frame == 0 else 0  # the first local frame >= 1
    if t > later:  # latent frame j >= 1 sees video frames 4(j-1)+1 .. 4j
        start = tokens_per_frame * (1 + 4 * (first_frame + later - 1))
        span = slice(start, start + 4 * tokens_per_frame * (t - later))
        later_k = audio_k[:, span].reshape(b, t - later, -1, d)
        later_v = audio_v[:, span].reshape(b, t - later, -1, d)
        parts.append(frame_blocked_attention(q[:, later:], face_k, face_v, later_k, later_v, heads, attention))
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

    def forward(
        self,
        q: torch.Tensor,
        ids: Identities,
        grid: tuple[int, int, int],
        attention: Callable[..., torch.Tensor],
        keys_values: KeysValues | None = None,
        first_frame: int = 0,
    ) -> torch.Tensor:
        """q: [B, T'*h*w, D] from ``query``, the T' = grid[0] latent frames from ``first_frame`` on; ids: the
        projected identities (masks of those frames, audio of the whole clip) -> [B, T'*h*w, D].

        ``keys_values(key, compute)``: the forward's ``Context.keys_values`` (reuses each identity's keys and
        values for a run when a context cache is open); None computes them here.
        """
        acc = torch.zeros_like(q)
        for i, (face, audio, mask, box) in enumerate(zip(ids.faces, ids.audio, ids.masks, ids.boxes)):
            if box is None:
                continue

            def compute(face=face, audio=audio) -> tuple[torch.Tensor, ...]:
                # face [B, 257, D] and audio [B, T, 32, D] keys and values
                return self.k_face(face), self.v_face(face), *self.kv_linear(audio).chunk(2, dim=-1)

            face_k, face_v, audio_k, audio_v = compute() if keys_values is None else keys_values((self, i), compute)
            frames = slice(first_frame, first_frame + grid[0])  # [B, T', 32, D]: the frames of q
            audio_k, audio_v = audio_k[:, frames], audio_v[:, frames]
            q_box = crop_queries(q, grid, box)  # [B, T, rows*cols, D]
            routed = frame_blocked_attention(q_box, face_k, face_v, audio_k, audio_v, self.heads, attention)
            add_masked(acc, routed, mask, grid, box)
        return self.proj(acc)

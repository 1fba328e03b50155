"""Sequence parallelism by whole latent frames: one forward of the DiT on P ranks of ``torch.distributed``.

Rank r holds the video tokens of latent frames [f_r, f_r+1) (contiguous, as even as the count allows: 21 frames on
2 ranks are 11 + 10). Every rank gets the whole input and computes the patch embedding, the timestep embedding and
the context (text, picture, people) itself; only the blocks run on the rank's own frames:

- self-attention sees every frame: Ulysses, an all-to-all over heads. Each rank sends head group j of its tokens to
  rank j and gets back head group r of every rank's tokens, attends all tokens with heads/P heads, and the inverse
  all-to-all returns its own tokens with all heads. P must divide the head count (1.3B: 12 heads; 14B: 40).
- the text, picture and identity attention are local: a latent frame's queries see the same keys wherever they
  are (the identity attention is frame-blocked, ``identity_attention``: frame j sees its own audio, frame 0 all).
  The rotary embedding and the face masks are sliced from the whole grid; the face boxes stay the whole clip's.
- after the last block the ranks' tokens are gathered and every rank runs the head on the whole clip.

The numbers are those of one process (the same softmax per query), within float rounding. It runs through the
forward's host seams (:class:`FrameSplit` is a :class:`~.hooks.ForwardHooks`; another hooks object, a host's,
can run inside it). Forward only (no autograd through the collectives). NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.distributed as dist

from .hooks import NO_HOOKS, ForwardHooks

__all__ = ["FrameSplit", "FrameSplitDiT", "check_ranks", "frame_shares", "sequence_parallel_forward"]


def frame_shares(frames: int, ranks: int) -> list[tuple[int, int]]:
    """Each rank's latent frames [start, stop): contiguous, the first ``frames % ranks`` ranks one more."""
    base, extra = divmod(frames, ranks)
    shares, start = [], 0
    for rank in range(ranks):
        stop = start + base + (rank < extra)
        shares.append((start, stop))
        start = stop
    return shares


def check_ranks(heads: int, frames: int | None, ranks: int) -> None:
    """Raise ValueError unless ``ranks`` can split a forward of ``frames`` latent frames (None: any window) with
    ``heads`` heads."""
    if heads % ranks:
        divisors = [n for n in range(2, heads + 1) if heads % n == 0]
        raise ValueError(
            f"sequence parallelism over {ranks} ranks needs the head count to be divisible by {ranks}, but the model "
            f"has {heads} heads: use {', '.join(map(str, divisors))} ranks (the self-attention splits its heads)"
        )
    if frames is not None and frames < ranks:
        raise ValueError(
            f"sequence parallelism splits whole latent frames, but this window has {frames} latent frames for "
            f"{ranks} ranks: use at most {frames} ranks, or a longer window"
        )


class FrameSplit(ForwardHooks):
    """The hooks of one frame-split forward on this rank (see the module docstring).

    ``blocks``: the model's block count (the stream is gathered after the last); ``group``: the process group
    (None: the default one); ``inner``: hooks run inside the split (on the rank's frames). ``sent_bytes``: what
    this rank sent to the other ranks during the forward (all-to-alls and the gather).
    """

    def __init__(self, heads: int, blocks: int, group: Any = None, inner: ForwardHooks = NO_HOOKS):
        self.heads, self.blocks, self.group, self.inner = heads, blocks, group, inner
        self.ranks = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.sent_bytes = 0
        self._ctx: Any = None
        self._tokens: list[int] = []  # video tokens per rank

    def attention(self, attention: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        return self.inner.attention(attention)

    def patch(self, point: str, x: torch.Tensor, **extras: torch.Tensor) -> torch.Tensor:
        return self.inner.patch(point, x, **extras)

    def block(self, index: int, block: torch.nn.Module, x: torch.Tensor, e0: torch.Tensor, ctx: Any) -> torch.Tensor:
        if index == 0:
            x = self._split(x, ctx)
        x = self.inner.block(index, block, x, e0, self._ctx)
        return self._gather(x) if index == self.blocks - 1 else x

    def _split(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """The whole stream x [B, T*h*w, D] -> this rank's frames, and the context of those frames."""
        t, h, w = ctx.grid
        check_ranks(self.heads, t, self.ranks)
        shares = frame_shares(t, self.ranks)
        self._tokens = [(stop - start) * h * w for start, stop in shares]
        start, stop = shares[self.rank]
        tokens = slice(start * h * w, stop * h * w)
        ids = ctx.identities
        if ids is not None:  # masks of the rank's frames; the audio and the boxes stay the whole clip's
            ids = dataclasses.replace(ids, masks=ids.masks[:, :, start:stop])
        self._ctx = dataclasses.replace(
            ctx, grid=(stop - start, h, w), rope=ctx.rope[tokens], identities=ids, first_frame=start,
            self_attention=self._ulysses(ctx.self_attention or ctx.attention),
        )  # fmt: skip
        return x[:, tokens].clone()  # the blocks update the stream in place

    def _ulysses(self, attention: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """Self-attention over every rank's tokens: q, k, v [B, L_r, heads*d] of this rank -> [B, L_r, heads*d]."""

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask=None) -> torch.Tensor:
            q, k, v = (self._scatter_heads(a) for a in (q, k, v))  # [B, L, heads/P*d]
            return self._gather_heads(attention(q, k, v, heads // self.ranks, mask=mask))

        return attend

    def _all_to_all(self, inp: torch.Tensor, send: list[int], receive: list[int]) -> torch.Tensor:
        """Rows [sum(send), ...] -> rows [sum(receive), ...]: send[j] rows to rank j, receive[j] rows from it."""
        out = inp.new_empty(sum(receive), *inp.shape[1:])
        dist.all_to_all_single(out, inp, receive, send, group=self.group)
        row = inp[0].numel() * inp.element_size()
        self.sent_bytes += row * (sum(send) - send[self.rank])
        return out

    def _scatter_heads(self, a: torch.Tensor) -> torch.Tensor:
        """[B, L_r, heads*d] (this rank's tokens) -> [B, L, heads/P*d] (every token, head group ``rank``)."""
        b, local, inner = a.shape
        p = self.ranks
        rows = a.view(b, local, p, inner // p).permute(2, 1, 0, 3).reshape(p * local, b, inner // p)
        return self._all_to_all(rows.contiguous(), [local] * p, self._tokens).permute(1, 0, 2).contiguous()

    def _gather_heads(self, a: torch.Tensor) -> torch.Tensor:
        """[B, L, heads/P*d] -> [B, L_r, heads*d]: the inverse of :meth:`_scatter_heads`."""
        b, _, part = a.shape
        p, local = self.ranks, self._tokens[self.rank]
        rows = self._all_to_all(a.permute(1, 0, 2).contiguous(), self._tokens, [local] * p)
        return rows.view(p, local, b, part).permute(2, 1, 0, 3).reshape(b, local, p * part)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's stream [B, L_r, D] -> the whole stream [B, L, D] on every rank."""
        longest = max(self._tokens)
        padded = torch.nn.functional.pad(x, (0, 0, 0, longest - x.shape[1])).contiguous()
        pieces = [torch.empty_like(padded) for _ in range(self.ranks)]
        dist.all_gather(pieces, padded, group=self.group)
        self.sent_bytes += padded.numel() * padded.element_size() * (self.ranks - 1)
        return torch.cat([piece[:, :n] for piece, n in zip(pieces, self._tokens)], dim=1)


def sequence_parallel_forward(
    model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, *, group: Any = None,
    hooks: ForwardHooks = NO_HOOKS, **inputs: Any,
) -> torch.Tensor:  # fmt: skip
    """``model(x, t, **inputs)`` (``AnyTalkerDiT.forward``'s arguments, the same on every rank) with the latent
    frames split over the ranks of ``group``; returns the whole prediction [B, 16, T, H, W] on every rank.

    ``hooks``: a host's hooks, run on the rank's frames. Raises ValueError when the ranks cannot split this model
    or window (:func:`check_ranks`)."""
    ranks = dist.get_world_size(group)
    frames = x.shape[2] // model.config.patch_size[0]
    check_ranks(model.config.num_heads, frames, ranks)
    split = FrameSplit(model.config.num_heads, len(model.blocks), group, hooks)
    return model(x, t, hooks=split, **inputs)


class FrameSplitDiT(torch.nn.Module):
    """An ``AnyTalkerDiT`` whose every call runs split over the ranks of ``group`` (:func:`sequence_parallel_forward`):
    the sampler calls it as it calls the DiT, on every rank with the same inputs, and gets the same prediction."""

    def __init__(self, dit: torch.nn.Module, group: Any = None):
        super().__init__()
        check_ranks(dit.config.num_heads, None, dist.get_world_size(group))
        self.dit, self.group = dit, group

    @property
    def config(self) -> Any:
        return self.dit.config

    def context_cache(self, max_bytes: int) -> Any:
        """The DiT's per-run context cache (``AnyTalkerDiT.context_cache``): each rank keeps its own."""
        return self.dit.context_cache(max_bytes)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **inputs: Any) -> torch.Tensor:
        return sequence_parallel_forward(self.dit, x, t, group=self.group, **inputs)

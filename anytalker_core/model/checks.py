"""Checks of a forward call's inputs, with messages that name the input and expected vs actual shape."""

from __future__ import annotations

from typing import Sequence

import torch

from .config import AnyTalkerConfig


def _shape(t: object) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def normalize_mask(mask: torch.Tensor) -> torch.Tensor:
    """Accept the reference's [B, 1, T, h, w] token-mask layout and boolean masks: -> float [B, T, h, w]."""
    if isinstance(mask, torch.Tensor):
        if mask.dim() == 5 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if not mask.is_floating_point():
            mask = mask.float()
    return mask


def check_inputs(
    cfg: AnyTalkerConfig,
    x: torch.Tensor,
    t: torch.Tensor | float,
    text: torch.Tensor,
    clip: torch.Tensor,
    y: torch.Tensor,
    audio: Sequence[torch.Tensor],
    faces: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Raise ``ValueError`` listing every malformed input; return t as a float tensor [B]."""
    if not isinstance(x, torch.Tensor) or x.dim() != 5 or x.shape[1] != cfg.out_dim:
        raise ValueError(f"`x` has shape {_shape(x)}; expected a noisy latent [B, {cfg.out_dim}, T, H, W]")
    b, _, frames, height, width = x.shape
    problems = []
    if height % 2 or width % 2:
        problems.append(f"`x` latent size {height}x{width} must be even in both sides (2x2 patches)")

    def expect(name: str, value: object, shape: tuple, meaning: str) -> None:
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            problems.append(f"`{name}` has shape {_shape(value)}; expected {list(shape)} ({meaning})")

    expect("y", y, (b, cfg.in_dim - cfg.out_dim, frames, height, width), "4 mask channels + 16 latent channels")
    expect("clip", clip, (b, cfg.clip_tokens, cfg.clip_dim), "image-encoder features of the picture")
    if not isinstance(text, torch.Tensor) or text.dim() != 3 or text.shape[0] != b or text.shape[2] != cfg.text_dim:
        problems.append(f"`text` has shape {_shape(text)}; expected [{b}, L, {cfg.text_dim}] (text-encoder output)")
    elif not 1 <= text.shape[1] <= cfg.text_len:
        problems.append(f"`text` has {text.shape[1]} tokens; expected 1..{cfg.text_len} (it is zero-padded inside)")

    if not (len(audio) == len(faces) == len(masks)):
        problems.append(
            f"identities do not pair up: {len(audio)} audio, {len(faces)} faces, {len(masks)} masks; "
            "give one of each per person"
        )
    video_frames = cfg.vae_stride_t * (frames - 1) + 1
    for i, feats in enumerate(audio):
        expect(
            f"audio[{i}]",
            feats,
            (b, video_frames, cfg.audio_window, cfg.audio_layers, cfg.audio_channels),
            f"F = {cfg.vae_stride_t}*(T-1)+1 = {video_frames} video frames for T = {frames} latent frames",
        )
    for i, face in enumerate(faces):
        expect(f"faces[{i}]", face, (b, cfg.clip_tokens, cfg.clip_dim), "image-encoder features of the face crop")
    for i, mask in enumerate(masks):
        expect(f"masks[{i}]", mask, (b, frames, height // 2, width // 2), "token mask on the latent grid / 2")

    if not isinstance(t, torch.Tensor):
        t = torch.tensor([float(t)])
    if t.numel() == 1:
        t = t.reshape(1).expand(b)
    elif tuple(t.shape) != (b,):
        problems.append(f"`t` has shape {_shape(t)}; expected [{b}] timesteps in [0, 1000]")
    if problems:
        raise ValueError("bad AnyTalker inputs:\n- " + "\n- ".join(problems))
    return t.to(device=x.device, dtype=torch.float32)

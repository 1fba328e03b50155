"""A micro AnyTalker DiT (a few hundred thousand parameters) for fast behaviour and loader tests."""

from __future__ import annotations

import torch

import anytalker_core as at

MICRO = dict(
    dim=32,
    ffn_dim=48,
    num_heads=2,
    num_layers=2,
    text_dim=24,
    text_len=8,
    freq_dim=16,
    clip_dim=20,
    clip_tokens=257,
    audio_window=5,
    audio_layers=2,
    audio_channels=8,
    audio_hidden=16,
    audio_tokens=4,
    audio_token_dim=12,
)


def micro_config(variant: str = "af", **changes) -> at.AnyTalkerConfig:
    return at.AnyTalkerConfig(variant=variant, **{**MICRO, **changes})


def micro_model(variant: str = "af", seed: int = 0, **changes) -> at.AnyTalkerDiT:
    torch.manual_seed(seed)
    model = at.AnyTalkerDiT(micro_config(variant, **changes))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() > 1 else 0.1) + (1.0 if "norm" in name else 0.0))
    return model.eval()


def micro_inputs(cfg: at.AnyTalkerConfig, *, batch=1, frames=3, height=6, width=8, identities=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    video_frames = 4 * (frames - 1) + 1

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    masks = []
    for i in range(identities):  # one face box per person, left to right
        m = torch.zeros(batch, frames, height // 2, width // 2)
        m[:, :, 0:2, i * 2 : i * 2 + 2] = 1.0
        masks.append(m)
    return dict(
        x=rand(batch, cfg.out_dim, frames, height, width),
        t=torch.full((batch,), 637.0),
        text=rand(batch, 5, cfg.text_dim),
        clip=rand(batch, cfg.clip_tokens, cfg.clip_dim),
        y=rand(batch, cfg.in_dim - cfg.out_dim, frames, height, width),
        audio=[
            rand(batch, video_frames, cfg.audio_window, cfg.audio_layers, cfg.audio_channels) for _ in range(identities)
        ],
        faces=[rand(batch, cfg.clip_tokens, cfg.clip_dim) for _ in range(identities)],
        masks=masks,
    )


def run(model: at.AnyTalkerDiT, inputs: dict) -> torch.Tensor:
    inputs = dict(inputs)
    with torch.no_grad():
        return model(inputs.pop("x"), inputs.pop("t"), **inputs)

"""Each person's wav2vec2 features -> the audio tokens the identity attention attends.

The input is one video frame's window per frame: [F, 5, 12, 768] (F video frames, 5 wav2vec2 frames
around each, 12 layers, 768 channels; F = 4(T-1)+1 for T latent frames). The two checkpoints project it
differently (``docs/model.md``, "The two variants"):

- ``af`` (1.3B, keys ``audio_emb.*``): 32 tokens of model width per *video* frame;
- ``legacy`` (14B, keys ``audio_proj.*``): 32 tokens of width 768 per *latent* frame.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import AnyTalkerConfig
from .layers import Operations


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
        """audio: [N, F, window, layers, channels] -> [N, F*32, dim], tokens in (frame, token) order."""
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

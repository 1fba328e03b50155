"""The pack's own socket payloads: a voice (one person's track and the encoder for it) and the identity chain.

Plain frozen dataclasses (no host imports), so the nodes' logic can be tested without ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Voice:
    """One person's speech: the host ``AUDIO`` dict and the ``AUDIO_ENCODER`` (wav2vec2-base) that encodes it.

    Encoding waits for the image-to-video node: the reference pads every track to the clip length before
    wav2vec2 sees it, so the features depend on the clip length and the timing mode chosen there.
    """

    audio: dict
    encoder: Any
    seconds: float


@dataclass(frozen=True)
class Identity:
    """One person: their voice (``None`` = a listener), their face mask ``[H, W]`` or ``[F, H, W]`` (moving), the
    image encoder for their face crop, and a start delay in seconds."""

    voice: Voice | None
    face_mask: torch.Tensor
    clip_vision: Any
    offset: float = 0.0

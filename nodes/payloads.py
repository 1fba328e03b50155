"""The pack's own socket payloads: a voice and the identity chain.

Plain frozen dataclasses (no host imports), so the nodes' logic can be tested without ComfyUI. Encoders are not
part of them: the clip's node (Image To Video, Extend, Long Video) takes the audio and image encoders once and
encodes every voice and face of the clip with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Voice:
    """One person's speech: the host ``AUDIO`` dict (``waveform`` [1, C, S], ``sample_rate``) and its length.

    Encoding waits for the clip's node: the reference pads every track to the clip length before wav2vec2 sees
    it, so the features depend on the clip length and the timing mode chosen there.
    """

    audio: dict
    seconds: float


@dataclass(frozen=True)
class Identity:
    """One person: their voice (``None`` = a listener), their face mask and a start delay in seconds.

    ``face_mask``: ``[H, W]`` (the face holds still), or ``[F, H, W]`` with one mask per video frame (a moving
    mask; the clip's node checks that F is the clip's length).
    """

    voice: Voice | None
    face_mask: torch.Tensor
    offset: float = 0.0

    @property
    def moving(self) -> bool:
        return self.face_mask.dim() == 3

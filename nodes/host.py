"""Small adapters from the host's objects to ``anytalker_core``'s protocols. Host modules are imported lazily.

- :func:`image_encoder`: a ``CLIP_VISION`` as ``picture_m11 [3, H, W] -> [1, 257, 1280]`` (the penultimate layer),
  fed exactly the reference's input (``condition.clip_input``: squashed to 224, no antialias) instead of the
  host's own preprocessing (centre crop, or an antialiased squash), so face and picture features match it;
- :func:`audio_encoder`: an ``AUDIO_ENCODER`` (wav2vec2-base from AudioEncoderLoader), loaded on its device.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..anytalker_core.encoders.image import clip_input


def image_encoder(clip_vision: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    import comfy.model_management as mm

    def encode(picture_m11: torch.Tensor) -> torch.Tensor:
        mm.load_model_gpu(clip_vision.patcher)
        pixels = clip_input(picture_m11)[None].to(clip_vision.load_device)
        out = clip_vision.model(pixel_values=pixels, intermediate_output=-2)
        return out[1].float().to(mm.intermediate_device())

    return encode


def clip_vision_output(features: torch.Tensor) -> Any:
    """The host's ``CLIP_VISION_OUTPUT`` attribute bag holding the penultimate features the Wan model reads."""
    from comfy.clip_vision import Output

    out = Output()
    out["penultimate_hidden_states"] = features
    return out


def audio_encoder(encoder: Any) -> Any:
    import comfy.model_management as mm

    from ..anytalker_core.people.audio_features import load_audio_encoder

    if getattr(encoder, "patcher", None) is not None:
        mm.load_model_gpu(encoder.patcher)
    return load_audio_encoder(encoder)

"""The standalone models the pipeline runs, and loading them from the files users have."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch


@dataclass
class Models:
    """Everything :func:`~anytalker_core.pipeline.standalone.generate` runs. ``audio_encoder``: anything
    :func:`~anytalker_core.people.audio_features.load_audio_encoder` accepts; ``text_encoder``:
    ``prompt -> [1, L, 4096]``; ``image_encoder``: ``picture [3, H, W] in [-1, 1] -> [1, 257, 1280]``; ``vae``: a
    :class:`~anytalker_core.encoders.vae.VideoVAE`."""

    dit: torch.nn.Module
    audio_encoder: Any
    text_encoder: Callable[[str], torch.Tensor]
    image_encoder: Callable[[torch.Tensor], torch.Tensor]
    vae: Any


def load_models(
    dit: Any,
    audio_encoder: Any,
    text_encoder: Any,
    image_encoder: Any,
    vae: Any,
    *,
    tokenizer: Any = None,
    dit_config: Any = None,
    dtype: torch.dtype = torch.float32,
) -> Models:
    """Load the standalone models from files (each argument may also be an already loaded model).

    ``dit``: the AnyTalker checkpoint (``load_dit``); ``audio_encoder``: wav2vec2-base (folder or .safetensors);
    ``text_encoder``: umT5-XXL (``umt5_xxl_*.safetensors``, Wan's .pth with ``tokenizer``, or an HF folder);
    ``image_encoder``: ``clip_vision_h.safetensors``; ``vae``: ``wan_2.1_vae.safetensors``. All load on the CPU;
    ``generate(device=...)`` moves each to the device while it is used. ``dtype``: the DiT's weights dtype;
    ``dit_config``: the reference's config JSON (only needed for non-standard sizes).
    """
    from ..encoders.image import load_image_encoder
    from ..encoders.text import load_text_encoder
    from ..encoders.vae import load_vae
    from ..model.loader import load_dit
    from ..people.audio_features import load_audio_encoder

    def path_like(x: Any) -> bool:
        return isinstance(x, (str, Path))

    return Models(
        dit=load_dit(dit, dit_config, device="cpu", dtype=dtype) if path_like(dit) else dit,
        audio_encoder=load_audio_encoder(audio_encoder) if path_like(audio_encoder) else audio_encoder,
        text_encoder=load_text_encoder(text_encoder, tokenizer=tokenizer) if path_like(text_encoder) else text_encoder,
        image_encoder=load_image_encoder(image_encoder) if path_like(image_encoder) else image_encoder,
        vae=load_vae(vae) if path_like(vae) else vae,
    )

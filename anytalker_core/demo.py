"""The built-in demo: the real pipeline end to end on tiny random-weight models, in seconds, with no downloads.

Every component is the real class the full-size pipeline uses, at a tiny size with fixed-seed weights:
``AnyTalkerDiT`` (2 blocks, width 64), ``transformers`` ``Wav2Vec2Model`` / ``UMT5EncoderModel`` (with the
byte-level ``ByT5Tokenizer``, which needs no vocabulary file) / ``CLIPVisionModel``, and ``diffusers``
``AutoencoderKLWan`` (base width 4). The weights are random, so the video is coloured noise (nothing of the
picture survives), not a talking person: the demo proves the path (faces found and bound, audio on the
timeline, sampling, decoding, an mp4 with the mixed voices), not the quality. Real weights go through
``generate``.

Shipped inputs (``demo_assets/``, derived from the AnyTalker repository's examples, Apache-2.0; see the README
there): two news anchors (384x256) and a 0.9 s clip of each one's voice; they take turns (``concat``).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch

from .encoders.image import CLIPImageEncoder
from .encoders.text import UMT5TextEncoder
from .encoders.vae import WanVideoVAE
from .model.config import AnyTalkerConfig
from .model.dit import AnyTalkerDiT
from .people.audio_features import AudioEncoder
from .pipeline.models import Models

ASSETS = Path(__file__).parent / "demo_assets"
IMAGE = ASSETS / "two_anchors.jpg"
AUDIO = (ASSETS / "left.wav", ASSETS / "right.wav")
PROMPT = "The image captures two news anchors, a man and a woman, reporting the weather in a studio."
MODE = "concat"  # the two voices take turns
MAX_AREA = 224 * 128  # a 224x128 video
STEPS = 12

# the tiny sizes: every width that meets another model is shared here
TEXT_DIM = 32
CLIP_DIM = 32
AUDIO_LAYERS, AUDIO_CHANNELS = 2, 32
DIT_CONFIG = AnyTalkerConfig(
    variant="af", dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=TEXT_DIM, text_len=512, freq_dim=64,
    clip_dim=CLIP_DIM, audio_layers=AUDIO_LAYERS, audio_channels=AUDIO_CHANNELS, audio_hidden=64, audio_tokens=4,
)  # fmt: skip


def seeded_weights(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every parameter from a generator seeded by ``seed`` and its name: norms 1 + 0.1 N, other vectors
    0.02 N, modulation N / sqrt(width), matrices N / sqrt(fan-in). The same on every machine and torch build."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            g = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
            n = torch.randn(param.shape, generator=g, dtype=torch.float32)
            vector = param.numel() == param.shape[0]  # [C] or [C, 1, 1, 1] (the VAE's RMS-norm gammas)
            if vector and "norm" in name:
                value = 1 + 0.1 * n
            elif vector:
                value = 0.02 * n
            elif name.endswith("modulation"):
                value = n / math.sqrt(param.shape[-1])
            else:
                value = n / math.sqrt(max(1, param[0].numel()))
            param.copy_(value)
    return model.eval()


def tiny_models(seed: int = 0, dit_config: AnyTalkerConfig = DIT_CONFIG) -> Models:
    """All five models at tiny sizes, deterministic for a given ``seed`` (about 1 M parameters in all).

    ``dit_config``: another DiT (e.g. the real block sizes, for benchmarks); the encoders get the widths it reads
    (text, image, audio layers and channels), each with one or a few tiny layers.
    """
    from diffusers import AutoencoderKLWan
    from transformers import (
        ByT5Tokenizer,
        CLIPVisionConfig,
        CLIPVisionModel,
        UMT5Config,
        UMT5EncoderModel,
        Wav2Vec2Config,
        Wav2Vec2Model,
    )

    wav2vec2 = Wav2Vec2Model(
        Wav2Vec2Config(
            hidden_size=dit_config.audio_channels, num_hidden_layers=dit_config.audio_layers, num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
            feat_extract_norm="group", do_stable_layer_norm=False,
        )
    )  # fmt: skip
    umt5 = UMT5EncoderModel(
        UMT5Config(
            vocab_size=384, d_model=dit_config.text_dim, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            feed_forward_proj="gated-gelu", dropout_rate=0.0,
        )
    )  # fmt: skip
    tower = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=dit_config.clip_dim, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            image_size=224,
            patch_size=14, hidden_act="gelu",
        )
    )  # fmt: skip
    vae = AutoencoderKLWan(base_dim=4, z_dim=16)
    for i, model in enumerate((wav2vec2, umt5, tower, vae)):
        seeded_weights(model, seed + 1000 * (i + 1))
    bytes_ = ByT5Tokenizer()
    return Models(
        dit=seeded_weights(AnyTalkerDiT(dit_config), seed),
        audio_encoder=AudioEncoder(wav2vec2),
        text_encoder=UMT5TextEncoder(umt5, lambda text: bytes_.encode(text, add_special_tokens=False)),
        image_encoder=CLIPImageEncoder(tower),
        vae=WanVideoVAE(vae),
    )

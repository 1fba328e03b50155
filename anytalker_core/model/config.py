"""The AnyTalker DiT's configuration: a typed dataclass, presets, and the reference's kwargs.

Two checkpoint variants exist (see ``docs/model.md``, "The two variants"):

- ``af``: the 1.3B model. Identity attention lives inside each block's cross-attention.
- ``legacy``: the 14B model. A MultiTalk-style audio+face attention follows the cross-attention.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

VARIANTS = ("af", "legacy")


@dataclass(frozen=True)
class AnyTalkerConfig:
    """Hyper-parameters of one AnyTalker DiT. Defaults are the 1.3B (``af``) model."""

    variant: str = "af"  # "af" (1.3B) or "legacy" (14B)
    dim: int = 1536  # transformer width
    ffn_dim: int = 8960  # feed-forward hidden width
    num_heads: int = 12  # attention heads (the real models use head_dim 128)
    num_layers: int = 30  # transformer blocks
    in_dim: int = 36  # 16 noisy-latent channels + 20 condition channels (y)
    out_dim: int = 16  # latent channels predicted
    text_dim: int = 4096  # umT5-XXL embedding width
    text_len: int = 512  # text rows after zero padding (all attended, no length mask)
    freq_dim: int = 256  # sinusoidal timestep embedding width
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (t, h, w) patch of the latent
    eps: float = 1e-6  # norm epsilon
    clip_dim: int = 1280  # image-encoder (ViT-H/14) hidden width, for clip and face features
    clip_tokens: int = 257  # image-encoder tokens (CLS + 16x16 patches)
    audio_window: int = 5  # wav2vec2 frames stacked per video frame
    audio_layers: int = 12  # wav2vec2 transformer layers kept
    audio_channels: int = 768  # wav2vec2 hidden width
    audio_hidden: int = 512  # audio projection MLP width
    audio_tokens: int = 32  # audio tokens per video frame (af) or latent frame (legacy)
    audio_token_dim: int = 768  # legacy only: width of the audio tokens fed to kv_linear
    vae_stride_t: int = 4  # video frames per latent frame (after the first)

    def __post_init__(self) -> None:
        problems = []
        if self.variant not in VARIANTS:
            problems.append(f"variant is {self.variant!r}; expected one of {VARIANTS}")
        if self.num_heads <= 0 or self.dim % self.num_heads:
            problems.append(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        elif (self.dim // self.num_heads) % 2:
            problems.append(f"head_dim {self.dim // self.num_heads} must be even for rotary embeddings")
        if self.freq_dim % 2:
            problems.append(f"freq_dim {self.freq_dim} must be even")
        if tuple(self.patch_size) != (1, 2, 2):
            problems.append(f"patch_size {tuple(self.patch_size)} is not supported; AnyTalker uses (1, 2, 2)")
        if problems:
            raise ValueError("invalid AnyTalker config: " + "; ".join(problems))
        object.__setattr__(self, "patch_size", tuple(self.patch_size))

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def audio_feature_dim(self) -> int:
        """Flattened width of one video frame's audio window: 5 * 12 * 768 = 46080."""
        return self.audio_window * self.audio_layers * self.audio_channels

    def replace(self, **changes: Any) -> "AnyTalkerConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, AnyTalkerConfig] = {
    "1.3B": AnyTalkerConfig(variant="af", dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "14B": AnyTalkerConfig(variant="legacy", dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
}

# Reference constructor kwargs (HKUST-C4G/AnyTalker ``WanModel``) -> our field names.
_REFERENCE_FIELDS = {
    "dim": "dim",
    "ffn_dim": "ffn_dim",
    "num_heads": "num_heads",
    "num_layers": "num_layers",
    "in_dim": "in_dim",
    "out_dim": "out_dim",
    "text_dim": "text_dim",
    "text_len": "text_len",
    "freq_dim": "freq_dim",
    "patch_size": "patch_size",
    "eps": "eps",
    "audio_window": "audio_window",
    "intermediate_dim": "audio_hidden",
    "context_tokens": "audio_tokens",
    "audio_output_dim": "audio_token_dim",
    "vae_scale": "vae_stride_t",
}
# Reference kwargs that must keep the value the published models use (we implement nothing else).
_REFERENCE_FIXED = {
    "qk_norm": True,
    "cross_attn_norm": True,
    "window_size": [-1, -1],
    "temporal_align": True,
    "norm_input_visual": True,
    "norm_output_audio": True,
}
# Reference kwargs that do not change inference (training or attention-mode switches).
_REFERENCE_IGNORED = {"use_concat_attention", "_class_name", "_diffusers_version"}


def config_from_reference(kwargs: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """Translate the reference's constructor kwargs (a dict or a JSON file) into our field names.

    Our own field names (``AnyTalkerConfig``) are accepted too.

    Returns only the fields the kwargs name, so the caller can check them against a checkpoint.
    Raises ``ValueError`` naming every kwarg that is unknown or has a value we do not implement.
    """
    source = "config"
    if isinstance(kwargs, (str, Path)):
        source = str(kwargs)
        try:
            kwargs = json.loads(Path(kwargs).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {source}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"config file {source} is not valid JSON: {err}") from None
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"{source}: expected a dict of constructor kwargs, got {type(kwargs).__name__}")

    fields: dict[str, Any] = {}
    problems = []
    model_type = kwargs.get("model_type", "a2v_af")
    if model_type != "a2v_af":
        problems.append(f"model_type is {model_type!r}; AnyTalker checkpoints use 'a2v_af'")
    if "legacy_audio_cross_attn" in kwargs:
        fields["variant"] = "legacy" if kwargs["legacy_audio_cross_attn"] else "af"
    own_fields = {f.name for f in dataclasses.fields(AnyTalkerConfig)}
    for key, value in kwargs.items():
        if key in _REFERENCE_FIELDS or key in own_fields:
            name = _REFERENCE_FIELDS.get(key, key)
            fields[name] = tuple(value) if name == "patch_size" else value
        elif key in _REFERENCE_FIXED:
            expected = _REFERENCE_FIXED[key]
            if (list(value) if isinstance(value, (list, tuple)) else value) != expected:
                problems.append(f"{key}={value!r} is not supported (the published models use {expected!r})")
        elif key not in _REFERENCE_IGNORED and key not in ("model_type", "legacy_audio_cross_attn"):
            problems.append(f"unknown key {key!r}")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    return fields

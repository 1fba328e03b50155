"""Reading a wav2vec2 encoder's weights: a Hugging Face folder, a single .safetensors / .bin file (config from
config.json beside it or inferred from a base-sized model's shapes), checked to be the size AnyTalker needs."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .audio import AudioError

log = logging.getLogger("AnyTalker")

BASE_LAYERS, BASE_CHANNELS = 12, 768  # wav2vec2-base, what the AnyTalker checkpoints were trained with
KEY_PREFIXES = ("wav2vec2.", "model.")  # ComfyUI's audio_encoders files, Wav2Vec2ForCTC checkpoints


def hidden_size(model: nn.Module) -> int:
    """The transformer's width (``transformers`` config, or ComfyUI's wav2vec2 from its last layer norm)."""
    if hasattr(model, "config"):
        return int(model.config.hidden_size)
    return int(model.encoder.layer_norm.weight.shape[0])


def check_size(model: nn.Module, source: str) -> None:
    """Refuse wav2vec2-large-style models: AnyTalker's audio MLP expects base features (12 x 768)."""
    layers, channels = len(model.encoder.layers), hidden_size(model)
    stable = bool(getattr(getattr(model, "config", None), "do_stable_layer_norm", False))
    if stable or channels == 1024 or layers == 24:
        raise AudioError(
            f"{source}: this wav2vec2 has {layers} layers x {channels} channels (a large model); AnyTalker needs "
            f"wav2vec2-base ({BASE_LAYERS} layers x {BASE_CHANNELS}), e.g. facebook/wav2vec2-base-960h"
        )
    if (layers, channels) != (BASE_LAYERS, BASE_CHANNELS):
        log.warning(
            "%s: wav2vec2 with %d layers x %d channels; the AnyTalker DiT expects %d x %d",
            source,
            layers,
            channels,
            BASE_LAYERS,
            BASE_CHANNELS,
        )


def load_wav2vec2(path: Path) -> nn.Module:
    """A ``transformers.Wav2Vec2Model`` (eval mode) from ``path`` (see the module docstring)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    folder = path if path.is_dir() else path.parent
    weights = _weight_files(path)
    state = _read_weights(weights)
    config_file = folder / "config.json"
    try:
        fields = json.loads(config_file.read_text()) if config_file.exists() else _infer_config(state, str(path))
        model = Wav2Vec2Model(Wav2Vec2Config(**fields))
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (ValueError, TypeError, RuntimeError) as err:  # a config that is not JSON, shapes that do not fit
        if isinstance(err, AudioError):
            raise
        detail = str(err).strip().split("\n")[0][:200]
        raise AudioError(f"{path}: not a wav2vec2 checkpoint that fits its config ({detail})") from None
    missing = [k for k in missing if k != "masked_spec_embed"]  # training-only, absent from many files
    if missing:
        raise AudioError(
            f"{path}: not a wav2vec2 checkpoint that fits its config: {len(missing)} missing keys "
            f"({', '.join(missing[:5])}); unexpected: {', '.join(unexpected[:5]) or 'none'}"
        )
    return model.eval()


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise AudioError(f"{path}: no .safetensors or pytorch_model.bin weights in this folder")
    return files


def _read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    from ..weights import CheckpointError, read_file

    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(read_file(file))  # safetensors, or a weights-only pickle: never runs code
        except CheckpointError as err:
            raise AudioError(f"wav2vec2: {err}") from None
    for prefix in KEY_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    return state


def _infer_config(state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """wav2vec2 config fields from tensor shapes (no config.json): base-style models only."""
    if "encoder.layer_norm.weight" not in state or "feature_projection.projection.weight" not in state:
        raise AudioError(f"{source}: not a wav2vec2 checkpoint (no encoder.layer_norm / feature_projection keys)")
    hidden = state["encoder.layer_norm.weight"].shape[0]
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
    convs = sorted(
        (int(m.group(1)), v.shape)
        for k, v in state.items()
        if (m := re.match(r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight$", k))
    )
    pos = next(
        v.shape
        for k, v in state.items()
        if k.startswith("encoder.pos_conv_embed.conv.") and v.dim() == 3 and v.shape[0] == hidden
    )
    layer_norm_convs = sum(
        k.startswith("feature_extractor.conv_layers.") and k.endswith("layer_norm.weight") for k in state
    )
    if layer_norm_convs > 1 or "encoder.layers.0.final_layer_norm.weight" not in state:
        raise AudioError(f"{source}: not a wav2vec2-base-style checkpoint; put its config.json beside it")
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=state["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0],
        conv_dim=tuple(shape[0] for _, shape in convs),
        conv_kernel=tuple(shape[2] for _, shape in convs),
        conv_stride=(5, 2, 2, 2, 2, 2, 2)[: len(convs)],
        conv_bias="feature_extractor.conv_layers.0.conv.bias" in state,
        feat_extract_norm="group",
        num_conv_pos_embeddings=pos[2],
        num_conv_pos_embedding_groups=hidden // pos[1],
        do_stable_layer_norm=False,
    )

"""Loading the AnyTalker DiT: state-dict keys, the configuration from tensor shapes, and the model itself.

Files are read by :mod:`anytalker_core.weights` (the published ``.pth`` files, ``{'model': state_dict}``,
safetensors files and shard folders, state dicts in memory). The configuration comes from the tensor shapes
(never the file name); an explicit config is checked against them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..weights import CheckpointError, StateDict, read_tensors
from .config import AnyTalkerConfig, config_from_reference
from .dit import AnyTalkerDiT

# Prefixes that other tools put in front of the Wan keys (ComfyUI-saved files, DataParallel).
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.")
REAL_HEAD_DIM = 128  # head size of both published models; num_heads = dim / 128 unless configured


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> tuple[StateDict, str]:
    """Read a DiT checkpoint into a flat state dict with normalised keys. Returns (state_dict, source name)."""
    state, name = read_tensors(source)
    return normalize_keys(state), name


def normalize_keys(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Strip a known prefix (``model.diffusion_model.``, ...) and drop what is not under it."""
    for prefix in KEY_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


# ---------------------------------------------------------------- configuration from shapes


def _shape(state: StateDict, key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(
            f"{source}: key {key!r} not found; this does not look like an AnyTalker/Wan DiT checkpoint "
            f"(first keys: {sorted(state)[:5]})"
        )
    return tuple(state[key].shape)


def infer_variant(state: StateDict, source: str = "checkpoint") -> str:
    """``af`` if the 1.3B audio MLP is present, ``legacy`` if the 14B audio block is; else an error."""
    if "audio_emb.proj1.weight" in state:
        return "af"
    if "audio_proj.proj1_vf.weight" in state or "blocks.0.audio_cross_attn.kv_linear.weight" in state:
        return "legacy"
    if "patch_embedding.weight" in state:
        raise CheckpointError(
            f"{source}: this is a plain Wan2.1 model without AnyTalker's audio weights (no audio_emb.* or "
            "audio_proj.* keys); load an AnyTalker checkpoint (1_3B-single-v1.pth or 14B-multi-v1.pth)"
        )
    _shape(state, "patch_embedding.weight", source)  # raises with the "not a DiT" message
    raise AssertionError("unreachable")


def infer_config_fields(state: StateDict, source: str = "checkpoint") -> dict[str, Any]:
    """Every config field that the tensor shapes determine, with the key each was read from."""
    variant = infer_variant(state, source)
    patch = _shape(state, "patch_embedding.weight", source)
    dim = patch[0]
    layers = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    fields: dict[str, Any] = {
        "variant": variant,
        "dim": dim,
        "in_dim": patch[1],
        "patch_size": patch[2:],
        "num_layers": max(layers) + 1 if layers else 0,
        "ffn_dim": _shape(state, "blocks.0.ffn.0.weight", source)[0],
        "text_dim": _shape(state, "text_embedding.0.weight", source)[1],
        "freq_dim": _shape(state, "time_embedding.0.weight", source)[1],
        "out_dim": _shape(state, "head.head.weight", source)[0] // (patch[2] * patch[3] * patch[4]),
        "clip_dim": _shape(state, "img_emb.proj.1.weight", source)[1],
    }
    if variant == "af":
        hidden, _ = _shape(state, "audio_emb.proj1.weight", source)
        fields["audio_hidden"] = hidden
        fields["audio_tokens"] = _shape(state, "audio_emb.proj3.weight", source)[0] // dim
    else:
        fields["audio_hidden"] = _shape(state, "audio_proj.proj1.weight", source)[0]
        token_dim = _shape(state, "audio_proj.norm.weight", source)[0]
        fields["audio_token_dim"] = token_dim
        fields["audio_tokens"] = _shape(state, "audio_proj.proj3.weight", source)[0] // token_dim
    return fields


def resolve_config(
    state: StateDict, config: AnyTalkerConfig | Mapping[str, Any] | str | Path | None, source: str = "checkpoint"
) -> AnyTalkerConfig:
    """The config for a state dict: from its shapes, checked against an explicit config if given."""
    inferred = infer_config_fields(state, source)
    if isinstance(config, AnyTalkerConfig):
        given = {k: getattr(config, k) for k in config.__dataclass_fields__}
    elif config is None:
        given = {}
    else:
        given = config_from_reference(config)
    conflicts = [
        f"{name}: config says {given[name]!r}, weights have {value!r}"
        for name, value in inferred.items()
        if name in given and given[name] != value
    ]
    if conflicts:
        raise CheckpointError(f"{source}: config does not match the weights: " + "; ".join(conflicts))
    fields = {**given, **inferred}
    if "num_heads" not in fields:
        if fields["dim"] % REAL_HEAD_DIM:
            raise CheckpointError(
                f"{source}: num_heads cannot be read from the weights and dim {fields['dim']} is not a multiple of "
                f"{REAL_HEAD_DIM} (the head size of the published models); give the reference's config JSON with its "
                "num_heads (--config / --dit-config on the command line, config= in Python)"
            )
        fields["num_heads"] = fields["dim"] // REAL_HEAD_DIM
    try:
        return AnyTalkerConfig(**fields)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: {err}") from None


# ---------------------------------------------------------------- building the model


def _describe(keys: list[str], what: str) -> str:
    shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
    return f"{len(keys)} {what} ({shown})"


def check_keys(expected: Mapping[str, torch.Size], state: StateDict, source: str) -> None:
    """Raise one error listing missing, unexpected and mis-shaped keys together."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} expected {list(expected[k])} found {list(state[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(_describe(missing, "missing keys"))
    if unexpected:
        problems.append(_describe(unexpected, "unexpected keys"))
    if misshaped:
        problems.append(_describe(misshaped, "mis-shaped keys"))
    if problems:
        raise CheckpointError(f"{source}: the weights do not fit the model: " + "; ".join(problems))


def load_dit(
    source: str | Path | Mapping[str, torch.Tensor],
    config: AnyTalkerConfig | Mapping[str, Any] | str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    **model_kwargs: Any,
) -> AnyTalkerDiT:
    """Load an AnyTalker DiT from a checkpoint file, a folder of shards or a state dict.

    ``config``: the reference's constructor kwargs (dict or JSON file) or an ``AnyTalkerConfig``;
    checked against the weights. Without it, everything is inferred from shapes and num_heads is
    dim / 128 (as in both published models). A folder's ``config.json`` is used when present.
    The model is built on the meta device and takes the tensors as its parameters, cast to ``dtype``
    on ``device``, so a large file is never held twice. ``model_kwargs`` go to ``AnyTalkerDiT``
    (``operations``, ``attention``).
    """
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype {dtype} is not supported; use torch.float32, torch.bfloat16 or torch.float16")
    state, name = read_state_dict(source)
    if config is None and not isinstance(source, Mapping) and Path(source).is_dir():
        folder_config = Path(source) / "config.json"
        config = folder_config if folder_config.exists() else None
    cfg = resolve_config(state, config, name)
    with torch.device("meta"):
        model = AnyTalkerDiT(cfg, dtype=dtype, **model_kwargs)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_keys(expected, state, name)
    for key in list(state):
        state[key] = state[key].to(device=device, dtype=dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.requires_grad_(False).eval()

"""Reading weight files safely: the one place that opens checkpoints, for the DiT and the encoders alike.

Accepts ``.pth`` / ``.pt`` / ``.bin`` pickles (read with ``weights_only=True`` and ``mmap=True``, never
unpickling code), single ``.safetensors`` files, folders of safetensors shards (with or without an index),
and state dicts in memory. ComfyUI's scaled-fp8 files are turned back into plain weights by :func:`dequantize`.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

# Containers around the state dict in torch pickles.
CONTAINER_KEYS = ("model", "state_dict", "module")

StateDict = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and what is wrong."""


def _read_torch(path: Path) -> Any:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            # files from torch < 1.6 (legacy format) cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = str(err).split("WeightsUnpickler error:")[-1].strip().split("\n")[0][:240]
        if "Unsupported global" in str(err):
            raise CheckpointError(
                f"{path}: refused to load: this pickle needs code execution, and checkpoints are only loaded "
                f"with weights_only=True ({detail}). Use the official file, or convert it to .safetensors in an "
                "environment you trust."
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({detail})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from None


def _read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({err})") from None


def _unwrap(obj: Any, source: str) -> StateDict:
    """Find the state dict inside a loaded pickle (``{'model': sd}`` for the published files)."""
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _unwrap(obj[key], source)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a state dict, found a {type(obj).__name__}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source}: no tensors found (top-level keys: {sorted(map(str, obj))[:8]})")
    return tensors


def _folder_files(folder: Path) -> list[Path]:
    index = sorted(folder.glob("*.safetensors.index.json"))
    if index:
        weight_map = json.loads(index[0].read_text()).get("weight_map", {})
        return [folder / name for name in sorted(set(weight_map.values()))]
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return shards
    pickles = sorted(p for ext in ("*.pth", "*.pt", "*.ckpt", "*.bin") for p in folder.glob(ext))
    if len(pickles) == 1:
        return pickles
    raise CheckpointError(
        f"{folder}: expected .safetensors shards (or one .pth file) in this folder, found "
        f"{[p.name for p in pickles] or 'none'}"
    )



def read_tensors(source: str | Path | Mapping[str, torch.Tensor]) -> tuple[StateDict, str]:
    """Every tensor of a checkpoint (a file, a folder of shards, or a state dict), keys as stored.

    Returns (state_dict, source name). Pickles are read with ``weights_only=True``; raises ``CheckpointError``
    on unreadable files and ``FileNotFoundError`` when the path does not exist.
    """
    if isinstance(source, Mapping):
        return _unwrap(source, "state dict"), "state dict"
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    files = _folder_files(path) if path.is_dir() else [path]
    state: StateDict = {}
    for file in files:
        if not file.exists():
            raise CheckpointError(f"{path}: shard {file.name} named in the index is missing")
        if file.suffix == ".safetensors":
            part = _read_safetensors(file)
        else:
            part = _unwrap(_read_torch(file), str(file))
        state.update(part)
    return state, str(path)



_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
_QUANT_EXTRAS = (".scale_input", ".input_scale", ".comfy_quant")


def dequantize(state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> StateDict:
    """ComfyUI's scaled fp8 files -> plain weights: each fp8 ``*.weight`` times its ``*.scale_weight`` (or
    ``*.weight_scale``), in bfloat16; the scale tensors and the ``scaled_fp8`` marker are dropped. Other tensors
    pass unchanged. A per-row scale ``[out]`` or ``[out, 1]`` broadcasts over the rows."""
    scales = {k[: -len(s)]: v for k, v in state.items() for s in _SCALE_SUFFIXES if k.endswith(s)}
    out: StateDict = {}
    for key, value in state.items():
        if key == "scaled_fp8" or key.endswith(_SCALE_SUFFIXES + _QUANT_EXTRAS):
            continue
        if value.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            scale = scales.get(key.removesuffix(".weight"))
            value = value.to(torch.float32)
            if scale is not None:
                scale = scale.to(torch.float32)
                if scale.numel() > 1:
                    if scale.shape[0] != value.shape[0]:
                        raise CheckpointError(
                            f"{source}: scale of {key!r} has shape {list(scale.shape)}, which does not fit the "
                            f"weight's {list(value.shape)}"
                        )
                    scale = scale.reshape(-1, *[1] * (value.dim() - 1))
                value = value * scale
            value = value.to(torch.bfloat16)
        out[key] = value
    return out

"""Reading weight files safely: the one place that opens checkpoints, for the DiT and the encoders alike.

Accepts ``.pth`` / ``.pt`` / ``.bin`` pickles (read with ``weights_only=True`` and ``mmap=True``, never
unpickling code), single ``.safetensors`` files, folders of safetensors shards (with or without an index),
and state dicts in memory. ComfyUI's scaled-fp8 files are turned back into plain weights by :func:`dequantize`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

# Containers around the state dict in torch pickles.
CONTAINER_KEYS = ("model", "state_dict", "module")

StateDict = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and what is wrong."""


# What a file that is not a checkpoint usually is, from its first bytes (for the one-line refusal).
_KINDS = (
    (b"RIFF", "a WAV audio file"),
    (b"ID3", "an MP3 audio file"),
    (b"fLaC", "a FLAC audio file"),
    (b"OggS", "an Ogg audio file"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
)


def file_kind(path: Path) -> str | None:
    """What ``path`` looks like when it is plainly not a checkpoint ("an empty file", "a PNG image", "a text
    file", ...); None when it may be one."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if not head:
        return "an empty file"
    for magic, kind in _KINDS:
        if head.startswith(magic):
            return kind
    if head[4:8] == b"ftyp":
        return "an MP4/M4A media file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return "a JSON file" if text.lstrip().startswith(("{", "[")) else "a text file"
    return None


def _pickle_globals(path: Path) -> list[str] | None:
    """The globals a plain pickle would import, read without running it (``pickletools``); None when the file
    is not a pickle at all."""
    import pickletools

    names, strings = [], []
    try:
        with open(path, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # not a pickle (random bytes, a zip that is not torch's, ...)
        return None
    return names


def refuse_code(path: Path | str, err: BaseException) -> CheckpointError | None:
    """The refusal for a file that asks to run code when loaded (torch's weights-only unpickler, or a scan of a
    plain pickle, found a global it would import), naming what it asked for; None for other failures. Never
    passes on torch's advice to load the file unsafely."""
    text = str(err)
    wanted = re.search(r"GLOBAL ([\w.]+)", text)
    if wanted is None and "Unsupported operand" in text:  # a plain pickle torch's safe loader cannot parse
        found = [g for g in (_pickle_globals(Path(path)) or []) if not g.startswith(("torch.", "collections."))]
        wanted = re.match(r"(.+)", found[0]) if found else None
    if wanted is None:
        return None
    return CheckpointError(
        f"{path}: refused: loading this file would run code (it asks for {wanted.group(1)}), so it was not loaded; "
        "checkpoints are only read as plain tensors. Use the official file, or a .safetensors copy from a source "
        "you trust."
    )


def _read_torch(path: Path) -> Any:
    kind = file_kind(path)
    if kind is not None:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint: it is {kind}")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            # files from torch < 1.6 (legacy format) cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any file content must end in one line, never a traceback
        refused = refuse_code(path, err)
        if refused is not None:
            raise refused from None
        if "Unsupported operand" in str(err) or "PytorchStreamReader" in str(err):
            detail = "not a torch zip archive or a pickle of tensors; it may be truncated or of another kind"
        else:
            detail = str(err).strip().split("\n")[0][:200] or type(err).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({detail})") from None


def _read_safetensors(path: Path) -> StateDict:
    from safetensors.torch import load_file

    kind = file_kind(path)
    if kind is not None:
        raise CheckpointError(f"{path}: not a .safetensors file: it is {kind}")
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # SafetensorError, OSError, a header that is not JSON, ...
        detail = str(err).strip().split("\n")[0][:200] or type(err).__name__
        raise CheckpointError(f"{path}: not a readable .safetensors file ({detail})") from None


def inside(folder: Path, name: str, what: str) -> Path:
    """``folder / name``, refused unless the name stays inside ``folder`` (no ``..``, no absolute path). Links in
    the folder are followed: a Hugging Face cache snapshot is a folder of links to its blobs."""
    root = Path(os.path.abspath(folder))
    target = Path(os.path.normpath(root / name))
    if target != root and root not in target.parents:
        raise CheckpointError(f"{what}: {name!r} points outside {folder}; refused")
    return target


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
        try:
            weight_map = json.loads(index[0].read_text()).get("weight_map", {})
        except (ValueError, AttributeError) as err:
            raise CheckpointError(f"{index[0]}: not a readable shard index ({err})") from None
        return [inside(folder, str(name), str(index[0])) for name in sorted(set(weight_map.values()))]
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
        state.update(read_file(file))
    return state, str(path)


def read_file(file: Path) -> StateDict:
    """The tensors of one weights file: safetensors by its suffix, anything else as a weights-only pickle."""
    if file.suffix == ".safetensors":
        return _read_safetensors(file)
    return _unwrap(_read_torch(file), str(file))


def library_folder(source: Any) -> Path | None:
    """``source`` as a Path when it is a Hugging Face / diffusers folder (one with a ``config.json``), else None."""
    if isinstance(source, Mapping):
        return None
    path = Path(source).expanduser()
    return path if path.is_dir() and (path / "config.json").is_file() else None


def from_folder(model_class: Any, path: Path, what: str, **options: Any) -> Any:
    """``model_class.from_pretrained(path)`` offline, through the library's own weights-only loading; any failure
    (a file that would run code included) ends in one line."""
    try:
        return model_class.from_pretrained(str(path), local_files_only=True, **options)
    except Exception as err:  # any folder content ends in one line
        raise load_error(path, err, what) from None


def load_error(path: Path | str, err: BaseException, what: str) -> CheckpointError:
    """One line for a library loader's failure on ``path`` (``from_pretrained`` of a folder): the code refusal when
    the file asked to run code, else what the folder is not."""
    refused = refuse_code(path, err)
    if refused is not None:
        return refused
    detail = str(err).strip().split("\n")[0][:200] or type(err).__name__
    return CheckpointError(f"{path}: not a loadable {what} ({detail})")


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

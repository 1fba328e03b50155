"""Dev script: run the pack inside a real, headless ComfyUI on random-weight models (no downloads).

    # 1. with the host's Python, write the models into its folders (once, a few GB):
    HOST_PYTHON tests/tools/host_smoke.py prepare --comfy PATH/TO/ComfyUI
    # 2. start the host (python main.py --cpu --port 8188), then queue the graph and wait for it:
    python tests/tools/host_smoke.py run --url http://127.0.0.1:8188
    # 3. or run a shipped workflow with the smoke models swapped in:
    python tests/tools/host_smoke.py run --workflow workflows/anytalker_three_people.json
    # 4. real sizes: random files of the README model table's sizes and layouts, written once into a cache
    #    outside the repo (about 16 GB) and linked into the host's folders; then a shipped workflow at 96x64:
    HOST_PYTHON tests/tools/host_smoke.py prepare --comfy PATH/TO/ComfyUI --real-size --cache DIR
    python tests/tools/host_smoke.py run --real-size --workflow workflows/anytalker_two_people_together.json \
        [--weight-dtype fp8_e4m3fn]
    python tests/tools/host_smoke.py sizes --cache DIR  # only the README's sizes against the cache
    # 5. that the run does fail: a model name the host does not list, and a VAE in the wrong layout
    python tests/tools/host_smoke.py run --self-check [--real-size --workflow workflows/....json]

The graph uses every AnyTalker node and the host's own loaders: AudioEncoderLoader (a random wav2vec2-base),
CLIPVisionLoader (a random ViT-L/14: the smallest tower the host recognises), VAELoader (a random Wan 2.1 VAE
built from the host's own class), and, standing in for the 11 GB umT5-XXL, a random CLIP-L text encoder
(CLIPLoader type stable_diffusion): the DiT is built with the matching widths (text 768, image 1024). It samples
twice, with the AnyTalker Sampler and with the host's KSampler, and saves an mp4 with the mixed voices.
Random weights make noise; the check is that every node runs, the host's loaders, memory manager, progress and
video saving accept our types, and the outputs have the right frame count.

A run fails on any node the host refuses when the prompt is queued, on a failed prompt, on any "missing" /
"unexpected" / "left over" key line the host logs while loading (it stops the prompt at the first one), and on
an mp4 without frames or sound or with the wrong frame count. It prints the time and, for a host on this
machine, its process's memory (anonymous, file-backed and peak resident, from /proc/PID/status).

Real-size files are derived from the classes that load them: the DiT from ours, umT5-XXL, clip_vision_h and the
Wan 2.1 VAE from the host's own (scaled fp8: every Linear weight in float8_e4m3fn with a float32 scale), and
wav2vec2-base-960h from transformers' Wav2Vec2ForCTC. The umT5 file's ``spiece_model`` is a small SentencePiece
model trained on the shipped workflows' prompts, not umT5's own 256k-piece tokenizer. ``prepare --real-size`` and
``sizes`` check every file size in the README's model tables against what was generated (within 5%), naming the
line of a wrong size or name.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO.parent / "shared" / "examples"
INPUTS = ("1p-0.png", "2p-0.png", "2p-1.png", "2p-1-left.wav", "2p-1-right.wav")


def _seeded(module, seed: int) -> None:
    import torch

    with torch.no_grad():
        for name, param in module.named_parameters():
            g = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
            n = torch.randn(param.shape, generator=g)
            vector = param.numel() == param.shape[0]
            if vector and ("norm" in name or "gamma" in name):
                param.copy_(1 + 0.1 * n)
            elif vector:
                param.copy_(0.02 * n)
            else:
                param.copy_(n / math.sqrt(max(1, param[0].numel())))


def _import_host(comfy_dir: Path) -> None:
    """Make the host's ``comfy`` package and our pack importable, as the host itself would set them up."""
    sys.path.insert(0, str(comfy_dir))
    sys.path.insert(0, str(REPO))
    sys.argv = [sys.argv[0], "--cpu"]  # the host reads its command line on import, when told to
    import comfy.options

    comfy.options.enable_args_parsing()


def _replace(path: Path, write) -> None:
    """``write(temporary path)``, then move it over ``path``: a file hard-linked into other host copies is
    replaced, never rewritten in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
        tmp = Path(folder) / path.name  # the same name: a torch zip names its records after the file
        write(tmp)
        os.replace(tmp, path)


def prepare(comfy_dir: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        Wav2Vec2Config,
        Wav2Vec2Model,
    )

    _import_host(comfy_dir)
    from anytalker_core import AnyTalkerConfig, AnyTalkerDiT

    models = comfy_dir / "models"

    def save(module, path: Path, prefix: str = "", dtype=torch.float16) -> None:
        state = {prefix + k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()}
        _replace(path, lambda tmp: save_file(state, str(tmp)))
        sys.stdout.write(f"wrote {path} ({sum(v.numel() for v in state.values()) / 1e6:.0f} M)\n")

    dit = AnyTalkerDiT(AnyTalkerConfig(dim=256, ffn_dim=256, num_heads=2, num_layers=1, text_dim=768, clip_dim=1024))
    _seeded(dit, 0)
    save(dit, models / "anytalker" / "anytalker_smoke.safetensors", dtype=torch.float32)
    lora = {}  # a Wan-style LoRA on every self-attention projection, to check that LoraLoaderModelOnly applies
    for name, param in dit.named_parameters():
        if ".self_attn." in name and name.endswith(".weight") and param.dim() == 2:
            base = "diffusion_model." + name.removesuffix(".weight")
            lora[f"{base}.lora_down.weight"] = torch.randn(4, param.shape[1]) * 0.01
            lora[f"{base}.lora_up.weight"] = torch.randn(param.shape[0], 4) * 0.01
    _replace(models / "loras" / "anytalker_smoke_lora.safetensors", lambda tmp: save_file(lora, str(tmp)))
    wav2vec2 = Wav2Vec2Model(Wav2Vec2Config())
    _seeded(wav2vec2, 1)
    save(wav2vec2, models / "audio_encoders" / "wav2vec2_smoke.safetensors", "wav2vec2.")
    # with its projection, as the host's CLIP vision files have it (else 0.3.64 warns "missing clip vision")
    tower = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096,
                                                           num_hidden_layers=24, num_attention_heads=16,
                                                           patch_size=14, projection_dim=768))  # fmt: skip
    _seeded(tower, 2)
    keys = tower.state_dict()
    prefix = "" if next(iter(keys)).startswith("vision_model.") else "vision_model."
    save(tower, models / "clip_vision" / "clip_vision_smoke.safetensors", prefix)
    # with its projection, as the host's CLIP-L files have it (else the host warns "clip missing: text_projection")
    text = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                      num_attention_heads=12, max_position_embeddings=77,
                                                      projection_dim=768))  # fmt: skip
    _seeded(text, 3)
    keys = text.state_dict()
    prefix = "" if "text_model." in next(iter(keys)) else "text_model."
    save(text, models / "text_encoders" / "clip_l_smoke.safetensors", prefix)
    # the layout the host's own VAELoader builds for a Wan 2.1 VAE (comfy/sd.py): its time downsampling is
    # [False, True, True], not the class default, or the host runs with 4 tensors left uninitialised
    for name, wrong in ((SMOKE_VAE, False), (SMOKE_WRONG_VAE, True)):
        _write_safetensors(models / "vae" / name, _wan21_vae_layout(torch.float16, wrong_layout=wrong), seed=4)
        sys.stdout.write(f"wrote {models / 'vae' / name}{' (the wrong layout, for --self-check)' if wrong else ''}\n")
    _prepare_inputs(comfy_dir)


def _prepare_inputs(comfy_dir: Path) -> None:
    import numpy as np
    import torch

    from anytalker_core.images import read_image
    from anytalker_core.pipeline.writer import write_png

    inputs = comfy_dir / "input"
    for name in INPUTS:
        shutil.copy(EXAMPLES / name, inputs / name)
    # three people for the three-person workflow: the two anchors and the left person of 2p-0, side by side
    anchors, pair = read_image(EXAMPLES / "2p-1.png"), read_image(EXAMPLES / "2p-0.png")
    left = torch.from_numpy(np.ascontiguousarray(pair[:, :426])).permute(2, 0, 1)[None].float()
    left = torch.nn.functional.interpolate(left, size=(1024, 908), mode="bicubic")[0].permute(1, 2, 0)
    three = np.concatenate([anchors, left.clamp(0, 255).round().byte().numpy()], axis=1)
    write_png(inputs / "three_people.png", three, overwrite=True)


# ---------------------------------------------------------------- real-size files: layouts


@dataclass(frozen=True)
class Entry:
    """One tensor of a file: its key, shape and stored dtype; ``value`` for fixed content (the tokenizer, the fp8
    scales), else seeded random numbers scaled as a trained layer's would be."""

    key: str
    shape: tuple[int, ...]
    dtype: Any
    value: Any = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


SMOKE_VAE, SMOKE_WRONG_VAE = "wan_vae_smoke.safetensors", "wan_vae_wrong_layout.safetensors"
REAL_WRONG_VAE = "wan_2.1_vae_wrong_layout.safetensors"
DIT_PARAMETERS = {"1.3B": 1_900_507_712, "14B": 20_987_819_584}  # shared/reference/real_checkpoint_layouts.md


def _meta_entries(module, dtype) -> list[Entry]:
    return [Entry(k, tuple(v.shape), dtype) for k, v in module.state_dict().items()]


def _dit_layout(preset: str) -> list[Entry]:
    """The published checkpoint: ``{"model": state_dict}`` in float32, Wan key names (our DiT's own)."""
    import torch

    from anytalker_core import AnyTalkerDiT
    from anytalker_core.model.config import PRESETS

    with torch.device("meta"):
        dit = AnyTalkerDiT(PRESETS[preset])
    entries = _meta_entries(dit, torch.float32)
    count = sum(math.prod(e.shape) for e in entries)
    if count != DIT_PARAMETERS[preset]:
        raise SystemExit(f"the {preset} DiT has {count:,} parameters; the reference layout has "
                         f"{DIT_PARAMETERS[preset]:,} (shared/reference/real_checkpoint_layouts.md)")  # fmt: skip
    return entries


def _umt5_layout(tokenizer: bytes | None) -> list[Entry]:
    """umT5-XXL as the host's own T5 class holds it (its umt5_config_xxl.json). With ``tokenizer``: ComfyUI's
    scaled-fp8 file (every Linear weight in float8_e4m3fn with a float32 ``scale_weight``, the rest bfloat16, a
    ``scaled_fp8`` marker and the ``spiece_model`` tokenizer bytes); without: the fp16 file, for its size only."""
    import comfy.ops
    import comfy.text_encoders.t5 as t5
    import torch

    config = json.loads((Path(t5.__file__).parent / "umt5_config_xxl.json").read_text())
    with torch.device("meta"):
        model = t5.T5(config, torch.bfloat16, "meta", comfy.ops.manual_cast)
    if tokenizer is None:
        return _meta_entries(model, torch.float16)
    fp8 = torch.float8_e4m3fn
    linears = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    entries = []
    for key, value in model.state_dict().items():
        layer = key.rsplit(".", 1)[0]
        if layer in linears and key.endswith(".weight"):
            entries.append(Entry(key, tuple(value.shape), fp8))
            scale = torch.tensor(1 / math.sqrt(value.shape[1]), dtype=torch.float32)
            entries.append(Entry(f"{layer}.scale_weight", (), torch.float32, scale))
        else:
            entries.append(Entry(key, tuple(value.shape), torch.bfloat16))
    spiece = torch.frombuffer(bytearray(tokenizer), dtype=torch.uint8)
    return entries + [Entry("scaled_fp8", (0,), fp8, torch.empty(0, dtype=fp8)),
                      Entry("spiece_model", (len(tokenizer),), torch.uint8, spiece)]  # fmt: skip


def _clip_vision_h_layout() -> list[Entry]:
    """clip_vision_h: the host's CLIPVisionModelProjection with its clip_vision_config_h.json, in float16."""
    import comfy.clip_model
    import comfy.ops
    import torch

    config = json.loads((Path(comfy.clip_model.__file__).parent / "clip_vision_config_h.json").read_text())
    with torch.device("meta"):
        model = comfy.clip_model.CLIPVisionModelProjection(config, torch.float16, "meta", comfy.ops.manual_cast)
    return _meta_entries(model, torch.float16)


def _wan21_vae_layout(dtype, wrong_layout: bool = False) -> list[Entry]:
    """The Wan 2.1 VAE as the host's VAELoader builds it (comfy/sd.py: dim 96, time downsampling
    [False, True, True]); ``wrong_layout``: the class default [True, True, False], which the host must refuse."""
    import torch
    from comfy.ldm.wan.vae import WanVAE

    downsample = [True, True, False] if wrong_layout else [False, True, True]
    with torch.device("meta"):
        vae = WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                     temperal_downsample=downsample, dropout=0.0)  # fmt: skip
    return _meta_entries(vae, dtype)


def _wav2vec2_960h_layout() -> list[Entry]:
    """``model.safetensors`` of facebook/wav2vec2-base-960h: transformers' Wav2Vec2ForCTC (its default config is
    the base model with the 32-letter CTC head) in float32, the positional conv's weight norm as ``weight_g`` /
    ``weight_v`` as in the published file (torch's weight-norm hook maps them on load)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    with torch.device("meta"):
        model = Wav2Vec2ForCTC(Wav2Vec2Config())
    names = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    entries = []
    for e in _meta_entries(model, torch.float32):
        key = e.key
        for new, old in names.items():
            key = key.replace(new, old)
        entries.append(Entry(key, e.shape, e.dtype))
    return entries


def _tokenizer(cache: Path) -> bytes:
    """A small SentencePiece model trained on the shipped workflows' prompts, standing in for umT5's 256k-piece
    tokenizer inside the text encoder file (its ids stay below the embedding's 256384 rows); trained once, cached."""
    path = cache / "spiece_prompts.model"
    if not path.exists():
        import io

        import sentencepiece

        texts = ["two news anchors", "blurry"]
        for workflow in sorted((REPO / "workflows").glob("*.json")):
            for node in json.loads(workflow.read_text())["nodes"]:
                if node["type"] == "CLIPTextEncode":
                    texts += [str(v) for v in node.get("widgets_values", [])]
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=200, hard_vocab_limit=False,
            model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
            character_coverage=1.0, minloglevel=2,
        )  # fmt: skip
        cache.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model.getvalue())
    return path.read_bytes()


# ---------------------------------------------------------------- real-size files: writing


_CHUNK = 1 << 24  # values generated at a time: 64 MB of float32


def _chunks(entry: Entry, seed: int) -> Iterator[Any]:
    """The entry's values, in chunks along its first dimension, in its dtype. Random values are seeded by the
    key; fp8 weights are unit normals (their ``scale_weight`` carries 1/sqrt(fan_in))."""
    import torch

    if entry.value is not None:
        yield entry.value.to(entry.dtype)
        return
    shape = entry.shape or (1,)
    numel = math.prod(shape)
    if numel == 0:
        return
    g = torch.Generator().manual_seed(seed + zlib.crc32(entry.key.encode()))
    row = numel // shape[0]
    vector = row == 1
    for start in range(0, shape[0], max(1, _CHUNK // row)):
        n = torch.randn((min(max(1, _CHUNK // row), shape[0] - start), *shape[1:]), generator=g)
        if entry.dtype == torch.float8_e4m3fn:
            pass
        elif vector and ("norm" in entry.key or "gamma" in entry.key):
            n = 1 + 0.1 * n
        elif vector:
            n = 0.02 * n
        else:
            n = n / math.sqrt(row)
        yield (n.reshape(()) if not entry.shape else n).to(entry.dtype)


def _raw(tensor) -> Any:
    import torch

    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy()


_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3",
                       "uint8": "U8"}  # fmt: skip


def _write_safetensors(path: Path, layout: list[Entry], seed: int) -> None:
    """A .safetensors file written tensor by tensor (never the whole file in memory), laid out as
    safetensors' own writer does: the widest dtypes first, then by key."""
    order = sorted(layout, key=lambda e: (-e.dtype.itemsize, e.key))
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for e in order:
        dtype = _SAFETENSORS_DTYPES[str(e.dtype).removeprefix("torch.")]
        header[e.key] = {"dtype": dtype, "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for e in order:
                for chunk in _chunks(e, seed):
                    f.write(_raw(chunk))

    _replace(path, write)


def _write_pth(path: Path, layout: list[Entry], seed: int) -> None:
    """A torch zip checkpoint ``{"model": state_dict}`` as ``torch.save`` writes it, one tensor at a time: the
    pickle comes from ``torch.save`` of unfilled tensors with ``skip_data``, then each storage record is
    written with torch's own zip writer (so offsets, alignment and checksums are torch's)."""
    import zipfile

    import torch

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp_dir:
        sketch = Path(tmp_dir) / "sketch.pth"
        empty = {"model": {e.key: torch.empty(e.shape, dtype=e.dtype) for e in layout}}  # untouched: no memory
        with torch.serialization.skip_data():
            torch.save(empty, sketch)
        del empty
        with zipfile.ZipFile(sketch) as z:
            names = {n.split("/", 1)[1]: n for n in z.namelist()}
            records = {r: z.read(names[r]) for r in ("data.pkl", ".format_version", ".storage_alignment", "byteorder")}

    def write(tmp: Path) -> None:
        writer = torch._C.PyTorchFileWriter(str(tmp))
        for name, record in records.items():
            writer.write_record(name, record, len(record))
        for i, e in enumerate(layout):  # storages are numbered in the order the pickle met them: the layout's
            data = torch.cat([c.reshape(-1) for c in _chunks(e, seed)]).to(e.dtype)
            writer.write_record(f"data/{i}", data.untyped_storage(), e.nbytes)
        writer.write_end_of_file()

    _replace(path, write)
    check = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["model"]
    for e in layout[:: max(1, len(layout) // 50)]:  # a sample of keys: the right storage behind the right key
        first = next(_chunks(e, seed)).reshape(-1)[:16].to(e.dtype)
        if list(check[e.key].shape) != list(e.shape) or not torch.equal(check[e.key].reshape(-1)[:16], first):
            raise SystemExit(f"{path}: {e.key} does not hold what was written; delete the file and rerun")


def _digest(layout: list[Entry], seed: int) -> str:
    h = hashlib.sha256(str(seed).encode())
    for e in layout:
        h.update(f"{e.key}|{e.shape}|{e.dtype}".encode())
        if e.value is not None:
            h.update(_raw(e.value.to(e.dtype)).tobytes())
    return h.hexdigest()[:16]


def _cached(path: Path, layout: list[Entry], seed: int, write) -> int:
    """Write ``path`` unless the cache already holds it with this layout (a marker written last records the
    layout's digest and the file size); returns the file's size in bytes."""
    marker = path.with_name(path.name + ".layout.json")
    digest = _digest(layout, seed)
    if path.exists() and marker.exists():
        record = json.loads(marker.read_text())
        if record["digest"] == digest and record["bytes"] == path.stat().st_size:
            sys.stdout.write(f"cached {path} ({record['bytes'] / 1e9:.2f} GB)\n")
            return record["bytes"]
        if record["digest"] != digest:
            old = {tuple(k) for k in record["keys"]}
            new = {(e.key, str(list(e.shape)), str(e.dtype)) for e in layout}
            sys.stdout.write(f"{path.name}: this host's classes ask for another layout than the cached file "
                             f"(only in the file: {sorted(old - new)[:4]}; only here: {sorted(new - old)[:4]}); "
                             "writing it again\n")  # fmt: skip
    start = time.time()
    write(path, layout, seed)
    size = path.stat().st_size
    keys = [(e.key, str(list(e.shape)), str(e.dtype)) for e in layout]
    marker.write_text(json.dumps({"digest": digest, "bytes": size, "seed": seed, "keys": keys}))
    sys.stdout.write(f"wrote {path} ({size / 1e9:.2f} GB, {time.time() - start:.0f} s)\n")
    return size


# The README model tables' files: (models/ folder, how the random file is made); LAYOUT_ONLY: the tables' other
# files, whose sizes are computed from their layouts but which are not written.
REAL_FILES = {
    "1_3B-single-v1.pth": "anytalker",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": "text_encoders",
    "clip_vision_h.safetensors": "clip_vision",
    "wan_2.1_vae.safetensors": "vae",
    "wav2vec2-base-960h.safetensors": "audio_encoders",
}
LAYOUT_ONLY = ("umt5_xxl_fp16.safetensors", "14B-multi-v1.pth")
PTH_OVERHEAD = 200_000  # a torch zip's pickle, headers and alignment for ~1800 tensors, about; for LAYOUT_ONLY


def prepare_real_size(comfy_dir: Path, cache: Path) -> int:
    """Write (once) the README table's files at their real sizes and layouts into ``cache``, link them into the
    host's model folders, and check the README's sizes against them. Returns the exit code."""
    import torch

    _import_host(comfy_dir)
    cache.mkdir(parents=True, exist_ok=True)
    layouts = {
        "1_3B-single-v1.pth": _dit_layout("1.3B"),
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors": _umt5_layout(_tokenizer(cache)),
        "clip_vision_h.safetensors": _clip_vision_h_layout(),
        "wan_2.1_vae.safetensors": _wan21_vae_layout(torch.bfloat16),
        "wav2vec2-base-960h.safetensors": _wav2vec2_960h_layout(),
        REAL_WRONG_VAE: _wan21_vae_layout(torch.bfloat16, wrong_layout=True),
    }
    sizes = {}
    for seed, (name, layout) in enumerate(layouts.items()):
        write = _write_pth if name.endswith(".pth") else _write_safetensors
        sizes[name] = {"bytes": _cached(cache / name, layout, 100 + seed, write), "written": True}
        folder = comfy_dir / "models" / REAL_FILES.get(name, "vae")
        _link(cache / name, folder / name, hard=name.endswith(".pth"))
    fp16 = sum(e.nbytes for e in _umt5_layout(None)) + len(_tokenizer(cache))
    sizes["umt5_xxl_fp16.safetensors"] = {"bytes": fp16, "written": False}
    sizes["14B-multi-v1.pth"] = {"bytes": sum(e.nbytes for e in _dit_layout("14B")) + PTH_OVERHEAD, "written": False}
    del sizes[REAL_WRONG_VAE]
    (cache / "sizes.json").write_text(json.dumps(sizes, indent=1))
    sys.stdout.write(f"linked into {comfy_dir / 'models'}\n")
    _prepare_inputs(comfy_dir)
    return check_readme_sizes(sizes)


def _link(source: Path, link: Path, hard: bool) -> None:
    """``link`` -> ``source`` without a copy: a symbolic link, or for the DiT a hard link where the file system
    allows it, because the AnyTalker Model Loader refuses a file whose real path leaves models/anytalker."""
    if link.is_symlink() or link.exists():
        link.unlink()
    if hard:
        try:
            os.link(source, link)
            return
        except OSError:
            pass
    link.symlink_to(source)


# ---------------------------------------------------------------- the README's sizes

_SIZE = re.compile(r"((?:\d+(?:\.\d+)?\s*/\s*)*\d+(?:\.\d+)?)\s*(GiB|MiB|KiB|GB|MB|KB)\b")
_UNITS = {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10, "GB": 1e9, "MB": 1e6, "KB": 1e3}
_FILE = re.compile(r"`([^`/]+\.(?:pth|safetensors))`")


def readme_sizes(readme: Path) -> list[tuple[int, list[str], list[float]]]:
    """Every row of the README's tables with a ``size`` column whose first column names model files:
    (line number, the files, the sizes in bytes), files and sizes in the order written."""
    rows, size_col = [], None
    for number, line in enumerate(readme.read_text().splitlines(), 1):
        if not line.startswith("|"):
            size_col = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if size_col is None:
            size_col = cells.index("size") if "size" in cells else -1
            continue
        names = _FILE.findall(cells[0])
        if size_col < 0 or not names or size_col >= len(cells):
            continue
        sizes = [float(v) * _UNITS[m.group(2)] for m in _SIZE.finditer(cells[size_col]) for v in m.group(1).split("/")]
        rows.append((number, names, sizes))
    return rows


def check_readme_sizes(generated: dict[str, dict], readme: Path = REPO / "README.md", tolerance: float = 0.05) -> int:
    """Each README table entry's size against the file generated here (or computed from its layout): within
    ``tolerance``; a name the tool does not know is a wrong name. Returns the exit code."""
    problems, seen = [], set()
    for number, names, sizes in readme_sizes(readme):
        if len(names) != len(sizes):
            problems.append(f"README.md:{number}: names {len(names)} files ({', '.join(names)}) but gives "
                            f"{len(sizes)} sizes")  # fmt: skip
            continue
        for name, stated in zip(names, sizes):
            seen.add(name)
            if name not in generated:
                problems.append(f"README.md:{number}: `{name}`: no such file among the real-size files "
                                f"({', '.join(sorted(generated))}); a wrong name?")  # fmt: skip
                continue
            actual = generated[name]["bytes"]
            how = "generated" if generated[name]["written"] else "from its layout"
            verdict = "ok" if abs(stated - actual) <= tolerance * actual else "WRONG"
            line = f"README.md:{number}: `{name}`: {stated / 1e9:.3f} GB stated, {actual / 1e9:.3f} GB {how}"
            sys.stdout.write(f"{line}: {verdict}\n")
            if verdict != "ok":
                problems.append(f"{line}: more than {tolerance:.0%} apart")
    problems += [f"`{n}` is in no README table with a size" for n in sorted(set(generated) - seen)]
    for problem in problems:
        sys.stdout.write(f"size check: {problem}\n")
    return 1 if problems else 0


# ---------------------------------------------------------------- the prompts


def prompt() -> dict:
    def node(kind, **inputs):
        return {"class_type": kind, "inputs": inputs}

    graph = {
        "1": node("AnyTalkerModelLoader", model_name="anytalker_smoke.safetensors", weight_dtype="default"),
        "2": node("CLIPLoader", clip_name="clip_l_smoke.safetensors", type="stable_diffusion"),
        "3": node("CLIPTextEncode", text="two news anchors", clip=["2", 0]),
        "4": node("CLIPTextEncode", text="blurry", clip=["2", 0]),
        "5": node("VAELoader", vae_name="wan_vae_smoke.safetensors"),
        "6": node("CLIPVisionLoader", clip_name="clip_vision_smoke.safetensors"),
        "7": node("AudioEncoderLoader", audio_encoder_name="wav2vec2_smoke.safetensors"),
        "8": node("LoadImage", image="2p-1.png"),
        "9": node("AnyTalkerFaceDetect", image=["8", 0], people=2, backend="auto"),
        "10": node("LoadAudio", audio="2p-1-left.wav"),
        "11": node("LoadAudio", audio="2p-1-right.wav"),
        "12": node("AnyTalkerVoice", audio=["10", 0]),
        "13": node("AnyTalkerVoice", audio=["11", 0]),
        "14": node("AnyTalkerIdentity", face_mask=["9", 0], face=1, voice=["12", 0], offset=0.0),
        "15": node("AnyTalkerIdentity", face_mask=["9", 0], face=2, voice=["13", 0], identities=["14", 0],
                   offset=0.0),
        "16": node("AnyTalkerImageToVideo", positive=["3", 0], negative=["4", 0], vae=["5", 0],
                   clip_vision=["6", 0], audio_encoder=["7", 0], start_image=["8", 0], identities=["15", 0],
                   width=96, height=64, length=9, mode="pad"),
        "17": node("AnyTalkerSampler", model=["1", 0], positive=["16", 0], negative=["16", 1], latent=["16", 2],
                   seed=1, steps=2, cfg=4.5, shift=5.0, solver="unipc"),
        "18": node("VAEDecode", samples=["17", 0], vae=["5", 0]),
        "19": node("CreateVideo", images=["18", 0], fps=24.0, audio=["16", 3]),
        "20": node("SaveVideo", video=["19", 0], filename_prefix="anytalker_smoke/video", format="auto",
                   codec="auto"),
        "30": node("LoraLoaderModelOnly", model=["1", 0], lora_name="anytalker_smoke_lora.safetensors",
                   strength_model=1.0),
        "21": node("KSampler", model=["30", 0], seed=1, steps=2, cfg=4.5, sampler_name="uni_pc", scheduler="simple",
                   positive=["16", 0], negative=["16", 1], latent_image=["16", 2], denoise=1.0),
        "22": node("VAEDecode", samples=["21", 0], vae=["5", 0]),
        "23": node("SaveImage", images=["22", 0], filename_prefix="anytalker_smoke/ksampler"),
        "24": node("SaveImage", images=["16", 4], filename_prefix="anytalker_smoke/binding"),
        "25": node("AnyTalkerScheduler", steps=2, shift=5.0),
        "26": node("AnyTalkerSamplerSelect", solver="euler"),
        "27": node("SamplerCustom", model=["1", 0], add_noise=True, noise_seed=1, cfg=4.5, positive=["16", 0],
                   negative=["16", 1], sampler=["26", 0], sigmas=["25", 0], latent_image=["16", 2]),
        "28": node("VAEDecode", samples=["27", 0], vae=["5", 0]),
        "29": node("SaveImage", images=["28", 0], filename_prefix="anytalker_smoke/samplercustom"),
        # a moving mask: one mask per video frame (here the picture itself, repeated) through the Identity node
        "31": node("RepeatImageBatch", image=["8", 0], amount=9),
        "32": node("ImageToMask", image=["31", 0], channel="red"),
        "33": node("AnyTalkerIdentity", moving_mask=["32", 0], face=1, voice=["12", 0], offset=0.0),
        "34": node("AnyTalkerImageToVideo", positive=["3", 0], negative=["4", 0], vae=["5", 0],
                   clip_vision=["6", 0], audio_encoder=["7", 0], start_image=["8", 0], identities=["33", 0],
                   width=96, height=64, length=9, mode="pad"),
        "35": node("SaveImage", images=["34", 4], filename_prefix="anytalker_smoke/moving_binding"),
    }  # fmt: skip
    return graph


SMOKE_FILES = {
    "model_name": "anytalker_smoke.safetensors", "clip_name@CLIPLoader": "clip_l_smoke.safetensors",
    "type@CLIPLoader": "stable_diffusion", "vae_name": "wan_vae_smoke.safetensors",
    "clip_name@CLIPVisionLoader": "clip_vision_smoke.safetensors", "audio_encoder_name": "wav2vec2_smoke.safetensors",
    "width": 256, "height": 160, "length": 9, "steps": 2, "length@AnyTalkerLongVideo": 17,
    "window@AnyTalkerLongVideo": 9, "duration": "length",
}  # fmt: skip


# The workflow files at real size: the models as the workflows name them (the README's), at a tiny size.
REAL_SIZE = {"width": 96, "height": 64, "length": 5, "steps": 2, "length@AnyTalkerLongVideo": 9,
             "window@AnyTalkerLongVideo": 5}  # fmt: skip


def from_workflow(path: Path, url: str, swaps: dict | None = None) -> dict:
    """A shipped UI workflow -> an API prompt, with ``swaps`` (default: the smoke models, inputs and a tiny
    size) swapped in."""
    swaps = SMOKE_FILES if swaps is None else swaps
    with urllib.request.urlopen(f"{url}/object_info") as response:
        info = json.load(response)
    graph = json.loads(path.read_text())
    links = {link[0]: link for link in graph["links"]}
    tracks = iter(["2p-1-left.wav", "2p-1-right.wav"] * 2)
    api = {}
    for node in graph["nodes"]:
        spec = info[node["type"]]
        order = spec.get("input_order") or {k: list(v) for k, v in spec["input"].items()}
        values = iter(node.get("widgets_values", []))
        inputs = {}
        for section in ("required", "optional"):
            for name in order.get(section, []):
                kind, options = spec["input"][section][name][0], (spec["input"][section][name] + [{}])[1]
                if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO") or \
                        "COMBO" in str(kind):  # fmt: skip
                    inputs[name] = next(values)
                    if options.get("control_after_generate") or name in ("seed", "noise_seed"):
                        next(values)
                    if options.get("image_upload"):
                        next(values)
                    if options.get("audio_upload"):
                        next(values), next(values)
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                _, src, slot, *_ = links[entry["link"]]
                inputs[entry["name"]] = [str(src), slot]
        for name in list(inputs):
            for key in (f"{name}@{node['type']}", name):
                if key in swaps and not isinstance(inputs[name], list):
                    inputs[name] = swaps[key]
                    break
        if node["type"] == "LoadAudio":
            inputs["audio"] = next(tracks)
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


# What the host logs when a file's layout is not the one its loader expects (keys left out or left over):
# "Missing VAE keys", "clip missing:", "missing clip vision:", "missing/unexpected audio encoder:",
# "unet missing/unexpected:", "left over keys", "Missing weight for layer" (comfy/sd.py, clip_vision.py, ...).
LOAD_WARNING = re.compile(r"\bmissing\b.*(keys|:)|\bunexpected\b|left over keys|missing weight", re.IGNORECASE)
# Warnings the real files give in any ComfyUI, with why they are harmless: not failures.
EXPECTED_WARNINGS = {
    re.compile(r"unexpected audio encoder: \['lm_head\.(weight|bias)', 'lm_head\.(weight|bias)'\]$"):
        "wav2vec2-base-960h's speech-to-text (CTC) head, which the host's wav2vec2 does not have and nobody uses",
}  # fmt: skip


def _host_log(url: str) -> list[tuple[str, str]]:
    """The host's recent log lines as (time, message) (its /internal/logs/raw buffer)."""
    with urllib.request.urlopen(f"{url}/internal/logs/raw") as response:
        return [(str(e.get("t", "")), str(e.get("m", ""))) for e in json.load(response).get("entries", [])]


def _host_pid(url: str) -> int | None:
    """The process of the local host listening on ``url``'s port (its command line says ``--port N``)."""
    port = urllib.parse.urlsplit(url).port
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"main.py" in b" ".join(args) and any(a == b"--port" and b == str(port).encode() for a, b in
                                                 zip(args, args[1:])):  # fmt: skip
            return int(proc.name)
    return None


def _memory(pid: int) -> dict[str, int]:
    """RssAnon, RssFile, VmRSS and VmHWM of ``pid`` in bytes (/proc/PID/status)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def _available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _videos(url: str, outputs: dict) -> list[dict]:
    """Frames, fps and sound of every mp4 the prompt saved (fetched through the host's /view)."""
    found = []
    for output in outputs.values():
        for item in output.get("images", []) + output.get("video", []):
            if not str(item.get("filename", "")).endswith(".mp4"):
                continue
            query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
            with (
                urllib.request.urlopen(f"{url}/view?{query}") as response,
                tempfile.NamedTemporaryFile(suffix=".mp4") as f,
            ):
                f.write(response.read())
                f.flush()
                found.append({"file": item["filename"], **_probe(Path(f.name))})
    return found


def _probe(path: Path) -> dict:
    """Frames (decoded and counted), size, fps and the sound track of an mp4."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0].codec_context
        info = {"width": video.width, "height": video.height, "codec": video.name, "audio": None,
                "fps": float(container.streams.video[0].average_rate)}  # fmt: skip
        if container.streams.audio:
            audio = container.streams.audio[0]
            seconds = float(audio.duration * audio.time_base) if audio.duration else None
            info["audio"] = {"codec": audio.codec_context.name, "rate": audio.codec_context.sample_rate,
                             "channels": audio.codec_context.layout.nb_channels, "seconds": seconds}  # fmt: skip
        info["frames"] = sum(1 for _ in container.decode(video=0))
    return info


def _expected_frames(graph: dict) -> set[int]:
    long = [n["inputs"]["length"] for n in graph.values() if n["class_type"] == "AnyTalkerLongVideo"]
    clips = [n["inputs"]["length"] for n in graph.values() if n["class_type"] == "AnyTalkerImageToVideo"]
    return set(long or clips)


def _describe_refusal(answer: dict) -> str:
    """The host's own words for each refused node of a prompt."""
    lines = []
    for node_id, errors in (answer.get("node_errors") or {}).items():
        for error in errors.get("errors", []):
            lines.append(f"node {node_id} ({errors.get('class_type')}): {error.get('message')}: {error.get('details')}")
    if not lines and answer.get("error"):
        error = answer["error"]
        lines.append(f"{error.get('message')}: {error.get('details')}" if isinstance(error, dict) else str(error))
    return "; ".join(lines)


def queue(url: str, graph: dict) -> dict:
    """Queue ``graph`` and wait for it; returns what went wrong and what came out: ``refused`` (the host's
    message), ``status``, ``warnings`` (load warnings in the host's log; the first stops the prompt),
    ``expected`` (known harmless warnings), ``outputs``, ``videos``, ``seconds``, ``memory``."""
    client = uuid.uuid4().hex
    body = json.dumps({"prompt": graph, "client_id": client}).encode()
    request = urllib.request.Request(f"{url}/prompt", body, {"Content-Type": "application/json"})
    since = max((t for t, _ in _host_log(url)), default="")
    pid = _host_pid(url)
    result: dict[str, Any] = {"refused": None, "status": None, "warnings": [], "expected": [], "outputs": {},
                              "videos": [], "seconds": None, "memory": {}}  # fmt: skip
    if pid is not None:
        result["memory"]["before"] = _memory(pid)
    start = time.time()
    try:
        with urllib.request.urlopen(request) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as err:  # 0.3.64 refuses the whole prompt
        text = err.read().decode()
        try:
            result["refused"] = _describe_refusal(json.loads(text)) or text[:3000]
        except json.JSONDecodeError:
            result["refused"] = text[:3000]
        return result
    if answer.get("node_errors"):  # 0.33 queues the rest of a prompt in which a node was refused
        result["refused"] = _describe_refusal(answer)
        return result
    prompt_id = answer["prompt_id"]
    sys.stdout.write(f"queued {prompt_id}\n")
    peak: dict[str, int] = {}
    interrupted = False
    while time.time() - start < 3600:
        time.sleep(1)
        if pid is not None:
            for key, value in _memory(pid).items():
                peak[key] = max(peak.get(key, 0), value)
        for t, line in _host_log(url):
            if t <= since or not LOAD_WARNING.search(line):
                continue
            since = max(since, t)
            text = re.sub(r"^\[[A-Z]+\]\s*", "", re.sub(r"\x1b\[[0-9;]*m", "", line).strip())  # colour, level
            why = next((why for pattern, why in EXPECTED_WARNINGS.items() if pattern.search(text)), None)
            if why is not None:
                result["expected"].append(f"{text} ({why})")
                continue
            result["warnings"].append(text)
            if not interrupted:  # a file the host could not load whole: stop here, the run has failed
                urllib.request.urlopen(urllib.request.Request(f"{url}/interrupt", b"", method="POST")).close()
                interrupted = True
        with urllib.request.urlopen(f"{url}/history/{prompt_id}") as response:
            history = json.load(response)
        if prompt_id in history:
            break
    else:
        result["status"] = "timed out"
        return result
    result["seconds"] = time.time() - start
    entry = history[prompt_id]
    status = entry.get("status", {})
    result["status"] = status.get("status_str")
    result["outputs"] = entry.get("outputs") or {}
    result["errors"] = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
    if pid is not None:
        result["memory"]["peak"] = peak
        result["memory"]["VmHWM"] = _memory(pid)["VmHWM"]
    if result["status"] == "success":
        result["videos"] = _videos(url, result["outputs"])
    return result


def _gib(n: int | None) -> str:
    return f"{n / 2**30:.1f} GiB" if n else "?"


def _report(result: dict, graph: dict) -> int:
    """Print what the run did; 0 when it passed."""
    if result["refused"]:
        sys.stdout.write(f"refused by the host: {result['refused']}\n")
        return 1
    sys.stdout.write(json.dumps({"status": result["status"], "outputs": result["outputs"]})[:3000] + "\n")
    for error in result.get("errors", []):
        sys.stdout.write(json.dumps(error)[:3000] + "\n")
    for line in result["warnings"]:
        sys.stdout.write(f"host warning: {line}\n")
    for line in result["expected"]:
        sys.stdout.write(f"expected host warning: {line}\n")
    failed = result["status"] != "success" or bool(result["warnings"])
    expected = _expected_frames(graph)
    for video in result["videos"]:
        sys.stdout.write(f"video {video['file']}: {video['frames']} frames {video['width']}x{video['height']} at "
                         f"{video['fps']:g} fps ({video['codec']}), audio {video['audio']}\n")  # fmt: skip
        if video["frames"] not in expected or not video["audio"]:
            sys.stdout.write(f"video {video['file']}: expected {sorted(expected)} frames and a sound track\n")
            failed = True
    if result["status"] == "success" and not result["videos"]:
        sys.stdout.write("no mp4 was saved\n")
        failed = True
    if result["seconds"] is not None:
        memory = result["memory"]
        peak, before = memory.get("peak", {}), memory.get("before", {})
        sys.stdout.write(f"time {result['seconds']:.0f} s (queued to done); host process memory: peak anonymous "
                         f"{_gib(peak.get('RssAnon'))}, peak file-backed {_gib(peak.get('RssFile'))}, peak resident "
                         f"{_gib(memory.get('VmHWM'))} (VmHWM, the process's whole life); before the run: anonymous "
                         f"{_gib(before.get('RssAnon'))}, resident {_gib(before.get('VmRSS'))}\n")  # fmt: skip
    return 1 if failed else 0


def _graph(url: str, workflow: Path | None, real_size: bool, weight_dtype: str | None) -> dict:
    if real_size and workflow is None:
        raise SystemExit("--real-size runs a shipped workflow: give --workflow workflows/....json")
    swaps = REAL_SIZE if real_size else SMOKE_FILES
    graph = prompt() if workflow is None else from_workflow(workflow, url, swaps)
    for node in graph.values():
        if node["class_type"] == "AnyTalkerModelLoader" and weight_dtype is not None:
            node["inputs"]["weight_dtype"] = weight_dtype
    return graph


def run(url: str, workflow: Path | None = None, real_size: bool = False, weight_dtype: str | None = None) -> int:
    """Queue the built-in graph or a shipped workflow (smoke models, or ``real_size`` files) and check it."""
    pid = _host_pid(url)
    held = _memory(pid)["RssAnon"] if pid is not None else 0  # what the host already holds counts as available
    if real_size and _available() + held < REAL_SIZE_AVAILABLE:
        sys.stdout.write(f"only {(_available() + held) / 1e9:.1f} GB of memory available; a real-size run needs "
                         f"about {REAL_SIZE_AVAILABLE / 1e9:.0f} GB: stop other hosts first\n")  # fmt: skip
        return 1
    graph = _graph(url, workflow, real_size, weight_dtype)
    return _report(queue(url, graph), graph)


REAL_SIZE_AVAILABLE = 12 * 10**9  # with the host started; a run took 11.6 GiB anonymous (README "VRAM and memory")


def self_check(url: str, workflow: Path | None = None, real_size: bool = False) -> int:
    """That a run does fail, with the host's own message, on a model name the host does not list and on a VAE
    file in the wrong layout. 0 when both failed as they should."""
    caught = 0
    graph = _graph(url, workflow, real_size, None)
    for node in graph.values():
        if node["class_type"] == "AnyTalkerModelLoader":
            node["inputs"]["model_name"] = "1_3B-single-v1-typo.pth"
    result = queue(url, graph)  # 0.33 refuses it when queued; 0.3.64 queues it and the Model Loader fails
    failure = result["refused"] or "; ".join(
        f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_message', '').strip()}"
        for e in result.get("errors", [])
    )
    if failure:
        caught += 1
        sys.stdout.write(f"self-check: a wrong model name fails: {failure}\n")
    else:
        sys.stdout.write(f"self-check FAILED: a wrong model name passed ({result['status']})\n")
    graph = _graph(url, workflow, real_size, None)
    for node in graph.values():
        if node["class_type"] == "VAELoader":
            node["inputs"]["vae_name"] = REAL_WRONG_VAE if real_size else SMOKE_WRONG_VAE
    result = queue(url, graph)
    if _report(result, graph) and result["warnings"]:
        caught += 1
        sys.stdout.write(f"self-check: a VAE in the wrong layout fails: {result['warnings'][0]}\n")
    else:
        sys.stdout.write("self-check FAILED: a VAE in the wrong layout passed\n")
    return 0 if caught == 2 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    preparer = sub.add_parser("prepare", help="write the models (with the host's Python)")
    preparer.add_argument("--comfy", type=Path, required=True)
    preparer.add_argument("--real-size", action="store_true", help="the README table's files at their real sizes")
    preparer.add_argument("--cache", type=Path, default=CACHE, help=f"where real-size files are kept ({CACHE})")
    runner = sub.add_parser("run", help="queue the graph or a workflow in a running host")
    runner.add_argument("--url", default="http://127.0.0.1:8188")
    runner.add_argument("--workflow", type=Path, help="run a shipped UI workflow instead of the built-in graph")
    runner.add_argument("--real-size", action="store_true", help="the real-size files (after prepare --real-size)")
    runner.add_argument("--weight-dtype", help="the Model Loader's weight_dtype (default: the graph's)")
    runner.add_argument("--self-check", action="store_true",
                        help="check that a wrong model name and a wrong VAE layout make the run fail")  # fmt: skip
    sizes = sub.add_parser("sizes", help="check the README's sizes against the real-size files in the cache")
    sizes.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    if args.command == "prepare" and args.real_size:
        return prepare_real_size(args.comfy, args.cache)
    if args.command == "prepare":
        prepare(args.comfy)
        return 0
    if args.command == "sizes":
        return check_readme_sizes(json.loads((args.cache / "sizes.json").read_text()))
    if args.self_check:
        return self_check(args.url, args.workflow, args.real_size)
    return run(args.url, args.workflow, args.real_size, args.weight_dtype)


CACHE = Path(os.environ.get("ANYTALKER_REAL_SIZE_CACHE", Path.home() / ".cache" / "anytalker-real-size"))

if __name__ == "__main__":
    sys.exit(main())

"""A stand-in for the slice of ComfyUI's V3 API (``comfy_api.latest.io``) and ``folder_paths`` that the nodes use.

Only for tests on machines without ComfyUI: it records what ``define_schema`` declares, with the attribute names
the real ``io`` classes use (``id``, ``tooltip``, ``optional``, ``default``, ``min``, ``max``, ``step``,
``options``, ``control_after_generate``), so :func:`schema_dict` reads both the same way. The real host was
checked against the committed snapshot by hand (see the README's "Verified hosts").

:func:`install_comfy` adds the slice of ``comfy`` that the MODEL's forward touches (wrappers, attention).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import torch.nn.functional as F


class _Input:
    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 **options: Any):  # fmt: skip
        self.id, self.display_name, self.optional, self.tooltip = id, display_name, optional, tooltip
        for key, value in options.items():
            setattr(self, key, value)


class _Output:
    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 **options: Any):  # fmt: skip
        self.id, self.display_name, self.tooltip = id, display_name, tooltip


def _socket(io_type: str) -> type:
    cls = type(io_type, (), {"io_type": io_type})
    cls.Input = type("Input", (_Input,), {"io_type": io_type, "get_io_type": lambda self: io_type})
    cls.Output = type("Output", (_Output,), {"io_type": io_type, "get_io_type": lambda self: io_type})
    return cls


class Schema:
    def __init__(self, **fields: Any):
        self.__dict__.update(fields)


class NodeOutput:
    def __init__(self, *args: Any, ui: Any = None, **_: Any):
        self.args, self.result, self.ui = args, args, ui


class ComfyNode:
    pass


class ComfyExtension:
    async def get_node_list(self):  # pragma: no cover - overridden
        raise NotImplementedError


SOCKETS = {
    "Image": "IMAGE", "Mask": "MASK", "Model": "MODEL", "Conditioning": "CONDITIONING", "Latent": "LATENT",
    "Vae": "VAE", "Clip": "CLIP", "ClipVision": "CLIP_VISION", "ClipVisionOutput": "CLIP_VISION_OUTPUT",
    "Audio": "AUDIO", "AudioEncoder": "AUDIO_ENCODER", "Sampler": "SAMPLER", "Sigmas": "SIGMAS", "Int": "INT",
    "Float": "FLOAT", "String": "STRING", "Boolean": "BOOLEAN", "Combo": "COMBO",
}  # fmt: skip


def install(monkeypatch, models_dir: Path) -> types.ModuleType:
    """Put the stand-ins into ``sys.modules`` (undone by ``monkeypatch``); returns the fake ``io``."""
    io = types.ModuleType("comfy_api.latest.io")
    for name, io_type in SOCKETS.items():
        setattr(io, name, _socket(io_type))
    io.Custom = _socket
    io.Schema, io.NodeOutput, io.ComfyNode = Schema, NodeOutput, ComfyNode
    latest = types.ModuleType("comfy_api.latest")
    latest.io, latest.ComfyExtension = io, ComfyExtension
    comfy_api = types.ModuleType("comfy_api")
    comfy_api.latest = latest

    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(models_dir)
    folder_paths.supported_pt_extensions = {".ckpt", ".pt", ".bin", ".pth", ".safetensors"}
    folder_paths.folder_names_and_paths = {"diffusion_models": ([str(models_dir / "diffusion_models")], set())}

    def get_filename_list(name: str) -> list[str]:
        dirs = folder_paths.folder_names_and_paths.get(name, ([], set()))[0]
        return sorted(p.name for d in dirs if Path(d).is_dir() for p in Path(d).iterdir() if p.is_file())

    def get_full_path(name: str, filename: str) -> str | None:
        for d in folder_paths.folder_names_and_paths.get(name, ([], set()))[0]:
            if (Path(d) / filename).is_file():
                return str(Path(d) / filename)
        return None

    def get_folder_paths(name: str) -> list[str]:
        return list(folder_paths.folder_names_and_paths.get(name, ([], set()))[0])

    folder_paths.get_filename_list, folder_paths.get_full_path = get_filename_list, get_full_path
    folder_paths.get_folder_paths = get_folder_paths
    for name, module in (("comfy_api", comfy_api), ("comfy_api.latest", latest), ("folder_paths", folder_paths)):
        monkeypatch.setitem(sys.modules, name, module)
    return io


def schema_dict(node: type) -> dict[str, Any]:
    """What a node declares, in a JSON-friendly form (the same for the real ``io`` and this stand-in)."""
    schema = node.define_schema()
    inputs = []
    for item in schema.inputs:
        entry = {"id": item.id, "type": item.get_io_type(), "optional": bool(item.optional), "tooltip": item.tooltip}
        for key in ("default", "min", "max", "step", "options", "control_after_generate", "advanced"):
            value = getattr(item, key, None)
            if value is not None:
                entry[key] = list(value) if key == "options" else value
        inputs.append(entry)
    outputs = [
        {"type": o.get_io_type(), "name": o.display_name or o.get_io_type(), "tooltip": o.tooltip}
        for o in schema.outputs
    ]
    return {
        "node_id": schema.node_id, "display_name": schema.display_name, "category": schema.category,
        "description": schema.description, "inputs": inputs, "outputs": outputs,
    }  # fmt: skip


# ------------------------------------------------------------------------ the slice of ``comfy`` HostDiT touches


def patcher_extension() -> types.ModuleType:
    ext = types.ModuleType("comfy.patcher_extension")
    ext.WrappersMP = types.SimpleNamespace(DIFFUSION_MODEL="diffusion_model", OUTER_SAMPLE="outer_sample")

    def get_all_wrappers(kind, transformer_options):
        return [w for ws in transformer_options.get("wrappers", {}).get(kind, {}).values() for w in ws]

    class WrapperExecutor:
        def __init__(self, original, class_obj, wrappers, idx):
            self.original, self.class_obj, self.wrappers, self.idx = original, class_obj, wrappers, idx

        def __call__(self, *args, **kwargs):  # a wrapper calls its executor to go on down the chain
            return self.execute(*args, **kwargs)

        def execute(self, *args, **kwargs):
            if self.idx == len(self.wrappers):
                return self.original(*args, **kwargs)
            following = WrapperExecutor(self.original, self.class_obj, self.wrappers, self.idx + 1)
            return self.wrappers[self.idx](following, *args, **kwargs)

        @classmethod
        def new_class_executor(cls, original, class_obj, wrappers, idx=0):
            return cls(original, class_obj, wrappers, idx)

    ext.get_all_wrappers, ext.WrapperExecutor = get_all_wrappers, WrapperExecutor
    return ext


def attention_module() -> types.ModuleType:
    module = types.ModuleType("comfy.ldm.modules.attention")

    def sdpa(q, k, v, heads, mask=None, **_):
        b, lq, inner = q.shape
        q, k, v = (t.view(b, -1, heads, inner // heads).transpose(1, 2) for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, lq, inner)

    def optimized_attention(q, k, v, heads, mask=None, transformer_options=None, **kwargs):
        override = (transformer_options or {}).get("optimized_attention_override")
        if override is not None:
            return override(sdpa, q, k, v, heads, mask=mask, transformer_options=transformer_options, **kwargs)
        return sdpa(q, k, v, heads, mask=mask)

    module.optimized_attention = optimized_attention
    return module


def install_comfy(monkeypatch) -> None:
    """``comfy.patcher_extension`` (wrappers) and ``comfy.ldm.modules.attention`` (``optimized_attention`` with
    the override) stand-ins in ``sys.modules`` (undone by ``monkeypatch``): what ``nodes/model.py`` calls."""
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    modules = {"comfy": comfy, "comfy.patcher_extension": patcher_extension(),
               "comfy.ldm": types.ModuleType("comfy.ldm"), "comfy.ldm.modules": types.ModuleType("comfy.ldm.modules"),
               "comfy.ldm.modules.attention": attention_module()}  # fmt: skip
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    modules["comfy.ldm.modules"].attention = modules["comfy.ldm.modules.attention"]

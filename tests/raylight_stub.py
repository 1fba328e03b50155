"""A stand-in for the slice of Raylight (komikndr/raylight v1.5.1) and xDiT that ``nodes/raylight.py`` touches,
for tests on machines without them (Raylight's workers need CUDA, xDiT needs triton).

It keeps Raylight's contracts as its code has them (``tests/tools/host_raylight.py`` runs the real code):

- ``USPInjectRegistry`` / ``CFGParallelInjectRegistry``: a class-level plain dict ``_REGISTRY``; ``register(cls)``
  appends; ``inject`` calls the first entry whose class the model is an instance of. Raylight registers ``WAN21``
  (here :class:`WAN21`, whose entries record that they ran);
- ``cfg_utils.cfg_parallel_forward(executor, *args, chunk_names, auto_chunk_extra_kwargs, **kwargs)``: binds the
  arguments to ``executor.original``'s signature, takes this cfg rank's slice of every named argument whose batch
  equals the cfg world size, runs the executor, gathers the predictions on dim 0 (here the cfg group is the whole
  gloo world);
- ``xfuser.core.distributed.get_sp_group().device_group``: the sequence-parallel group (here the whole world).
"""

from __future__ import annotations

import inspect
import sys
import types

import torch
import torch.distributed as dist


class WAN21:
    """Raylight's registries hold ``comfy.model_base.WAN21``; AnyTalker's model class subclasses it."""


RAN: list[str] = []  # which of Raylight's own Wan injects ran


def _registry(name: str, wan_inject) -> type:
    class Registry:
        _REGISTRY: dict = {}

        @classmethod
        def register(cls, model_class):
            def decorator(inject):
                cls._REGISTRY[model_class] = inject
                return inject

            return decorator

        @classmethod
        def inject(cls, model_patcher, *args):
            for registered, inject in cls._REGISTRY.items():
                if isinstance(model_patcher.model, registered):
                    return inject(model_patcher, model_patcher.model, *args) if name == "usp" else inject()
            raise ValueError(f"Model: {type(model_patcher.model).__name__} is not yet supported")

    Registry.__name__ = {"usp": "USPInjectRegistry", "cfg": "CFGParallelInjectRegistry"}[name]
    Registry.register(WAN21)(wan_inject)
    return Registry


def _wan_usp(model_patcher, base_model, *args):
    RAN.append("usp")


def _wan_cfg():
    RAN.append("cfg")
    return lambda executor, *args, **kwargs: executor(*args, **kwargs)


def cfg_parallel_forward(executor, *args, chunk_names=(), auto_chunk_extra_kwargs=False, **kwargs):
    world, rank = dist.get_world_size(), dist.get_rank()
    bound = inspect.signature(executor.original).bind_partial(*args, **kwargs)
    for name in chunk_names:
        value = bound.arguments.get(name)
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == world:
            bound.arguments[name] = value.chunk(world)[rank]
    out = executor(*bound.args, **bound.kwargs)
    pieces = [torch.empty_like(out) for _ in range(world)]
    dist.all_gather(pieces, out.contiguous())
    return torch.cat(pieces)


def install(setitem=sys.modules.__setitem__) -> tuple[type, type]:
    """Put the stand-ins into ``sys.modules`` (``setitem``: e.g. a monkeypatch's, to undo it); returns the two
    registries (USP, CFG), fresh."""
    usp, cfg = (
        types.ModuleType("raylight.distributed_modules.usp"),
        types.ModuleType("raylight.distributed_modules.cfg"),
    )
    usp.USPInjectRegistry, cfg.CFGParallelInjectRegistry = _registry("usp", _wan_usp), _registry("cfg", _wan_cfg)
    utils = types.ModuleType("raylight.distributed_modules.cfg_utils")
    utils.cfg_parallel_forward = cfg_parallel_forward
    xdit = types.ModuleType("xfuser.core.distributed")
    xdit.get_sp_group = lambda: types.SimpleNamespace(device_group=dist.group.WORLD)
    modules = {
        "raylight": types.ModuleType("raylight"), "raylight.distributed_modules": types.ModuleType("rd"),
        "raylight.distributed_modules.usp": usp, "raylight.distributed_modules.cfg": cfg,
        "raylight.distributed_modules.cfg_utils": utils, "xfuser": types.ModuleType("xfuser"),
        "xfuser.core": types.ModuleType("xfuser.core"), "xfuser.core.distributed": xdit,
    }  # fmt: skip
    for name, module in modules.items():
        setitem(name, module)
    RAN.clear()
    return usp.USPInjectRegistry, cfg.CFGParallelInjectRegistry

"""Raylight (komikndr/raylight, Ray + xDiT): one AnyTalker clip on several GPUs with the engine artists already run.

Raylight picks a model's sequence-parallel (USP) and CFG-parallel injects from two private, ordered registries
(``USPInjectRegistry._REGISTRY``, ``CFGParallelInjectRegistry._REGISTRY``): the first ``isinstance`` match wins.
Our model is a ``WAN21`` subclass, so without us Raylight's Wan inject would take it (it rebinds our
self-attention to a function with another signature: a TypeError at the first step) and its CFG split would
leave our per-person conditioning whole. So:

- :func:`register` puts AnyTalker's two injects first in both registries (in place, idempotent), in each worker,
  on every load;
- :func:`sequence_parallel_inject` splits every forward by whole latent frames over xDiT's sequence-parallel
  group (``anytalker_core/model/parallel.py``: Ulysses self-attention; the text, picture and identity attention
  stay local, so the text bias and the face masks are kept); the ranks' product ``ulysses x ring`` must divide
  the head count (1.3B: 12, 14B: 40);
- :func:`cfg_parallel_wrapper` is Raylight's CFG split with our ``anytalker_*`` conditioning split along with
  the cond / uncond it belongs to;
- :class:`AnyTalkerRayModelLoader` loads our model in every Ray worker (Raylight's own loader detects models by
  their keys and would take an AnyTalker file for a plain Wan), then asks the workers for USP / CFG as Raylight's
  loader does.

The node is listed only when Raylight is installed (:func:`raylight_installed`). Everything here but the node
runs in the Ray workers; nothing imports Raylight, Ray or xDiT until it is used.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from typing import Any

from comfy_api.latest import io

from .loaders import checkpoint_inputs, checkpoint_path
from .model import CONDITION_KEYS

# the arguments of HostDiT._forward that hold one entry per cond / uncond (Raylight's Wan list plus ours)
CFG_CHUNKS = ("x", "timestep", "context", "clip_fea", *CONDITION_KEYS)
PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = __name__.rsplit(".", 2)[0]  # the name the host imported the pack under


def raylight_installed() -> bool:
    """Raylight importable, or its folder among the host's custom nodes (the host may load it after us)."""
    if "raylight" in sys.modules:
        return True
    spec = importlib.util.find_spec("raylight")
    if spec is not None and spec.origin is not None:  # a package, not any folder of that name on the path
        return True
    try:
        import folder_paths

        roots = folder_paths.get_folder_paths("custom_nodes")
    except Exception:  # noqa: BLE001 - no host: not installed as far as we can tell
        return False
    return any(glob.glob(os.path.join(root, "*", "src", "raylight", "distributed_modules", "usp.py")) for root in roots)


def put_first(registry: dict, model_class: type, inject: Any) -> None:
    """``registry[model_class] = inject`` as the first entry, the others kept in their order (in place)."""
    if next(iter(registry), None) is model_class and registry[model_class] is inject:
        return
    others = [(cls, fn) for cls, fn in registry.items() if cls is not model_class]
    registry.clear()
    registry[model_class] = inject
    registry.update(others)


def register(model_class: type | None = None) -> None:
    """AnyTalker's injects first in Raylight's USP and CFG registries of this process. ``model_class``: the
    host model class (default: ``AnyTalkerWan``)."""
    from raylight.distributed_modules.cfg import CFGParallelInjectRegistry
    from raylight.distributed_modules.usp import USPInjectRegistry

    if model_class is None:
        from .model import _host_classes

        model_class = _host_classes()[1]
    put_first(USPInjectRegistry._REGISTRY, model_class, sequence_parallel_inject)
    put_first(CFGParallelInjectRegistry._REGISTRY, model_class, cfg_parallel_inject)


def sequence_group() -> Any:
    """xDiT's sequence-parallel process group (Ulysses x ring ranks of this cfg rank)."""
    from xfuser.core.distributed import get_sp_group

    return get_sp_group().device_group


def sequence_parallel_inject(model_patcher: Any, base_model: Any, *load_args: Any) -> None:
    """Raylight's USP inject for AnyTalker (an ``ON_LOAD`` callback: runs on every load, idempotent): the DiT
    runs every forward split by latent frames over :func:`sequence_group`."""
    import torch.distributed as dist

    from ..anytalker_core.model.parallel import check_ranks

    group = sequence_group()
    dit = base_model.diffusion_model
    check_ranks(dit.config.num_heads, None, dist.get_world_size(group))
    dit.sequence_group = group


def cfg_parallel_wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
    """A ``DIFFUSION_MODEL`` wrapper: Raylight's CFG split (cond on one cfg rank, uncond on the other, the
    predictions gathered) with the ``anytalker_*`` conditioning split with them."""
    from raylight.distributed_modules.cfg_utils import cfg_parallel_forward

    return cfg_parallel_forward(executor, *args, chunk_names=CFG_CHUNKS, auto_chunk_extra_kwargs=True, **kwargs)


def cfg_parallel_inject() -> Any:
    """Raylight's CFG inject for AnyTalker: the wrapper the worker installs."""
    return cfg_parallel_wrapper


def parallel_plan(parallel: dict) -> tuple[int, int]:
    """Raylight's ``parallel_dict`` -> (sequence ranks, cfg ranks); ValueError for what AnyTalker cannot run."""
    if parallel.get("is_fsdp"):
        raise ValueError(
            "Raylight's FSDP is on, but the AnyTalker model loads whole on every GPU: turn FSDP off in the Ray "
            "init node (to save memory: weight_dtype fp8 here; more Ulysses GPUs shrink the activations, not the "
            "weights)"
        )
    if parallel.get("pipefusion_enabled"):
        raise ValueError("Raylight's PipeFusion cannot run AnyTalker: turn it off and use Ulysses / CFG degrees")
    if not parallel.get("is_xdit"):
        return 1, 1
    sequence = int(parallel.get("ulysses_degree", 1)) * int(parallel.get("ring_degree", 1))
    return sequence, int(parallel.get("cfg_degree", 1))


def load_on_worker(previous: Any, pack_dir: str, package: str, path: str, weight_dtype: str, ranks: int) -> Any:
    """Runs in a Ray worker, sent by value (the worker cannot import the pack by its folder name): import the pack
    there under the host's name, then :func:`load_in_worker`. Returns the worker's new model."""
    import importlib
    import importlib.util
    import os
    import sys

    if package not in sys.modules:
        init = os.path.join(pack_dir, "__init__.py")
        if not os.path.isfile(init):
            raise FileNotFoundError(
                f"the AnyTalker pack is not at {pack_dir} on the machine of this Ray worker: install it at the same "
                "path on every machine of the cluster (Raylight reads the model files by path the same way)"
            )
        spec = importlib.util.spec_from_file_location(package, init, submodule_search_locations=[pack_dir])
        module = importlib.util.module_from_spec(spec)
        sys.modules[package] = module
        spec.loader.exec_module(module)
    worker = importlib.import_module(f"{package}.nodes.raylight")
    return worker.load_in_worker(previous, path, weight_dtype, ranks)


def load_in_worker(previous: Any, path: str, weight_dtype: str, ranks: int) -> Any:
    """In a worker: register the injects, load the checkpoint as our ``MODEL``, check that ``ranks`` sequence
    ranks can split it. ``previous``: the worker's last model (dropped)."""
    from ..anytalker_core.model.parallel import check_ranks
    from .model import load_model

    del previous
    register()
    patcher = load_model(path, weight_dtype)
    check_ranks(patcher.model.diffusion_model.config.num_heads, None, ranks)
    return patcher


def _cause(err: BaseException) -> str:
    """A Ray task error's own message (Ray wraps it with the remote traceback)."""
    inner = getattr(err, "cause", None) or err
    return " ".join(str(inner).split()) or type(inner).__name__


class AnyTalkerRayModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerRayModelLoader",
            display_name="AnyTalker Ray Model Loader",
            category="AnyTalker/loaders",
            description="Load an AnyTalker checkpoint on every Raylight GPU worker: one clip split over the GPUs "
            "(Ulysses: by latent frames; CFG: cond and uncond on different GPUs). Sample with Raylight's samplers.",
            inputs=[
                io.Custom("RAY_ACTORS_INIT").Input(
                    "ray_actors_init", tooltip="From Raylight's Ray Init node. Ulysses x ring must divide the heads "
                    "(1.3B: 2, 3, 4, 6; 14B: 2, 4, 5, 8); CFG 2 needs guidance above 1; FSDP off.",
                ),
                *checkpoint_inputs(
                    "Raylight's own UNET loader would read it as a plain Wan model: load AnyTalker files here.",
                    "How the weights are stored on each GPU (every GPU holds the whole model).",
                ),
            ],
            outputs=[io.Custom("RAY_ACTORS").Output(tooltip="The workers, AnyTalker loaded, for Raylight samplers")],
        )  # fmt: skip

    @classmethod
    def execute(cls, ray_actors_init: Any, model_name: str, weight_dtype: str) -> io.NodeOutput:
        import ray
        from raylight.distributed_worker.ray_worker import ensure_fresh_actors

        path = checkpoint_path(model_name)
        actors, workers, parallel = ensure_fresh_actors(ray_actors_init)
        ranks, cfg = parallel_plan(parallel)
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # load_on_worker travels as code
        try:
            ray.get([w.model_function_runner.remote(load_on_worker, PACK_DIR, PACKAGE, path, weight_dtype, ranks)
                     for w in workers])  # fmt: skip
            patches = [w.patch_usp.remote() for w in workers if ranks > 1]
            patches += [w.patch_cfg.remote() for w in workers if cfg > 1]
            ray.get(patches)
        except Exception as err:  # noqa: BLE001 - a worker's error, said in one line
            raise RuntimeError(f"loading {model_name} on the Ray workers failed: {_cause(err)}") from err
        return io.NodeOutput(actors)

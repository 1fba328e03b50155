"""Dev script: AnyTalker through Raylight's own registry and CFG code, in the host's Python, on CPU processes.

    HOST_PYTHON tests/tools/host_raylight.py --comfy PATH/TO/ComfyUI --raylight PATH/TO/raylight [--layout 2x2]

``--raylight``: a Raylight checkout (the folder holding ``src/raylight``). Raylight itself cannot run here: its
workers are Ray actors on CUDA and xDiT needs triton. What runs is what decides whether AnyTalker works under it:
Raylight's real ``USPInjectRegistry`` / ``CFGParallelInjectRegistry`` (``distributed_modules/usp.py``, ``cfg.py``)
and its real CFG split (``cfg_utils.cfg_parallel_forward``), with one stand-in: ``xfuser.core.distributed``, whose
sequence-parallel and CFG groups are gloo groups of these processes, laid out as xDiT lays them out (cfg outer,
sequence inner). Each process does what a Raylight worker does with the AnyTalker Ray Model Loader:

1. ``load_on_worker`` arrives pickled by value (cloudpickle, as Ray sends it) in a process that never imported the
   pack, imports the pack under the host's name and loads the smoke checkpoint with the pack's loader;
2. ``patch_usp`` / ``patch_cfg`` as ``RayWorker`` does them: the registry's ``inject`` as an ``ON_LOAD``
   callback, the CFG registry's wrapper as a ``DIFFUSION_MODEL`` wrapper; the host loads the model;
3. the host's ``calc_cond_batch`` on a positive and a negative (different voices), batched as the sampler does.

Checks: AnyTalker's injects come first in both registries and ``WAN21`` is still there after them; Raylight's
``inject`` picked ours; with CFG 2 each process ran one forward of batch 1 (cond or uncond), else one of batch 2;
every process's cond and uncond equal the one-process prediction within 1e-5; the sequence split really split
(the ranks exchanged heads in every self-attention, and only with a sequence degree above 1).
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import socket
import sys
import traceback
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # host_seams, also in the spawned ranks
ALIAS = "AnyTalker_ray"  # the name the "host" imported the pack under
FRAMES = 5  # latent frames: 3 + 2 over two sequence ranks


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def host(comfy_dir: Path) -> None:
    """The host's ``comfy`` on the CPU in this process."""
    sys.path.insert(0, str(comfy_dir))
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()


def predict(patcher, options: dict):
    """One sampling step's model call for cond and uncond (the host batches them into one forward)."""
    import comfy.model_patcher
    import comfy.sampler_helpers
    import comfy.samplers
    import torch
    from host_seams import smoke_conds

    conds, x, _ = smoke_conds(patcher, frames=FRAMES)
    patcher.model.current_patcher = patcher
    options = comfy.model_patcher.create_model_options_clone(options)
    options.setdefault("transformer_options", {})["sample_sigmas"] = torch.tensor([1.0, 0.6, 0.0])
    comfy.sampler_helpers.prepare_model_patcher(patcher, {}, options)  # the patcher's wrappers, as sampling adds them
    with torch.inference_mode():
        out = comfy.samplers.calc_cond_batch(patcher.model, conds, x, torch.tensor([0.6]), options)
    return torch.stack(out)


def stand_in_xfuser(sp: int, cfg: int) -> None:
    """``xfuser.core.distributed`` on gloo groups of this world: rank = cfg_rank * sp + sp_rank (xDiT's order)."""
    import torch.distributed as dist

    rank = dist.get_rank()
    sp_groups = [dist.new_group([c * sp + s for s in range(sp)]) for c in range(cfg)]
    cfg_groups = [dist.new_group([c * sp + s for c in range(cfg)]) for s in range(sp)]
    sp_group, cfg_group = sp_groups[rank // sp], cfg_groups[rank % sp]

    class CfgGroup:
        def all_gather(self, tensor, dim=0):
            pieces = [tensor.new_empty(tensor.shape) for _ in range(cfg)]
            dist.all_gather(pieces, tensor.contiguous(), group=cfg_group)
            return __import__("torch").cat(pieces, dim=dim)

    module = types.ModuleType("xfuser.core.distributed")
    module.get_sp_group = lambda: types.SimpleNamespace(device_group=sp_group, world_size=sp)
    module.get_cfg_group = CfgGroup
    module.get_classifier_free_guidance_rank = lambda: rank // sp
    module.get_classifier_free_guidance_world_size = lambda: cfg
    for name in ("xfuser", "xfuser.core"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["xfuser.core.distributed"] = module


def raylight_package(raylight_dir: Path) -> None:
    """``raylight`` from the checkout without its ``__init__`` (which starts xDiT): its modules import as in a
    worker, where Ray ships the package."""
    package = types.ModuleType("raylight")
    package.__path__ = [str(raylight_dir / "src" / "raylight")]
    sys.modules["raylight"] = package


def rank_main(rank: int, world: int, sp: int, cfg: int, port: int, comfy_dir: str, raylight_dir: str,
              loader: bytes, out: str) -> None:  # fmt: skip
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
        host(Path(comfy_dir))
        stand_in_xfuser(sp, cfg)
        raylight_package(Path(raylight_dir))
        import cloudpickle
        import comfy.model_management
        import comfy.patcher_extension as pe
        from raylight.distributed_modules.cfg import CFGParallelInjectRegistry
        from raylight.distributed_modules.usp import USPInjectRegistry

        assert not any(name.startswith(ALIAS) for name in sys.modules), "the pack was imported before the loader ran"
        smoke = str(Path(comfy_dir) / "models" / "anytalker" / "anytalker_smoke.safetensors")
        patcher = cloudpickle.loads(loader)(None, str(REPO), ALIAS, smoke, "default", sp)  # model_function_runner
        if sp > 1:  # RayWorker.patch_usp
            patcher.add_callback(pe.CallbacksMP.ON_LOAD, USPInjectRegistry.inject)
        if cfg > 1:  # RayWorker.patch_cfg
            patcher.add_wrapper(pe.WrappersMP.DIFFUSION_MODEL, CFGParallelInjectRegistry.inject(patcher))
        comfy.model_management.load_models_gpu([patcher])
        order = {
            "usp": [c.__name__ for c in USPInjectRegistry._REGISTRY],
            "cfg": [c.__name__ for c in CFGParallelInjectRegistry._REGISTRY],
        }
        exchanges, all_to_all = [], dist.all_to_all_single
        dist.all_to_all_single = lambda *a, **kw: exchanges.append(1) or all_to_all(*a, **kw)
        batches = []  # the batch each forward of this process ran
        dit = patcher.model.diffusion_model
        dit.patch_embedding.register_forward_pre_hook(lambda module, inputs: batches.append(inputs[0].shape[0]))
        prediction = predict(patcher, patcher.model_options)
        split = (len(exchanges), 4 * len(dit.blocks))  # q, k, v out and back, per block
        dist.barrier()
        torch.save({"prediction": prediction, "order": order, "split": split, "batches": batches}, out)
    except BaseException:
        torch.save({"error": traceback.format_exc()}, out)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_layout(sp: int, cfg: int, args: argparse.Namespace, loader: bytes, expected) -> list[str]:
    import torch

    world = sp * cfg
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    outs = [f"/tmp/anytalker_raylight_{os.getpid()}_{r}.pt" for r in range(world)]
    procs = [ctx.Process(target=rank_main, args=(r, world, sp, cfg, port, str(args.comfy), str(args.raylight),
                                                 loader, outs[r])) for r in range(world)]  # fmt: skip
    for p in procs:
        p.start()
    problems = []
    for r, p in enumerate(procs):
        p.join(300)
        if p.is_alive():
            p.kill()
            problems.append(f"rank {r} hung")
    label = f"sequence {sp} x cfg {cfg}"
    for r, path in enumerate(outs):
        if not os.path.exists(path):
            problems.append(f"{label}: rank {r} wrote nothing")
            continue
        result = torch.load(path, weights_only=False)
        os.remove(path)
        if "error" in result:
            problems.append(f"{label}: rank {r} failed:\n{result['error']}")
            continue
        order = result["order"]
        for kind in ("usp", "cfg"):
            names = order[kind]
            if names[0] != "AnyTalkerWan" or "WAN21" not in names or names.index("WAN21") == 0:
                problems.append(f"{label}: rank {r}: the {kind} registry is {names[:4]}...")
        if result["batches"] != [2 // cfg]:
            problems.append(f"{label}: rank {r} ran forwards of batch {result['batches']}, expected [{2 // cfg}]")
        exchanges, per_forward = result["split"]
        if exchanges != (per_forward if sp > 1 else 0):
            problems.append(f"{label}: rank {r}: {exchanges} all-to-alls in one step")
        diff = float((result["prediction"] - expected).abs().max())
        say(f"{label}: rank {r}: max |split - one process| = {diff:.3g} (cond and uncond); "
            f"usp registry {order['usp'][:3]}..., cfg registry {order['cfg'][:3]}...")  # fmt: skip
        if diff > 1e-5:
            problems.append(f"{label}: rank {r} differs by {diff}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfy", type=Path, required=True)
    parser.add_argument("--raylight", type=Path, required=True, help="a Raylight checkout (holds src/raylight)")
    parser.add_argument("--layout", action="append", default=None, metavar="SPxCFG",
                        help="sequence ranks x cfg ranks (repeatable; default: 2x1, 1x2 and 2x2)")  # fmt: skip
    args = parser.parse_args()
    if not (args.raylight / "src" / "raylight" / "distributed_modules" / "usp.py").is_file():
        parser.error(f"--raylight {args.raylight}: no src/raylight/distributed_modules/usp.py there")
    import cloudpickle
    import torch
    from host_seams import load_smoke_model

    patcher = load_smoke_model(args.comfy, "AnyTalker_ray_reference")
    torch.set_num_threads(1)
    expected = predict(patcher, patcher.model_options)
    if float((expected[0] - expected[1]).abs().max()) == 0:
        say("FAIL cond and uncond predict the same: the check could not tell them apart")
        return 1
    raylight_module = sys.modules["AnyTalker_ray_reference.nodes.raylight"]
    cloudpickle.register_pickle_by_value(raylight_module)  # what the node does with ray.cloudpickle
    loader = cloudpickle.dumps(raylight_module.load_on_worker)
    problems = []
    for layout in args.layout or ["2x1", "1x2", "2x2"]:
        sp, cfg = (int(n) for n in layout.lower().split("x"))
        problems += run_layout(sp, cfg, args, loader, expected)
    for problem in problems:
        say(f"FAIL {problem}")
    say("AnyTalker runs under Raylight's registries and CFG split, equal to one process" if not problems else "")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

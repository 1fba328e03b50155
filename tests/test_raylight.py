"""Raylight (``nodes/raylight.py``) against a stand-in of its registries and CFG split (``raylight_stub.py``): our
injects come first and stay first, Raylight's own Wan injects never touch the AnyTalker model, and one model call
split by frames (sequence parallel) or by cond / uncond (CFG parallel) over 2 gloo processes equals one process.
``tests/tools/host_raylight.py`` runs the same through Raylight's real code in both hosts."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tempfile
import types
from pathlib import Path

import pytest
import torch

import hoststub
import raylight_stub
from micro import micro_inputs, micro_model
from parallel_ranks import run_ranks

REPO = Path(__file__).resolve().parents[1]
PACK = "ComfyUI_AnyTalker_ray"
TIMEOUT = 60.0


def load_pack(monkeypatch: pytest.MonkeyPatch, models: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """The host's stand-ins, Raylight's and the pack's ``nodes.model`` and ``nodes.raylight`` in this process."""
    hoststub.install(monkeypatch, models)
    hoststub.install_comfy(monkeypatch)
    raylight_stub.install(lambda name, module: monkeypatch.setitem(sys.modules, name, module))
    spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    monkeypatch.setitem(sys.modules, PACK, importlib.util.module_from_spec(spec))
    return importlib.import_module(f"{PACK}.nodes.model"), importlib.import_module(f"{PACK}.nodes.raylight")


@pytest.fixture
def pack(monkeypatch, tmp_path):
    yield load_pack(monkeypatch, tmp_path / "models")
    for key in [k for k in sys.modules if k.startswith(PACK)]:
        del sys.modules[key]


class AnyTalkerWan(raylight_stub.WAN21):
    """The host model around our DiT (``nodes/model.py: AnyTalkerWan`` subclasses ``WAN21`` the same way)."""

    def __init__(self, dit: torch.nn.Module):
        self.diffusion_model = dit


def host_dit(nodes_model: types.ModuleType) -> torch.nn.Module:
    core = micro_model("af", num_heads=6, dim=48, ffn_dim=48)
    model = nodes_model.HostDiT(core.config, attention=nodes_model.host_attention)
    model.load_state_dict(core.state_dict())
    return model.eval()


def host_call(model: torch.nn.Module, batch: int = 1, frames: int = 5, options: dict | None = None) -> torch.Tensor:
    """HostDiT on a batch of cond (and uncond: other text, zero voices), as the host calls it."""
    inputs = micro_inputs(model.config, frames=frames, identities=2)
    audio = torch.stack(inputs["audio"], 1)
    if batch == 2:
        audio = torch.cat([audio, torch.zeros_like(audio)])
    text = torch.cat([inputs["text"], inputs["text"].flip(1)])[:batch]
    repeat = lambda t: t.repeat(batch, *([1] * (t.dim() - 1)))  # noqa: E731
    with torch.no_grad():
        return model(
            repeat(torch.cat([inputs["x"], inputs["y"]], 1)), repeat(inputs["t"]), text,
            clip_fea=repeat(inputs["clip"]), transformer_options=options or {}, anytalker_audio=audio,
            anytalker_faces=repeat(torch.stack(inputs["faces"], 1)),
            anytalker_masks=repeat(torch.stack(inputs["masks"], 1)),
        )  # fmt: skip


def test_our_injects_go_first_in_both_registries_in_place_and_stay_first(pack):
    _, raylight = pack
    usp, cfg = (sys.modules[f"raylight.distributed_modules.{m}"] for m in ("usp", "cfg"))
    usp_registry, cfg_registry = usp.USPInjectRegistry._REGISTRY, cfg.CFGParallelInjectRegistry._REGISTRY

    class Flux:
        pass

    usp.USPInjectRegistry.register(Flux)(lambda *a: None)
    for _ in range(2):  # every load in every worker registers again
        raylight.register(AnyTalkerWan)
    assert usp.USPInjectRegistry._REGISTRY is usp_registry and cfg.CFGParallelInjectRegistry._REGISTRY is cfg_registry
    assert list(usp_registry) == [AnyTalkerWan, raylight_stub.WAN21, Flux]
    assert list(cfg_registry) == [AnyTalkerWan, raylight_stub.WAN21]
    assert usp_registry[AnyTalkerWan] is raylight.sequence_parallel_inject
    assert cfg.CFGParallelInjectRegistry.inject(types.SimpleNamespace(model=AnyTalkerWan(None))) is (
        raylight.cfg_parallel_wrapper
    )
    cfg.CFGParallelInjectRegistry.inject(types.SimpleNamespace(model=raylight_stub.WAN21()))  # a plain Wan: theirs
    assert raylight_stub.RAN == ["cfg"]


def test_raylight_settings_that_cannot_run_anytalker_are_refused_with_what_to_change(pack):
    _, raylight = pack
    with pytest.raises(ValueError, match="turn FSDP off"):
        raylight.parallel_plan({"is_fsdp": True, "is_xdit": True})
    with pytest.raises(ValueError, match="PipeFusion"):
        raylight.parallel_plan({"pipefusion_enabled": True})
    assert raylight.parallel_plan({"is_xdit": False}) == (1, 1)
    assert raylight.parallel_plan({"is_xdit": True, "ulysses_degree": 2, "ring_degree": 2, "cfg_degree": 2}) == (4, 2)


def test_the_loader_node_is_listed_only_where_raylight_is_installed(pack, monkeypatch, tmp_path):
    _, raylight = pack
    monkeypatch.delitem(sys.modules, "raylight")
    assert not raylight.raylight_installed()
    (tmp_path / "custom_nodes" / "raylight" / "src" / "raylight" / "distributed_modules").mkdir(parents=True)
    (tmp_path / "custom_nodes" / "raylight" / "src" / "raylight" / "distributed_modules" / "usp.py").write_text("")
    folders = sys.modules["folder_paths"].folder_names_and_paths
    monkeypatch.setitem(folders, "custom_nodes", ([str(tmp_path / "custom_nodes")], set()))
    assert raylight.raylight_installed()
    schema = hoststub.schema_dict(raylight.AnyTalkerRayModelLoader)
    assert [i["id"] for i in schema["inputs"]] == ["ray_actors_init", "model_name", "weight_dtype"]
    assert schema["inputs"][0]["type"] == "RAY_ACTORS_INIT" and all(i["tooltip"] for i in schema["inputs"])


def rank_with_raylight(rank: int, ranks: int, mode: str) -> tuple:
    """One Raylight worker: the pack and the stand-ins loaded, our injects registered, one model call.

    mode ``sequence``: Raylight's USP inject (an ON_LOAD callback) then a batch-1 call; ``cfg``: the CFG registry's
    wrapper around a cond + uncond batch; ``cfg_wan_chunks``: the same with only Raylight's Wan arguments split."""
    monkeypatch = pytest.MonkeyPatch()  # a spawned process: never undone
    nodes_model, raylight = load_pack(monkeypatch, Path(tempfile.mkdtemp()) / "models")
    usp, cfg = (sys.modules[f"raylight.distributed_modules.{m}"] for m in ("usp", "cfg"))
    raylight.register(AnyTalkerWan)
    dit = host_dit(nodes_model)
    patcher = types.SimpleNamespace(model=AnyTalkerWan(dit))
    if mode == "sequence":
        usp.USPInjectRegistry.inject(patcher, "cpu", 0, False, True)
        return host_call(dit), dit.sequence_group is not None, list(raylight_stub.RAN)
    if mode == "cfg_wan_chunks":
        raylight.CFG_CHUNKS = ("x", "timestep", "context", "clip_fea")
    options = {"wrappers": {"diffusion_model": {None: [cfg.CFGParallelInjectRegistry.inject(patcher)]}}}
    try:
        return host_call(dit, batch=2, options=options), False, list(raylight_stub.RAN)
    except ValueError as err:
        return str(err), False, list(raylight_stub.RAN)


def test_sequence_parallel_through_raylights_inject_equals_one_process(pack, tmp_path):
    nodes_model, _ = pack
    expected = host_call(host_dit(nodes_model))
    for out, split, ran in run_ranks(rank_with_raylight, 2, "sequence", tmp=tmp_path, timeout=TIMEOUT):
        assert split and ran == []  # ours ran, Raylight's Wan inject did not
        assert (out - expected).abs().max() <= 1e-5


def test_cfg_parallel_splits_our_conditioning_with_cond_and_uncond(pack, tmp_path):
    nodes_model, _ = pack
    expected = host_call(host_dit(nodes_model), batch=2)
    assert (expected[0] - expected[1]).abs().max() > 1e-3  # cond and uncond differ: a mix-up would show
    for out, _, ran in run_ranks(rank_with_raylight, 2, "cfg", tmp=tmp_path, timeout=TIMEOUT):
        assert ran == [] and out.shape == expected.shape
        assert (out - expected).abs().max() <= 1e-5
    # Raylight's Wan list alone leaves the voices, faces and masks whole: our inputs check says so, on every rank
    for message, _, _ in run_ranks(rank_with_raylight, 2, "cfg_wan_chunks", tmp=tmp_path, timeout=TIMEOUT):
        assert "bad AnyTalker inputs" in message and "`audio[0]` has shape (2," in message


class FakeWorker:
    """A Raylight ``RayWorker`` actor as the loader node calls it (``actor.method.remote(...)``); ``fail``: the
    message its model function raises, wrapped as Ray wraps a task's error."""

    def __init__(self, calls: list, fail: str | None = None):
        self.calls, self.fail = calls, fail
        for name in ("model_function_runner", "patch_usp", "patch_cfg"):
            setattr(self, name, types.SimpleNamespace(remote=lambda *a, _name=name: self._call(_name, *a)))

    def _call(self, name: str, *args):
        if self.fail and name == "model_function_runner":
            err = RuntimeError("ray::RayWorker.model_function_runner() (pid=1) ... the remote traceback ...")
            err.cause = ValueError(self.fail)  # Ray's RayTaskError keeps the worker's own exception here
            raise err
        self.calls.append((name, args))
        return name


def fake_raylight(monkeypatch, tmp_path: Path, parallel: dict, calls: list) -> None:
    """Ray and Raylight's actor helper as the node imports them, and a checkpoint in models/diffusion_models."""
    (tmp_path / "models" / "diffusion_models").mkdir(parents=True)
    (tmp_path / "models" / "diffusion_models" / "anytalker.safetensors").write_bytes(b"")
    ray = types.ModuleType("ray")
    ray.get = lambda futures: futures
    ray.cloudpickle = types.SimpleNamespace(register_pickle_by_value=lambda module: calls.append(("by_value", module)))
    worker_module = types.ModuleType("raylight.distributed_worker.ray_worker")
    worker_module.ensure_fresh_actors = lambda init: (init[0], init[0]["workers"], parallel)
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "raylight.distributed_worker", types.ModuleType("raylight.distributed_worker"))
    monkeypatch.setitem(sys.modules, "raylight.distributed_worker.ray_worker", worker_module)


@pytest.mark.parametrize("parallel, ranks, patches", [
    ({"is_xdit": True, "ulysses_degree": 2, "cfg_degree": 2}, 2, ["patch_usp"] * 2 + ["patch_cfg"] * 2),
    ({"is_xdit": True, "ulysses_degree": 1, "ring_degree": 1, "cfg_degree": 2}, 1, ["patch_cfg"] * 2),
    ({"is_xdit": False}, 1, []),
])  # fmt: skip
def test_the_loader_node_loads_our_model_on_every_worker_then_asks_for_usp_and_cfg(
    pack, monkeypatch, tmp_path, parallel, ranks, patches
):
    _, raylight = pack
    calls: list = []
    fake_raylight(monkeypatch, tmp_path, parallel, calls)
    actors = {"workers": [FakeWorker(calls), FakeWorker(calls)]}
    out = raylight.AnyTalkerRayModelLoader.execute((actors, None), "anytalker.safetensors", "fp8_e4m3fn")
    assert out.args == (actors,)
    assert calls[0] == ("by_value", raylight)  # load_on_worker travels as code: workers cannot import the pack
    path = str(tmp_path / "models" / "diffusion_models" / "anytalker.safetensors")
    loads = [args for name, args in calls if name == "model_function_runner"]
    assert loads == [(raylight.load_on_worker, raylight.PACK_DIR, raylight.PACKAGE, path, "fp8_e4m3fn", ranks)] * 2
    assert [name for name, _ in calls if name.startswith("patch")] == patches
    assert raylight.PACKAGE == PACK and Path(raylight.PACK_DIR) == REPO


def test_a_workers_error_reaches_the_artist_in_one_line(pack, monkeypatch, tmp_path):
    _, raylight = pack
    fake_raylight(monkeypatch, tmp_path, {"is_xdit": True, "ulysses_degree": 5, "ring_degree": 1}, [])
    heads = "needs the head count to be divisible by 5, but the model has 12 heads: use 2, 3, 4, 6, 12 ranks"
    actors = {"workers": [FakeWorker([], fail=heads)]}
    with pytest.raises(RuntimeError) as err:
        raylight.AnyTalkerRayModelLoader.execute((actors, None), "anytalker.safetensors", "default")
    assert str(err.value) == f"loading anytalker.safetensors on the Ray workers failed: {heads}"


def test_a_worker_without_the_pack_says_where_it_looked(pack, tmp_path):
    _, raylight = pack
    with pytest.raises(FileNotFoundError, match=r"not at .*elsewhere on the machine of this Ray worker: install it"):
        raylight.load_on_worker(None, str(tmp_path / "elsewhere"), "AnyTalker_missing", "x.safetensors", "default", 1)
    assert "AnyTalker_missing" not in sys.modules

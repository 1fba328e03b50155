"""The host's seams reach the AnyTalker DiT (``nodes/model.py``), checked without a host.

Two small stand-ins play the host's part, each following the host's own code (ComfyUI 0.33.0 and 0.3.64):
``comfy.patcher_extension`` (wrappers by type, a ``WrapperExecutor`` chain) and ``optimized_attention``
(which hands the call to ``transformer_options["optimized_attention_override"]`` when there is one). The real
hosts run the same checks with ``tests/tools/host_seams.py``.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import hoststub
from micro import micro_inputs, micro_model

REPO = Path(__file__).resolve().parents[1]
PACK = "ComfyUI_AnyTalker_seams"


@pytest.fixture
def host_model(monkeypatch, tmp_path):
    """``nodes.model`` with the stand-ins installed, and a micro ``HostDiT`` with the micro model's weights."""
    hoststub.install(monkeypatch, tmp_path / "models")
    hoststub.install_comfy(monkeypatch)
    spec = importlib.util.spec_from_file_location(PACK, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    monkeypatch.setitem(sys.modules, PACK, importlib.util.module_from_spec(spec))
    nodes_model = importlib.import_module(f"{PACK}.nodes.model")
    core = micro_model("af", num_layers=3)
    model = nodes_model.HostDiT(core.config, attention=nodes_model.host_attention)
    model.load_state_dict(core.state_dict())
    yield nodes_model, model.eval(), core
    for key in [k for k in sys.modules if k.startswith(PACK)]:
        del sys.modules[key]


def host_inputs(cfg, identities=2):
    inputs = micro_inputs(cfg, identities=identities)
    args = (torch.cat([inputs["x"], inputs["y"]], 1), inputs["t"], inputs["text"])
    stacked = {f"anytalker_{k}": torch.stack(inputs[k], 1) for k in ("audio", "faces", "masks")}
    kwargs = dict(clip_fea=inputs["clip"], **stacked)
    return inputs, args, kwargs


def call(model, args, kwargs, options):
    with torch.no_grad():
        return model(*args, **kwargs, transformer_options=options)


def test_diffusion_model_wrappers_run_around_the_forward_and_may_skip_it(host_model):
    """EasyCache's way: a DIFFUSION_MODEL wrapper finds the options last, and returns without the model."""
    _, model, _ = host_model
    _, args, kwargs = host_inputs(model.config)
    plain = call(model, args, kwargs, {})
    seen = []

    def observe(executor, *a, **kw):
        seen.append((a[-1], sorted(kw)))
        return executor(*a, **kw)

    options = {"wrappers": {"diffusion_model": {"probe": [observe]}}}
    assert torch.equal(call(model, args, kwargs, options), plain)
    assert seen[0][0] is options and seen[0][1] == ["anytalker_audio", "anytalker_faces", "anytalker_masks"]
    cached = torch.full_like(plain, 0.5)
    options = {"wrappers": {"diffusion_model": {"skip": [lambda executor, *a, **kw: cached]}}}
    assert call(model, args, kwargs, options) is cached


def test_a_dit_block_replacement_is_called_once_per_block_with_wans_arguments(host_model):
    _, model, _ = host_model
    _, args, kwargs = host_inputs(model.config)
    plain = call(model, args, kwargs, {})
    calls = []

    def through(args, extra):
        options = args["transformer_options"]
        calls.append((options["block_index"], options["total_blocks"], tuple(options["grid_sizes"]), sorted(args)))
        return extra["original_block"](args)

    blocks = len(model.blocks)
    replace = {("double_block", i): through for i in range(blocks)}
    assert torch.equal(call(model, args, kwargs, {"patches_replace": {"dit": replace}}), plain)
    grid = (args[0].shape[2], args[0].shape[3] // 2, args[0].shape[4] // 2)
    assert calls == [(i, blocks, grid, ["img", "pe", "transformer_options", "txt", "vec"]) for i in range(blocks)]
    skipped = call(model, args, kwargs, {"patches_replace": {"dit": {("double_block", 1): lambda a, e: a}}})
    assert not torch.equal(skipped, plain)  # skip-layer guidance's way: the block's output is its input


def test_an_attention_override_sees_every_attention_the_identity_attention_included(host_model):
    _, model, _ = host_model
    inputs, args, kwargs = host_inputs(model.config, identities=2)
    plain = call(model, args, kwargs, {})
    seen = []

    def override(func, q, k, v, heads, **kw):
        seen.append((kw["transformer_options"]["block_index"], k.shape[1]))
        return func(q, k, v, heads, **kw)

    assert torch.equal(call(model, args, kwargs, {"optimized_attention_override": override}), plain)
    cfg, frames = model.config, inputs["x"].shape[2]
    tokens = frames * inputs["x"].shape[3] * inputs["x"].shape[4] // 4
    video_frames = 4 * (frames - 1) + 1
    identity = [cfg.clip_tokens + video_frames * cfg.audio_tokens, cfg.clip_tokens + 4 * cfg.audio_tokens]
    per_block = [tokens, inputs["text"].shape[1] + 1, cfg.clip_tokens, *identity, *identity]
    assert seen == [(i, n) for i in range(len(model.blocks)) for n in per_block]


def test_attention_patches_run_once_per_block(host_model):
    _, model, _ = host_model
    _, args, kwargs = host_inputs(model.config)
    plain = call(model, args, kwargs, {})
    count = {}

    def wan_patch(name):
        def patch(args):
            count[name] = count.get(name, 0) + 1
            assert "block_index" in args["transformer_options"]
            return args["x"]

        return patch

    def output_patch(name):
        def patch(out, extra_options):
            count[name] = count.get(name, 0) + 1
            assert extra_options["n_heads"] == model.config.num_heads
            return out

        return patch

    names = ("attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch")
    patches = {n: [(wan_patch if n.count("_") == 1 else output_patch)(n)] for n in names}
    assert torch.equal(call(model, args, kwargs, {"patches": patches}), plain)
    assert count == {n: len(model.blocks) for n in names}
    halve = {"attn2_output_patch": [lambda out, extra: out * 0.5]}
    assert not torch.equal(call(model, args, kwargs, {"patches": halve}), plain)


def test_the_context_cache_and_a_deep_copy_on_another_device_give_the_same_prediction(host_model):
    """What a multi-GPU work unit does: a fresh copy of the model moved to its device, the same conditioning."""
    _, model, _ = host_model
    _, args, kwargs = host_inputs(model.config)
    plain = call(model, args, kwargs, {})
    with model.context_cache(1 << 30) as cache:
        for _ in range(2):
            assert (call(model, args, kwargs, {}) - plain).abs().max() <= 1e-6
    assert cache.hits == 1
    twin = copy.deepcopy(model).to(torch.float64).to(torch.float32)  # .to() moves every parameter and back
    moved = {k: v.to("cpu") for k, v in kwargs.items()}
    assert torch.equal(call(twin, args, moved, {}), plain)
    assert twin._context_cache is None


def test_cond_and_uncond_split_over_devices_predict_as_one_batch(host_model):
    """The host's CFG split (MultiGPU work units) runs the positive on one device and the negative on another,
    each with its own ``anytalker_*`` conditioning (the negative's voices are zero): the same numbers as the one
    batch of two on one device (``tests/tools/host_cfg_split.py`` runs the host's own scheduler)."""
    _, model, _ = host_model
    _, args, kwargs = host_inputs(model.config)
    x, t, text = args
    negative = dict(kwargs, anytalker_audio=torch.zeros_like(kwargs["anytalker_audio"]))
    negative_text = torch.randn(text.shape, generator=torch.Generator().manual_seed(1))
    pair = {k: torch.cat([kwargs[k], negative[k]]) for k in kwargs}
    batched = call(model, (x.repeat(2, 1, 1, 1, 1), t.repeat(2), torch.cat([text, negative_text])), pair, {})
    twin = copy.deepcopy(model)  # the other device's fresh copy
    cond = call(model, args, kwargs, {})
    uncond = call(twin, (x, t, negative_text), negative, {})
    assert (batched[:1] - cond).abs().max() <= 1e-5
    assert (batched[1:] - uncond).abs().max() <= 1e-5
    assert not torch.allclose(cond, uncond, atol=1e-3)  # the voices matter: a swap would show

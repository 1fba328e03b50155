"""Sampling: the schedule, the solvers, guidance, and the golden sampling fixture (variant af)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch

import anytalker_core as at
from anytalker_core.sampling import (
    SOLVER_NAMES,
    SOLVERS,
    SamplingCancelled,
    flow_sigmas,
    get_solver,
    negative_cond,
    null_audio,
    sample,
)
from anytalker_core.sampling.schedule import timestep_lookup
from anytalker_core.sampling.solvers import sample_dpmpp_2m, sample_euler, sample_unipc
from golden import REFERENCE, requires_shared, rule_audio, rule_state_dict

SAMPLING = REFERENCE / "sampling"
SOLVER_FNS = {"unipc": sample_unipc, "euler": sample_euler, "dpmpp_2m": sample_dpmpp_2m}


# ---------------------------------------------------------------------------------------------------------
# the golden fixture


@lru_cache(maxsize=None)
def _fixture():
    from safetensors.torch import load_file

    meta = json.loads((SAMPLING / "sampling.json").read_text())
    tensors = load_file(str(SAMPLING / "sampling.safetensors"))
    model = at.load_dit(rule_state_dict("af"), config=meta["config"])
    n, t = meta["identities"], meta["T"]
    audio = [rule_audio(seed=meta["seed"], identity=i, latent_frames=t) for i in range(n)]
    faces = [tensors[f"in.faces.{i}"] for i in range(n)]
    masks = [tensors[f"in.masks.{i}"] for i in range(n)]
    common = dict(clip=tensors["in.clip"], y=tensors["in.y"], faces=faces, masks=masks)
    cond = dict(text=tensors["in.text"], audio=audio, **common)
    uncond = negative_cond(cond, tensors["in.negative_text"])
    return meta, tensors, model, cond, uncond


def _run_fixture(batch_cfg: bool):
    meta, tensors, model, cond, uncond = _fixture()
    noise = tensors["in.noise"]
    if noise.dim() == 4:
        noise = noise[None]
    x0s = []
    latent = sample(
        model,
        noise,
        steps=meta["steps"],
        shift=meta["shift"],
        guidance=meta["guidance"],
        cond=cond,
        uncond=uncond,
        solver="unipc",
        callback=lambda i, n, x0: x0s.append(x0.clone()),
        batch_cfg=batch_cfg,
    )
    sigma0 = tensors["sigmas"][0]
    pred0 = (noise - x0s[0]) / sigma0  # x0 = x - sigma * v  =>  v = (x - x0) / sigma
    return meta, tensors, latent, pred0


@requires_shared
def test_fixture_schedule_exact():
    meta = json.loads((SAMPLING / "sampling.json").read_text())
    from safetensors.torch import load_file

    tensors = load_file(str(SAMPLING / "sampling.safetensors"))
    sigmas, timesteps = flow_sigmas(meta["steps"], meta["shift"])
    assert sigmas.dtype == torch.float32 and timesteps.dtype == torch.int64
    assert torch.equal(sigmas, tensors["sigmas"])
    assert torch.equal(timesteps, tensors["timesteps"])
    assert timesteps.tolist() == meta["timesteps"] and sigmas.tolist() == meta["sigmas"]


@requires_shared
@pytest.mark.parametrize("batch_cfg", [True, False], ids=["batched", "separate"])
def test_fixture_unipc_matches_reference(batch_cfg):
    _, tensors, latent, pred0 = _run_fixture(batch_cfg)
    ref = tensors["out.latent"].reshape(latent.shape)
    assert latent.shape == ref.shape and latent.dtype == torch.float32
    assert (pred0 - tensors["out.pred_step0"].reshape(pred0.shape)).abs().max().item() < 1e-4
    assert (latent - ref).abs().max().item() < 1e-3


@requires_shared
def test_fixture_first_prediction_direct_hook():
    """The first guided velocity, caught at the model call itself (no x0 round trip)."""
    meta, tensors, model, cond, uncond = _fixture()
    noise = tensors["in.noise"].reshape(1, 16, meta["T"], meta["H"], meta["W"])
    calls = []

    def hooked(x, t, **kw):
        out = model(x, t, **kw)
        calls.append((t.clone(), out))
        return out

    with pytest.raises(SamplingCancelled):
        sample(
            hooked,
            noise,
            steps=meta["steps"],
            shift=meta["shift"],
            guidance=meta["guidance"],
            cond=cond,
            uncond=uncond,
            batch_cfg=False,
            should_stop=lambda: len(calls) > 0,
        )
    (t_c, v_c), (t_u, v_u) = calls
    assert t_c.dtype == torch.int64 and t_c.tolist() == [meta["timesteps"][0]] == t_u.tolist()
    pred = v_u + meta["guidance"] * (v_c - v_u)
    assert (pred - tensors["out.pred_step0"].reshape(pred.shape)).abs().max().item() < 1e-4


@requires_shared
def test_fixture_guidance_one_and_audio_guidance():
    meta, tensors, model, cond, uncond = _fixture()
    noise = tensors["in.noise"].reshape(1, 16, meta["T"], meta["H"], meta["W"])
    calls = []

    def counting(x, t, **kw):
        calls.append(x.shape[0])
        return model(x, t, **kw)

    sample(counting, noise, steps=2, guidance=1.0, cond=cond, uncond=None)
    assert calls == [1, 1]  # guidance 1: the cond pass only
    calls.clear()
    a = sample(counting, noise, steps=2, guidance=4.5, audio_guidance=4.5, cond=cond, uncond=uncond)
    assert calls == [3, 3]  # three passes, batched
    b = sample(model, noise, steps=2, guidance=4.5, cond=cond, uncond=uncond)
    assert (a - b).abs().max().item() < 1e-4  # audio scale == text scale is plain guidance


# ---------------------------------------------------------------------------------------------------------
# schedule


@pytest.mark.parametrize("steps,shift", [(1, 5.0), (2, 1.0), (10, 3.0), (40, 5.0), (50, 8.0), (25, 0.5)])
def test_schedule_shape_monotone_ends_at_zero(steps, shift):
    sigmas, timesteps = flow_sigmas(steps, shift)
    assert sigmas.shape == (steps + 1,) and timesteps.shape == (steps,)
    assert sigmas.dtype == torch.float32 and timesteps.dtype == torch.int64
    assert sigmas[-1].item() == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    assert bool((timesteps[1:] <= timesteps[:-1]).all())
    assert 0 < sigmas[0].item() <= 1.0 and 0 <= timesteps.min().item() and timesteps.max().item() <= 999


def test_schedule_known_values():
    # the reference scheduler's values at shift 5 (float32 sigma_max = shifted 1 - 1/1000 ...)
    sigmas, timesteps = flow_sigmas(4, 5.0)
    assert timesteps.tolist() == [999, 937, 833, 624]
    assert sigmas.tolist() == [0.9999599456787109, 0.9374530911445618, 0.833277702331543, 0.6249374151229858, 0.0]
    assert flow_sigmas(40, 5.0)[1].tolist()[:4] == [999, 994, 989, 984]


SCHEDULE = Path(__file__).parent / "fixtures" / "schedule"


def test_schedule_is_the_reference_scheduler_for_every_shift():
    """tests/tools/make_schedule_fixtures.py: the reference's class, built with shift 5, set_timesteps(shift=s)."""
    cases = json.loads((SCHEDULE / "schedule.json").read_text())["cases"]
    assert {c["shift"] for c in cases} == {1.0, 3.0, 5.0, 7.5} and {c["steps"] for c in cases} == {4, 6, 20, 40}
    for case in cases:
        sigmas, timesteps = flow_sigmas(case["steps"], case["shift"])
        assert timesteps.dtype == torch.int64 and timesteps.tolist() == case["timesteps"], case["shift"]
        assert (sigmas - torch.tensor(case["sigmas"], dtype=torch.float32)).abs().max() <= 1e-7
    # shifting the end points by the sample shift too (the easy mistake) is not the reference's schedule
    wrong, _ = flow_sigmas(6, 3.0, scheduler_shift=3.0)
    assert 1e-6 < (wrong - flow_sigmas(6, 3.0)[0]).abs().max() < 1e-4


def test_a_shift_3_run_matches_the_reference_scheduler_step_by_step():
    from safetensors.torch import load_file

    run = load_file(str(SCHEDULE / "run.safetensors"))
    info = json.loads((SCHEDULE / "run.json").read_text())
    weight, bias = run["model.weight"], run["model.bias"]
    sigmas, timesteps = flow_sigmas(info["steps"], info["shift"])
    assert torch.equal(timesteps, run["timesteps"])
    timestep = timestep_lookup(sigmas, timesteps)
    seen = []

    def denoise(x, sigma):
        t = torch.tensor(timestep(float(sigma)), dtype=torch.int64)
        seen.append(int(t))
        v = torch.tanh(torch.einsum("oc,bcthw->bothw", weight, x) + bias.view(1, -1, 1, 1, 1) * (t.float() / 1000))
        return x - sigma * (v + x / 2)

    latent = sample_unipc(denoise, run["in.noise"].clone(), sigmas)
    assert seen == run["timesteps"].tolist()
    assert (latent - run["out.latent"]).abs().max() <= 1e-5


def test_timestep_lookup_schedule_and_other_sigmas():
    sigmas, timesteps = flow_sigmas(4, 5.0)
    timestep = timestep_lookup(sigmas, timesteps)
    assert [timestep(s) for s in sigmas[:-1].tolist()] == timesteps.tolist()
    assert timestep(0.5) == 500 and timestep(0.0) == 0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(steps=0), "steps"),
        (dict(steps=-3), "steps"),
        (dict(steps=4, shift=0.0), "shift"),
        (dict(steps=4, shift=-1.0), "shift"),
    ],
)
def test_schedule_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        flow_sigmas(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# solvers on toy problems


def test_solver_names_and_table():
    assert SOLVER_NAMES == ("unipc", "euler", "dpmpp_2m") == tuple(SOLVERS)
    assert all(get_solver(name) is SOLVER_FNS[name] is SOLVERS[name] for name in SOLVER_NAMES)
    for bad in ("ddim", None, "UniPC"):
        with pytest.raises(ValueError, match="expected one of unipc, euler, dpmpp_2m"):
            get_solver(bad)


def _toy_velocity_model(target: torch.Tensor, steps: int, shift: float = 5.0):
    """A 'model' whose velocity is exact for data = target: v = (x - target) / sigma (sigma of timestep t)."""
    sigmas, timesteps = flow_sigmas(steps, shift)
    sigma_of = dict(zip(timesteps.tolist(), sigmas.tolist()))

    def model(x, t, **kw):
        sigma = torch.tensor([sigma_of[int(v)] for v in t]).reshape(-1, 1, 1, 1, 1)
        return (x - target) / sigma

    return model


def _toy_cond():
    return dict(text=torch.zeros(1, 3, 8), clip=torch.zeros(1, 1, 1), y=torch.zeros(1, 1))


@pytest.mark.parametrize("solver", sorted(SOLVER_FNS))
@pytest.mark.parametrize("steps", [1, 2, 5, 12])
def test_solvers_converge_to_known_x0(solver, steps):
    g = torch.Generator().manual_seed(1)
    target = torch.randn(2, 16, 3, 4, 4, generator=g)
    noise = torch.randn(2, 16, 3, 4, 4, generator=g)
    sigmas, _ = flow_sigmas(steps, 5.0)
    out = SOLVER_FNS[solver](lambda x, s: target.clone(), noise, sigmas)
    assert out.shape == target.shape
    assert (out - target).abs().max().item() < 1e-5


@pytest.mark.parametrize("solver", sorted(SOLVER_FNS))
def test_solvers_integrate_a_linear_flow(solver):
    """A denoiser whose x0 depends on x: the flow ODE of a Gaussian; more steps, closer to the exact end."""
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(1, 4, 1, 8, 8, generator=g, dtype=torch.float64)
    mu, s2 = 0.5, 0.25  # data ~ N(mu, s2): E[x0 | x_sigma] is linear in x

    def denoise(x, sigma):
        s = sigma.reshape(-1, 1, 1, 1, 1).to(torch.float64)
        a = 1 - s
        return mu + a * s2 / (a * a * s2 + s * s) * (x - a * mu)

    # exact ODE solution from sigma=1 (x = noise): x0 = mu + sqrt(s2) * noise
    exact = mu + s2**0.5 * noise
    errs = [
        (SOLVER_FNS[solver](denoise, noise, flow_sigmas(n, 1.0)[0].double()) - exact).abs().max().item()
        for n in (8, 32)
    ]
    # (the schedule starts at sigma 0.999, not 1, which leaves a small floor); Euler is first order
    assert errs[1] < errs[0] and errs[1] < {"euler": 0.1, "dpmpp_2m": 3e-2, "unipc": 3e-2}[solver]
    if solver == "euler":
        assert errs[1] < 0.3 * errs[0]


@pytest.mark.parametrize("solver", sorted(SOLVER_FNS))
def test_callback_every_step_and_cancellation(solver):
    target = torch.ones(1, 16, 1, 2, 2)
    sigmas, _ = flow_sigmas(6, 5.0)
    seen, evals = [], []

    def denoise(x, s):
        evals.append(s)
        return target

    SOLVER_FNS[solver](denoise, torch.zeros_like(target), sigmas, callback=lambda i, n, x0: seen.append((i, n, x0)))
    assert [(i, n) for i, n, _ in seen] == [(i, 6) for i in range(6)]
    assert all(torch.equal(x0, target) for *_, x0 in seen) and len(evals) == 6
    assert all(e.shape == (1,) for e in evals)

    seen.clear()
    evals.clear()
    with pytest.raises(SamplingCancelled) as info:
        SOLVER_FNS[solver](
            denoise,
            torch.zeros_like(target),
            sigmas,
            callback=lambda i, n, x0: seen.append(i),
            should_stop=lambda: len(seen) >= 3,
        )
    assert info.value.steps_done == 3 and info.value.total == 6
    assert seen == [0, 1, 2] and len(evals) == 3


@pytest.mark.parametrize("solver", sorted(SOLVER_FNS))
def test_sample_deterministic_and_exact_on_toy_model(solver):
    target = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    model = _toy_velocity_model(target, 5)
    cond, uncond = _toy_cond(), _toy_cond()
    a = sample(model, noise, steps=5, guidance=4.5, cond=cond, uncond=uncond, solver=solver)
    b = sample(model, noise.clone(), steps=5, guidance=4.5, cond=cond, uncond=uncond, solver=solver)
    assert torch.equal(a, b)
    # the toy's velocity knows x0 exactly, so the end is the target
    assert (a - target).abs().max().item() < 1e-4


def test_sample_batches_identities_per_identity():
    seen = {}

    def model(x, t, **kw):
        seen.update(kw, b=x.shape[0], t=t)
        return torch.zeros_like(x)

    faces = [torch.full((1, 5, 4), float(i)) for i in range(3)]
    masks = [torch.full((1, 2, 2, 2), float(i)) for i in range(3)]
    audio = [torch.full((1, 5, 5, 12, 8), float(i + 1)) for i in range(3)]
    cond = dict(
        text=torch.ones(1, 7, 8), clip=torch.zeros(1, 1, 1), y=torch.zeros(1, 1), audio=audio, faces=faces, masks=masks
    )
    uncond = negative_cond(cond, torch.ones(1, 4, 8))
    sample(model, torch.zeros(1, 16, 2, 4, 4), steps=1, cond=cond, uncond=uncond)
    assert seen["b"] == 2 and seen["t"].tolist() == [999, 999] and seen["t"].dtype == torch.int64
    assert seen["text"].shape == (2, 7, 8) and seen["text"][1, 4:].abs().sum() == 0  # zero-padded negative
    assert len(seen["audio"]) == 3 and len(seen["faces"]) == 3 and len(seen["masks"]) == 3
    for i in range(3):
        assert seen["audio"][i].shape[0] == 2
        assert bool((seen["audio"][i][0] == i + 1).all()) and bool((seen["audio"][i][1] == 0).all())
        assert torch.equal(seen["faces"][i], faces[i].repeat(2, 1, 1))
        assert torch.equal(seen["masks"][i], masks[i].repeat(2, 1, 1, 1))


def test_sample_separate_calls_when_identities_differ():
    calls = []

    def model(x, t, **kw):
        calls.append(len(kw.get("audio") or []))
        return torch.zeros_like(x)

    cond = dict(
        _toy_cond(), audio=[torch.ones(1, 5, 5, 12, 8)], faces=[torch.ones(1, 5, 4)], masks=[torch.ones(1, 2, 2, 2)]
    )
    sample(model, torch.zeros(1, 16, 2, 4, 4), steps=1, cond=cond, uncond=_toy_cond())
    assert calls == [1, 0]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(solver="ddim"), "unipc, euler, dpmpp_2m"),
        (dict(steps=0), "steps"),
        (dict(shift=0.0), "shift"),
        (dict(shift=-2.0), "shift"),
        (dict(uncond=None), "uncond"),
    ],
)
def test_sample_rejects_bad_arguments(kwargs, match):
    args = dict(steps=2, shift=5.0, guidance=4.5, cond=_toy_cond(), uncond=_toy_cond(), solver="unipc")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample(lambda x, t, **kw: x, torch.zeros(1, 16, 1, 2, 2), **args)


# ---------------------------------------------------------------------------------------------------------
# the unconditional inputs


def test_null_audio_zeros_of_the_same_shapes():
    one = torch.randn(1, 5, 5, 12, 8, dtype=torch.float64)
    zero = null_audio(one)
    assert isinstance(zero, torch.Tensor) and zero.shape == one.shape and zero.dtype == torch.float64
    assert not zero.any() and one.any()  # the input is left alone
    many = [torch.randn(1, 5, 5, 12, 8), torch.randn(1, 3, 5, 12, 8)]
    zeros = null_audio(many)
    assert isinstance(zeros, list) and [z.shape for z in zeros] == [a.shape for a in many]
    assert not any(z.any() for z in zeros)
    assert null_audio(tuple(many))[1].shape == many[1].shape and null_audio(None) is None
    with pytest.raises(TypeError, match="audio"):
        null_audio([torch.ones(1), "x"])


def test_negative_cond_keeps_everything_but_audio_and_text():
    audio = [torch.ones(1, 5, 5, 12, 8), torch.full((1, 5, 5, 12, 8), 2.0)]
    cond = dict(_toy_cond(), audio=audio, faces=[torch.ones(1, 5, 4)] * 2, masks=[torch.ones(1, 2, 2, 2)] * 2)
    negative = torch.full((1, 4, 8), 3.0)
    unc = negative_cond(cond, negative)
    assert unc["text"] is negative and all(unc[k] is cond[k] for k in ("clip", "y", "faces", "masks"))
    assert [a.shape for a in unc["audio"]] == [a.shape for a in audio] and not any(a.any() for a in unc["audio"])
    assert cond["audio"] is audio and audio[0].all()  # cond itself is unchanged
    silent = negative_cond(cond)
    assert silent["text"] is cond["text"] and not any(a.any() for a in silent["audio"])
    assert "audio" not in negative_cond(_toy_cond()) and negative_cond(dict(_toy_cond(), audio=None))["audio"] is None


def test_sample_defaults_follow_the_model_variant_and_the_clip_size():
    """at.sample without steps/shift: the reference's 40 (af) or 20 (legacy) steps, shift 3 at 480p else 5."""
    from anytalker_core.sampling.defaults import default_shift

    calls = []

    class Model:
        def __init__(self, variant):
            self.config = type("Config", (), {"variant": variant})()

        def __call__(self, x, t, **inputs):
            calls.append(int(t[0]))
            return torch.zeros_like(x)

    cond = {"text": torch.zeros(1, 1, 4), "clip": torch.zeros(1, 1, 4), "y": torch.zeros(1)}
    for variant, steps in (("af", 40), ("legacy", 20)):
        calls.clear()
        at.sample(Model(variant), torch.randn(1, 16, 1, 4, 6), guidance=1.0, cond=cond)
        assert len(calls) == steps
    calls.clear()
    at.sample(Model("legacy"), torch.randn(1, 16, 1, 60, 104), guidance=1.0, cond=cond)  # 480x832
    assert calls == flow_sigmas(20, 3.0)[1].tolist()
    assert default_shift(480, 832) == default_shift(832, 480) == default_shift(448, 832) == 3.0
    assert default_shift(720, 1280) == default_shift(512, 512) == default_shift(64, 96) == 5.0

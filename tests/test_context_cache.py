"""The per-run context cache: a run with it gives the run without it, each conditioning keeps its own entry."""

from __future__ import annotations

import pytest
import torch

import anytalker_core as at
from anytalker_core.sampling import negative_cond
from micro import micro_inputs, micro_model, run

VARIANTS = ["af", "legacy"]


def conds(model, identities=2):
    inputs = micro_inputs(model.config, identities=identities)
    noise = inputs.pop("x")
    inputs.pop("t")
    negative = torch.randn(1, 3, model.config.text_dim, generator=torch.Generator().manual_seed(7))
    return noise, inputs, negative_cond(inputs, negative)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batch_cfg", [True, False])
def test_a_cached_run_equals_an_uncached_one(variant, batch_cfg):
    model = micro_model(variant)
    noise, cond, uncond = conds(model)
    plain = at.sample(model, noise, steps=4, shift=3.0, cond=cond, uncond=uncond, batch_cfg=batch_cfg)
    with model.context_cache(1 << 30) as cache:
        cached = at.sample(model, noise, steps=4, shift=3.0, cond=cond, uncond=uncond, batch_cfg=batch_cfg)
    assert (cached - plain).abs().max() <= 1e-6
    # cond and uncond batched: one conditioning; one call each: two, never shared
    assert len(cache.entries) == (1 if batch_cfg else 2)
    assert cache.hits == 4 * len(cache.entries) - len(cache.entries) and cache.refused == 0
    blocks = model.config.num_layers
    stored = sum(len(entry.kv) for entry in cache.entries)  # text, picture and one per identity, per block
    assert stored == len(cache.entries) * blocks * (2 + 2)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_unconditional_pass_never_reuses_the_conditional_ones_keys(variant):
    """cond first fills the cache; uncond (its audio zeroed, its own text) then gets its own exact result."""
    model = micro_model(variant)
    noise, cond, uncond = conds(model)
    t = torch.tensor([500])
    expected = run(model, dict(uncond, x=noise, t=t))
    only_audio = negative_cond(cond)  # the same text: only the audio tells the two apart
    outside = run(model, dict(only_audio, x=noise, t=t))
    with model.context_cache(1 << 30) as cache:
        run(model, dict(cond, x=noise, t=t))
        assert torch.equal(run(model, dict(uncond, x=noise, t=t)), expected)
        assert torch.equal(run(model, dict(only_audio, x=noise, t=t)), outside)
    assert len(cache.entries) == 3


def test_a_conditioning_changed_in_place_is_a_new_entry():
    model = micro_model("af")
    noise, cond, _ = conds(model)
    t = torch.tensor([500])
    with model.context_cache(1 << 30) as cache:
        run(model, dict(cond, x=noise, t=t))
        cond["faces"][1].mul_(2.0)  # a caller reusing its buffer
        changed = run(model, dict(cond, x=noise, t=t))
    assert len(cache.entries) == 2
    assert torch.equal(changed, run(model, dict(cond, x=noise, t=t)))


def test_the_budget_bounds_the_memory_and_not_the_result():
    model = micro_model("af", num_layers=3)
    noise, cond, uncond = conds(model, identities=3)
    plain = at.sample(model, noise, steps=3, shift=3.0, cond=cond, uncond=uncond)
    with model.context_cache(1 << 30) as full:
        at.sample(model, noise, steps=3, shift=3.0, cond=cond, uncond=uncond)
    budget = full.bytes // 2
    with model.context_cache(budget) as half:
        cached = at.sample(model, noise, steps=3, shift=3.0, cond=cond, uncond=uncond)
    assert 0 < half.bytes <= budget and half.refused > 0
    assert (cached - plain).abs().max() <= 1e-6
    with model.context_cache(0) as none:
        assert (at.sample(model, noise, steps=3, shift=3.0, cond=cond, uncond=uncond) - plain).abs().max() <= 1e-6
    assert none.bytes == 0 and none.entries == []


def test_the_cache_is_closed_after_the_run_even_when_it_fails():
    model = micro_model("af")
    with pytest.raises(RuntimeError), model.context_cache(1 << 20):
        raise RuntimeError("cancelled")
    assert model._context_cache is None
    with pytest.raises(ValueError, match="max_bytes"):
        with model.context_cache(-1):
            pass

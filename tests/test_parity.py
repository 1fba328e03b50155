"""Exact parity with the reference forward (golden fixtures in shared/reference/forward)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import anytalker_core as at
from golden import (
    FORWARD,
    REFERENCE,
    requires_shared,
    rule_audio,
    rule_state_dict,
    state_dict_sha256,
    summary,
    tensor_sha256,
)

pytestmark = requires_shared
CASES = [(variant, case) for variant in ("af", "legacy") for case in ("two_ids", "one_id")]


@pytest.fixture(scope="module")
def published_file(tmp_path_factory):
    """Per variant: the rule weights written as the published container, {'model': state_dict} in a .pth."""
    paths = {}

    def get(variant: str):
        if variant not in paths:
            state = rule_state_dict(variant)
            assert state_dict_sha256(state) == summary()[variant]["weights_sha256"], "weight rule drifted"
            paths[variant] = tmp_path_factory.mktemp(variant) / f"{variant}.pth"
            torch.save({"model": state}, paths[variant])
        return paths[variant]

    return get


@pytest.fixture(scope="module")
def loaded(published_file):
    models = {}

    def get(variant: str) -> at.AnyTalkerDiT:
        if variant not in models:
            models[variant] = at.load_dit(published_file(variant), config=FORWARD / f"{variant}.config.json")
        return models[variant]

    return get


def case_inputs(variant: str, case: str) -> tuple[dict, torch.Tensor]:
    info = summary()[variant]["cases"][case]
    stored = load_file(str(FORWARD / f"{variant}.{case}.safetensors"))
    n = info["identities"]
    audio = [rule_audio(info["seed"], i, info["T"]) for i in range(n)]
    for i, feats in enumerate(audio):
        assert tensor_sha256(feats) == info["input_sha256"][f"in.audio.{i}"], "audio input rule drifted"
    inputs = dict(
        x=stored["in.x"],
        t=stored["in.t"],
        text=stored["in.text"],
        clip=stored["in.clip"],
        y=stored["in.y"],
        audio=audio,
        faces=[stored[f"in.faces.{i}"] for i in range(n)],
        masks=[stored[f"in.masks.{i}"] for i in range(n)],
    )
    return inputs, stored["out.pred"]


@pytest.mark.parametrize("variant,case", CASES)
def test_forward_matches_reference(loaded, variant, case):
    model = loaded(variant)
    assert model.config.variant == variant
    inputs, golden = case_inputs(variant, case)
    with torch.no_grad():
        pred = model(inputs.pop("x"), inputs.pop("t"), **inputs)
    assert pred.dtype == torch.float32 and pred.shape == golden.shape
    assert (pred - golden).abs().max().item() <= 1e-4


@pytest.mark.parametrize("variant", ["af", "legacy"])
def test_variant_and_sizes_come_from_the_weights(published_file, variant):
    """Without a config everything but num_heads / text_len is read from shapes."""
    reference_kwargs = json.loads((FORWARD / f"{variant}.config.json").read_text())
    model = at.load_dit(published_file(variant), config={"num_heads": 4, "text_len": 16})
    cfg = model.config
    assert cfg.variant == variant
    for key in ("dim", "ffn_dim", "num_layers", "in_dim", "out_dim", "text_dim", "freq_dim"):
        assert getattr(cfg, key) == reference_kwargs[key], key


def test_guided_first_sampling_step_matches_reference(published_file):
    """The sampling fixture's first guided prediction: cond and uncond (negative text, zeroed audio)."""
    stored = load_file(str(REFERENCE / "sampling" / "sampling.safetensors"))
    info = json.loads((REFERENCE / "sampling" / "sampling.json").read_text())
    model = at.load_dit(published_file("af"), config=info["config"])
    audio = [rule_audio(info["seed"], i, info["T"]) for i in range(info["identities"])]
    shared = dict(
        clip=stored["in.clip"],
        y=stored["in.y"],
        faces=[stored[f"in.faces.{i}"] for i in range(info["identities"])],
        masks=[stored[f"in.masks.{i}"] for i in range(info["identities"])],
    )
    t = stored["timesteps"][:1]  # int64, as the reference scheduler hands it over
    with torch.no_grad():
        cond = model(stored["in.noise"], t, text=stored["in.text"], audio=audio, **shared)
        uncond = model(
            stored["in.noise"], t, text=stored["in.negative_text"], audio=[torch.zeros_like(a) for a in audio], **shared
        )
    guided = uncond + info["guidance"] * (cond - uncond)
    assert (guided - stored["out.pred_step0"]).abs().max().item() <= 1e-4

"""Checkpoint loading on tiny weights in the real file formats, and its error messages."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

import anytalker_core as at
from micro import micro_config, micro_inputs, micro_model, run


@pytest.fixture(scope="module", params=["af", "legacy"])
def source(request):
    model = micro_model(request.param)
    return model, run(model, micro_inputs(model.config))


def state_of(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_model(loaded, model, expected):
    """Bit-identical weights; outputs equal up to float rounding (gemm kernels depend on alignment)."""
    reference = model.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())
    assert (run(loaded, micro_inputs(model.config)) - expected).abs().max() < 1e-5


def test_pth_as_published_round_trips(source, tmp_path):
    model, expected = source
    torch.save({"model": state_of(model)}, tmp_path / "dit.pth")
    loaded = at.load_dit(tmp_path / "dit.pth", config=model.config)
    assert not any(p.is_meta for p in loaded.parameters())
    assert_same_model(loaded, model, expected)


def test_safetensors_with_comfyui_prefix_round_trips(source, tmp_path):
    model, expected = source
    prefixed = {f"model.diffusion_model.{k}": v for k, v in state_of(model).items()}
    prefixed["first_stage_model.decoder.weight"] = torch.zeros(2)  # other parts of a full checkpoint
    save_file(prefixed, tmp_path / "dit.safetensors")
    loaded = at.load_dit(str(tmp_path / "dit.safetensors"), config=model.config)
    assert_same_model(loaded, model, expected)


def test_folder_of_shards_with_index_and_config(source, tmp_path):
    model, expected = source
    state = state_of(model)
    keys = sorted(state)
    shards = {"part-1.safetensors": keys[: len(keys) // 2], "part-2.safetensors": keys[len(keys) // 2 :]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, tmp_path / name)
    weight_map = {k: name for name, part in shards.items() for k in part}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    cfg = model.config
    (tmp_path / "config.json").write_text(json.dumps({k: getattr(cfg, k) for k in cfg.__dataclass_fields__}))
    loaded = at.load_dit(tmp_path)  # the folder's config.json supplies num_heads and the audio sizes
    assert loaded.config == cfg
    assert_same_model(loaded, model, expected)


def test_dtype_and_device_are_applied(source):
    model, _ = source
    loaded = at.load_dit(state_of(model), config=model.config, dtype=torch.float16, device="cpu")
    assert {p.dtype for p in loaded.parameters()} == {torch.float16}
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_unsupported_dtype_is_named():
    with pytest.raises(ValueError, match="dtype torch.float8_e4m3fn is not supported"):
        at.load_dit(state_of(micro_model("af")), config=micro_config("af"), dtype=torch.float8_e4m3fn)


def test_num_heads_follows_head_dim_128():
    model = micro_model("af", dim=256, num_heads=4)
    config = {k: v for k, v in vars(model.config).items() if k not in ("num_heads", "variant")}
    assert at.load_dit(state_of(model), config=config).config.num_heads == 2


class Exploit:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": Exploit()}, path)
    with pytest.raises(at.CheckpointError, match=r"refused: loading this file would run code \(it asks for print\)"):
        at.load_dit(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the deliberately broken file
def test_unreadable_files_name_the_file(tmp_path):
    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(at.CheckpointError, match="broken.safetensors: not a .safetensors file: it is a text file"):
        at.load_dit(garbage)
    garbage.write_bytes(bytes(range(256)))
    with pytest.raises(at.CheckpointError, match="broken.safetensors: not a readable .safetensors file"):
        at.load_dit(garbage)
    (tmp_path / "broken.pth").write_bytes(pickle.dumps([1, 2]) + b"junk")
    with pytest.raises(at.CheckpointError, match="broken.pth: not a readable PyTorch checkpoint"):
        at.load_dit(tmp_path / "broken.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(at.CheckpointError, match="list.pth: expected a state dict, found a list"):
        at.load_dit(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*missing.pth"):
        at.load_dit(tmp_path / "missing.pth")


def test_plain_wan_checkpoint_is_explained():
    state = {k: v for k, v in state_of(micro_model("af")).items() if "audio" not in k and "face" not in k}
    with pytest.raises(at.CheckpointError, match="plain Wan2.1 model without AnyTalker's audio weights"):
        at.load_dit(state, config={"num_heads": 2})


def test_not_a_dit_at_all():
    with pytest.raises(at.CheckpointError, match="key 'patch_embedding.weight' not found"):
        at.load_dit({"encoder.weight": torch.zeros(3)})


def test_missing_unexpected_and_misshaped_keys_are_listed_together():
    model = micro_model("af")
    state = state_of(model)
    del state["blocks.1.cross_attn.k_face.weight"]
    state["blocks.0.extra.weight"] = torch.zeros(1)
    state["blocks.0.self_attn.o.bias"] = torch.zeros(31)
    with pytest.raises(at.CheckpointError) as err:
        at.load_dit(state, config=model.config)
    message = str(err.value)
    assert "1 missing keys (blocks.1.cross_attn.k_face.weight)" in message
    assert "1 unexpected keys (blocks.0.extra.weight)" in message
    assert "1 mis-shaped keys (blocks.0.self_attn.o.bias expected [32] found [31])" in message


def test_config_that_contradicts_the_weights():
    model = micro_model("af")
    with pytest.raises(at.CheckpointError, match="dim: config says 64, weights have 32"):
        at.load_dit(state_of(model), config=dict(vars(model.config), dim=64))
    with pytest.raises(at.CheckpointError, match="variant: config says 'legacy', weights have 'af'"):
        at.load_dit(state_of(model), config=dict(vars(model.config), legacy_audio_cross_attn=True, variant="legacy"))


def test_heads_must_be_given_when_dim_is_not_a_multiple_of_128():
    with pytest.raises(at.CheckpointError, match="num_heads cannot be read from the weights"):
        at.load_dit(state_of(micro_model("af")))


@pytest.mark.parametrize(
    "config,message",
    [
        ({"model_type": "t2v"}, "model_type is 't2v'; AnyTalker checkpoints use 'a2v_af'"),
        ({"qk_norm": False}, "qk_norm=False is not supported"),
        ({"num_head": 2}, "unknown key 'num_head'"),
    ],
)
def test_unsupported_reference_kwargs_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        at.load_dit(state_of(micro_model("af")), config=config)


def test_unknown_variant_or_inconsistent_config_reads_well():
    with pytest.raises(ValueError, match="variant is 'xl'; expected one of"):
        micro_config(variant="xl")
    with pytest.raises(ValueError, match="dim 32 is not divisible by num_heads 3"):
        micro_config(num_heads=3)


def test_config_json_file_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        at.load_dit(state_of(micro_model("af")), config=tmp_path / "bad.json")

"""The standalone encoders load the files users have and compute what the reference computes.

Fixtures in ``tests/fixtures/encoders`` were made by ``tests/tools/make_encoder_fixtures.py`` with the reference's
own T5 encoder, image tower and VAE (tiny sizes, weights stored in the reference's key layouts). The tests write
those weights into real files in the published layouts and load them through our loaders.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from anytalker_core.encoders.image import load_image_encoder
from anytalker_core.encoders.text import EOS_ID, clean_prompt, load_text_encoder
from anytalker_core.encoders.vae import load_vae
from anytalker_core.weights import CheckpointError, dequantize

FIXTURES = Path(__file__).parent / "fixtures" / "encoders"


def fixture(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    tensors = load_file(str(FIXTURES / f"{name}.safetensors"))
    weights = {k[len("weights.") :]: v for k, v in tensors.items() if k.startswith("weights.")}
    data = {k: v for k, v in tensors.items() if not k.startswith("weights.")}
    return weights, data, json.loads((FIXTURES / f"{name}.json").read_text())


def tiny_spiece() -> bytes:
    import sentencepiece

    out = io.BytesIO()
    sentences = ["the two people are talking to each other", "a man and a woman report the weather"] * 10
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=out, vocab_size=40, minloglevel=2,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
    )  # fmt: skip
    return out.getvalue()


# --------------------------------------------------------------------------------------------------------- text


def test_umt5_from_wan_pth_matches_reference(tmp_path):
    weights, data, meta = fixture("t5")
    path = tmp_path / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save(weights, path)
    encoder = load_text_encoder(path, tokenizer=lambda text: [])
    assert encoder.model.config.layer_norm_epsilon == meta["layer_norm_eps"]
    for row, length in enumerate(meta["real_rows"]):
        out = encoder.encode_ids(data["in.ids"][row, :length])
        assert out.shape == (1, length, 32)
        torch.testing.assert_close(out[0], data["out.context"][row, :length], atol=1e-5, rtol=1e-5)


def comfy_layout(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fixture's Wan keys renamed the way ComfyUI's umt5_xxl_*.safetensors name them."""
    encoder = load_text_encoder(dict(weights), tokenizer=lambda text: [])
    state = {k: v.contiguous() for k, v in encoder.model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    return state


def test_umt5_comfy_file_carries_its_tokenizer(tmp_path):
    weights, data, meta = fixture("t5")
    state = comfy_layout(weights)
    state["spiece_model"] = torch.frombuffer(bytearray(tiny_spiece()), dtype=torch.uint8)
    path = tmp_path / "umt5_xxl_fp16.safetensors"
    save_file(state, str(path))
    encoder = load_text_encoder(path)
    ids = encoder.token_ids("  the   people &amp;  talking ")
    assert ids[-1] == EOS_ID and len(ids) > 2
    assert ids == encoder.token_ids("the people & talking")  # cleaned like the reference
    out = encoder("the people talking")
    assert out.shape == (1, len(encoder.token_ids("the people talking")), 32)
    # the same weights give the reference's numbers through this file too
    row = data["in.ids"][0]
    torch.testing.assert_close(encoder.encode_ids(row)[0], data["out.context"][0], atol=1e-5, rtol=1e-5)


def test_umt5_truncates_to_512_tokens():
    weights, _, _ = fixture("t5")
    encoder = load_text_encoder(dict(weights), tokenizer=lambda text: [5] * len(text.split()))
    ids = encoder.token_ids("word " * 600)
    assert len(ids) == 512 and ids[-1] == EOS_ID


def test_umt5_scaled_fp8_file_is_dequantized(tmp_path):
    weights, data, _ = fixture("t5")
    state = comfy_layout(weights)
    quantized, expected = {}, dict(state)
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 2 and key != "shared.weight":
            scale = value.abs().max() / 448
            quantized[key] = (value / scale).to(torch.float8_e4m3fn)
            quantized[key.removesuffix(".weight") + ".scale_weight"] = scale.reshape(1)
            expected[key] = (quantized[key].float() * scale).to(torch.bfloat16).float()
        else:
            quantized[key] = value
    quantized["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    path = tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    save_file(quantized, str(path))
    encoder = load_text_encoder(path, tokenizer=lambda text: [], dtype=torch.float32)
    plain = load_text_encoder(expected, tokenizer=lambda text: [], dtype=torch.float32)
    ids = data["in.ids"][0]
    torch.testing.assert_close(encoder.encode_ids(ids), plain.encode_ids(ids))
    assert encoder.model.dtype == torch.float32


def test_umt5_without_tokenizer_says_what_to_pass(tmp_path):
    weights, _, _ = fixture("t5")
    path = tmp_path / "t5.safetensors"
    save_file(comfy_layout(weights), str(path))
    with pytest.raises(CheckpointError, match="tokenizer"):
        load_text_encoder(path)


def test_clean_prompt():
    assert clean_prompt(" a\t b \n&amp;lt;c&amp;gt; ") == "a b <c>"


# -------------------------------------------------------------------------------------------------------- image


def test_image_tower_from_wan_pth_matches_reference(tmp_path):
    weights, data, meta = fixture("clip")
    path = tmp_path / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
    torch.save({**weights, "log_scale": torch.tensor(4.6)}, path)
    encoder = load_image_encoder(path, num_heads=meta["constructor_kwargs"]["num_heads"])
    assert len(encoder.model.state_dict()) > 0
    out = encoder(data["in.image"])
    assert out.shape == (1, 257, 32)
    torch.testing.assert_close(out, data["out.features"], atol=1e-5, rtol=1e-5)


def test_image_tower_comfy_layout_with_config_beside(tmp_path):
    weights, data, meta = fixture("clip")
    loaded = load_image_encoder(dict(weights), num_heads=4)
    # ComfyUI's clip_vision_*.safetensors: transformers 4 names, "vision_model." prefix, all blocks present
    full = load_image_encoder(dict(weights), num_heads=4)
    layers = full.model.state_dict()
    state = {("vision_model." + k if not k.startswith("vision_model.") else k): v for k, v in layers.items()}
    last = {k: v for k, v in state.items() if ".layers.1." in k}
    state.update({k.replace(".layers.1.", ".layers.2."): torch.randn_like(v) for k, v in last.items()})
    folder = tmp_path / "clip_vision"
    folder.mkdir()
    save_file(state, str(folder / "clip_vision_h.safetensors"))
    (folder / "config.json").write_text(json.dumps({"num_attention_heads": 4}))
    encoder = load_image_encoder(folder / "clip_vision_h.safetensors")
    torch.testing.assert_close(encoder(data["in.image"]), loaded(data["in.image"]))


def test_image_tower_unknown_width_needs_heads(tmp_path):
    weights, _, _ = fixture("clip")
    with pytest.raises(CheckpointError, match="num_heads"):
        load_image_encoder(dict(weights))


# ---------------------------------------------------------------------------------------------------------- VAE


def test_wan_vae_original_layout_matches_reference(tmp_path):
    weights, data, _ = fixture("vae")
    path = tmp_path / "wan_2.1_vae.safetensors"
    save_file(weights, str(path))
    vae = load_vae(path)
    latent = vae.encode(data["in.video"])
    torch.testing.assert_close(latent, data["out.latent"], atol=1e-5, rtol=1e-5)
    decoded = vae.decode(data["out.latent"])
    torch.testing.assert_close(decoded, data["out.decoded"], atol=1e-5, rtol=1e-5)


def test_wan_vae_refuses_bad_video_and_other_files(tmp_path):
    weights, data, _ = fixture("vae")
    vae = load_vae(dict(weights))
    with pytest.raises(ValueError, match="4n\\+1"):
        vae.encode(data["in.video"][:, :, :4])
    clip_weights, _, _ = fixture("clip")
    path = tmp_path / "not_a_vae.safetensors"
    save_file(clip_weights, str(path))
    with pytest.raises(CheckpointError, match="not a Wan2.1 VAE"):
        load_vae(path)
    with pytest.raises(CheckpointError, match="not a umT5"):
        load_text_encoder(path, tokenizer=lambda t: [])


def test_dequantize_refuses_mismatched_scales():
    state = {"a.weight": torch.ones(4, 3).to(torch.float8_e4m3fn), "a.scale_weight": torch.ones(2)}
    with pytest.raises(CheckpointError, match="scale"):
        dequantize(state, "x.safetensors")

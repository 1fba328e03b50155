"""Behaviour of the DiT a user would notice: the right person talks, inputs are checked, hooks work."""

from __future__ import annotations

import pytest
import torch

import anytalker_core as at
import anytalker_core.model.dit as dit_module
from micro import micro_config, micro_inputs, micro_model, run

VARIANTS = ["af", "legacy"]


def token_region(mask: torch.Tensor) -> torch.Tensor:
    """Token mask [B, T, h, w] -> the latent pixels it covers [B, 1, T, 2h, 2w] (2x2 patches)."""
    return mask.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[:, None] != 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_voice_moves_only_its_own_face(variant):
    """With one block (no self-attention after the audio), identity 0's audio changes only its masked tokens.

    Identity 0's face is L-shaped: its bounding box holds a token outside the mask, which must not move.
    """
    model = micro_model(variant, num_layers=1)
    inputs = micro_inputs(model.config, identities=3)
    inputs["masks"][0][:, :, 1, 1] = 0  # box rows 0:2, cols 0:2; the mask leaves out (1, 1)
    base = run(model, inputs)
    louder = dict(inputs, audio=[inputs["audio"][0] * 3.0 + 1.0, *inputs["audio"][1:]])
    changed = (run(model, louder) - base).abs()
    inside = token_region(inputs["masks"][0]).expand_as(changed)
    assert changed[~inside].max() == 0
    assert changed[inside].min() > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_cropping_to_the_face_box_changes_nothing(variant, monkeypatch):
    """Attention computed only inside each mask's bounding box equals attention over the whole grid."""
    model = micro_model(variant)
    inputs = micro_inputs(model.config, identities=2, frames=3)
    inputs["masks"][1][:, 1, 2, 3] = 0.25  # a soft edge in one frame only
    cropped = run(model, inputs)

    def whole_grid(masks):
        return [(0, masks.shape[3], 0, masks.shape[4])] * len(masks)

    monkeypatch.setattr(dit_module, "mask_boxes", whole_grid)  # where the model computes the boxes
    full = run(model, inputs)
    assert (cropped - full).abs().max() < 1e-5


def test_reference_mask_layout_and_boolean_masks_are_accepted():
    model = micro_model("af")
    inputs = micro_inputs(model.config)
    expected = run(model, inputs)
    as_reference = [(m != 0)[:, None] for m in inputs["masks"]]  # [B, 1, T, h, w] booleans
    assert torch.equal(run(model, dict(inputs, masks=as_reference)), expected)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_listener_with_an_empty_mask_is_the_same_as_no_identity(variant):
    """A person whose mask is empty adds nothing.

    Equal up to float rounding, not bit for bit: every identity's audio goes through the projection MLP in
    one batch, and a CPU's matmul kernel may round the speaker's rows differently in a batch of 2 than of 1
    (up to 3e-7 of the output's size here). Any real contribution would be orders of magnitude above 1e-5.
    """
    model = micro_model(variant)
    inputs = micro_inputs(model.config, identities=2)
    inputs["masks"][1].zero_()
    one = dict(inputs, audio=inputs["audio"][:1], faces=inputs["faces"][:1], masks=inputs["masks"][:1])
    expected = run(model, one)
    assert (run(model, inputs) - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.parametrize("variant", VARIANTS)
def test_identity_order_does_not_matter(variant):
    model = micro_model(variant)
    inputs = micro_inputs(model.config, identities=3)
    swapped = {key: list(reversed(inputs[key])) for key in ("audio", "faces", "masks")}
    assert (run(model, inputs) - run(model, dict(inputs, **swapped))).abs().max() < 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_equals_single_samples(variant):
    model = micro_model(variant)
    batch = micro_inputs(model.config, batch=2, identities=2, seed=3)
    batch["t"] = torch.tensor([100.0, 900.0])
    batch["masks"][0][1] = 0  # the second sample routes only identity 1
    out = run(model, batch)
    for b in range(2):
        single = {
            k: (v[b : b + 1] if isinstance(v, torch.Tensor) else [u[b : b + 1] for u in v]) for k, v in batch.items()
        }
        assert (run(model, single) - out[b : b + 1]).abs().max() < 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
def test_any_number_of_identities(variant):
    """Four people side by side: each one added changes the video (other tools stop at two)."""
    model = micro_model(variant)
    inputs = micro_inputs(model.config, identities=4, width=16)
    outputs = [run(model, dict(inputs, **{k: inputs[k][:n] for k in ("audio", "faces", "masks")})) for n in range(5)]
    assert all(o.shape == outputs[0].shape and torch.isfinite(o).all() for o in outputs)
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(outputs, outputs[1:]))


def test_attention_function_can_be_swapped():
    model = micro_model("af")
    inputs = micro_inputs(model.config)
    expected = run(model, inputs)
    calls = []

    def host_attention(q, k, v, heads, mask=None):
        calls.append(q.shape)
        return at.sdpa_attention(q, k, v, heads, mask)

    model.attention = host_attention
    assert (run(model, inputs) - expected).abs().max() == 0
    # per block: self, text, image, and 2 identities x (frame 0, later frames)
    assert len(calls) == model.config.num_layers * (3 + 2 * 2)


def test_host_attention_may_return_a_strided_tensor():
    model = micro_model("af")
    inputs = micro_inputs(model.config)
    expected = run(model, inputs)
    model.attention = lambda q, k, v, heads, mask=None: (
        at.sdpa_attention(q, k, v, heads, mask).transpose(1, 2).contiguous().transpose(1, 2)
    )
    assert (run(model, inputs) - expected).abs().max() == 0


def test_layers_are_built_through_the_operations_namespace():
    built = []

    class Ops:
        class Linear(torch.nn.Linear):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                built.append("Linear")

        LayerNorm = torch.nn.LayerNorm
        Conv3d = torch.nn.Conv3d

    model = at.AnyTalkerDiT(micro_config("af"), operations=Ops)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(built) == len(linears) and all(isinstance(m, Ops.Linear) for m in linears)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bf16_stays_close_to_fp32(variant):
    model = micro_model(variant)
    inputs = micro_inputs(model.config)
    expected = run(model, inputs)
    half = at.load_dit(model.state_dict(), config=model.config, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    out = run(half, inputs)
    assert out.dtype == torch.float32
    assert (out - expected).abs().max() < 0.05 * expected.abs().max()
    # casting a built model afterwards works too: compute follows the weights
    assert (run(model.half(), inputs) - expected).abs().max() < 0.05 * expected.abs().max()


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda i: i.update(audio=[a[:, :-1] for a in i["audio"]]),
            "`audio[0]` has shape (1, 8, 5, 2, 8); expected [1, 9",
        ),
        (lambda i: i.update(faces=i["faces"][:1]), "identities do not pair up: 2 audio, 1 faces, 2 masks"),
        (lambda i: i.update(text=torch.zeros(1, 9, 24)), "`text` has 9 tokens; expected 1..8"),
        (lambda i: i.update(masks=[m[:, :, :, :-1] for m in i["masks"]]), "`masks[0]` has shape (1, 3, 3, 3)"),
        (lambda i: i.update(y=i["y"][:, :4]), "`y` has shape (1, 4, 3, 6, 8); expected [1, 20, 3, 6, 8]"),
        (lambda i: i.update(t=torch.ones(3)), "`t` has shape (3,); expected [1]"),
    ],
)
def test_bad_inputs_say_which_and_what_shape(change, message):
    model = micro_model("af")
    inputs = micro_inputs(model.config)
    change(inputs)
    with pytest.raises(ValueError) as err:
        run(model, inputs)
    assert message in str(err.value)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("tokens", [1, 5, 7])
def test_merged_text_padding_equals_attending_every_padding_row(variant, tokens):
    """Short prompts are zero-padded to text_len; the merged padding row gives the same numbers."""
    model = micro_model(variant)
    inputs = micro_inputs(model.config)
    inputs["text"] = inputs["text"][:, :tokens]
    padded = torch.cat([inputs["text"], torch.zeros(1, model.config.text_len - tokens, model.config.text_dim)], 1)
    assert (run(model, inputs) - run(model, dict(inputs, text=padded))).abs().max() < 1e-5

"""Face routing masks: exact to the reference's helper fixtures, and the box geometry."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from anytalker_core.people.masks import box_mask, square_box, token_mask, widen_mask, y_mask_channels
from golden import REFERENCE, requires_shared

HELPERS = REFERENCE / "helpers"


@pytest.fixture(scope="module")
def golden():
    return load_file(str(HELPERS / "helpers.safetensors")), json.loads((HELPERS / "helpers.json").read_text())


@requires_shared
def test_masks_match_the_reference_exactly(golden):
    stored, info = golden
    height, width = info["image_hw"]
    latent_frames, video_frames = info["latent_frames"], info["video_frames"]
    widened = []
    for i, (_, y0, y1, x0, x1) in enumerate(info["masks"]):
        face = box_mask((x0, y0, x1, y1), height, width)
        assert torch.equal(face, stored[f"in.face_mask_{i}"])
        widened.append(widen_mask(face, *info["widen"]))
        assert torch.equal(widened[i], stored[f"out.widened_{i}"])
        tokens = token_mask(widened[i], tuple(info["token_hw"]), latent_frames)
        assert torch.equal(tokens, stored[f"out.token_mask_{i}"])
        assert torch.equal(tokens.reshape(1, -1, 1), stored[f"out.token_mask_flat_{i}"])  # (frame, row, col)
    assert torch.equal(widened[0] + widened[1], stored["out.global_mask"])
    assert torch.equal(y_mask_channels(widened, tuple(info["latent_hw"]), video_frames), stored["out.y_mask"])


def test_square_box_keeps_the_centre_and_stays_inside():
    assert square_box((10, 20, 30, 60), 100, 100) == (0, 20.0, 40.0, 60.0)  # 20x40 -> 40x40, moved right
    assert square_box((40, 40, 60, 50), 100, 100) == (40.0, 35.0, 60.0, 55.0)
    assert square_box((90, 0, 100, 30), 100, 100) == (70, 0, 100, 30)  # pushed back inside on both sides


def test_widening_is_about_the_centre_and_clamped():
    face = box_mask((40, 40, 60, 60), 100, 100)  # 20 x 20
    widened = widen_mask(face)
    low, high = widened.nonzero().min(0).values.tolist(), widened.nonzero().max(0).values.tolist()
    # rows 40..59 -> 38..60 and cols 40..59 -> 37..61: int(20 * 1.1) = 22 and int(20 * 1.2) = 24 about the
    # centre 49.5, inclusive bounds (the reference's arithmetic, one more pixel than the factor)
    assert (*low, *high) == (38, 37, 60, 61)
    edge = widen_mask(box_mask((0, 0, 20, 20), 100, 100))
    assert edge[0, 0] == 1 and edge.nonzero().max(0).values.tolist() == [20, 21]  # clamped at the top-left
    assert torch.equal(widen_mask(torch.zeros(8, 8)), torch.zeros(8, 8))


def test_y_mask_marks_the_first_frame_and_the_faces():
    face = widen_mask(box_mask((40, 40, 60, 60), 96, 160))
    y = y_mask_channels([face], (12, 20), 9)
    assert y.shape == (4, 3, 12, 20)
    assert torch.all(y[:, 0] == 1)  # the given picture
    assert y[:, 1:, 5, 6].min() > 0 and y[:, 1:, 0, 0].max() == 0  # the face region, not the background
    with pytest.raises(ValueError, match="video_frames is 8; the model needs 4n\\+1 video frames .*: use 5 or 9"):
        y_mask_channels([face], (12, 20), 8)

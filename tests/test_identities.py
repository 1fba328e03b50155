"""Who is who: routing from boxes and user masks, the order override, moving masks, errors and the preview."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from anytalker_core.people.masks import y_mask_channels
from anytalker_core.people.preview import PALETTE, preview
from anytalker_core.people.regions import label_regions
from anytalker_core.people.routing import (
    Routing,
    RoutingError,
    parse_order,
    route_from_boxes,
    route_from_masks,
)
from golden import REFERENCE, SHARED, requires_shared

H, W = 96, 160  # a small video: token grid 6 x 10, latent grid 12 x 20


def picture(height: int = H, width: int = W, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).rand(height, width, 3).astype(np.float32))


def centre_of_mass(mask: torch.Tensor) -> tuple[float, float]:
    rows, cols = torch.meshgrid(torch.arange(mask.shape[0]), torch.arange(mask.shape[1]), indexing="ij")
    total = mask.sum()
    return float((rows * mask).sum() / total), float((cols * mask).sum() / total)


@requires_shared
def test_boxes_match_the_reference_fixtures_exactly():
    stored = load_file(str(REFERENCE / "helpers" / "helpers.safetensors"))
    info = json.loads((REFERENCE / "helpers" / "helpers.json").read_text())
    height, width = info["image_hw"]
    boxes = [(x0, y0, x1, y1) for _, y0, y1, x0, x1 in info["masks"]]
    routing = route_from_boxes(picture(height, width), boxes[::-1], info["video_frames"])  # any order in
    assert routing.video_hw == (height, width)
    for i in range(2):
        assert torch.equal(routing.masks[i], stored[f"out.widened_{i}"])
        assert torch.equal(routing.token_masks[i], stored[f"out.token_mask_{i}"])
    assert torch.equal(routing.y_mask, stored["out.y_mask"])


def test_pixels_and_fractions_route_the_same():
    image = picture()
    pixels = route_from_boxes(image, [(16, 24, 48, 56), (100, 20, 140, 60)], 9)
    fractions = route_from_boxes(image, [(16 / W, 24 / H, 48 / W, 56 / H), (100 / W, 20 / H, 140 / W, 60 / H)], 9)
    for a, b in zip(pixels.token_masks, fractions.token_masks):
        assert torch.equal(a, b)
    assert torch.equal(pixels.y_mask, fractions.y_mask)
    assert pixels.boxes == fractions.boxes


def test_routing_shapes_crops_and_y_channels():
    image = picture()
    routing = route_from_boxes((image.numpy() * 255).astype(np.uint8), [(100, 20, 140, 50), (16, 24, 48, 56)], 9)
    assert isinstance(routing, Routing) and len(routing) == 2
    assert routing.boxes == ((16, 24, 48, 56), (100, 15.0, 140, 55.0))  # left to right; made square
    assert torch.stack(routing.token_masks).shape == (2, 3, 6, 10)
    assert routing.y_mask.shape == (4, 3, 12, 20)
    assert torch.equal(routing.y_mask, y_mask_channels(list(routing.masks), (12, 20), 9))
    assert routing.crops[0].shape == (32, 32, 3)
    x0, y0, x1, y1 = (int(v) for v in routing.boxes[1])
    assert routing.crops[1].shape == (y1 - y0, x1 - x0, 3)  # the square box itself, unwidened
    assert torch.allclose(routing.crops[1], image[y0:y1, x0:x1], atol=1 / 255)
    assert not routing.warnings and not routing.moving


def test_size_sets_the_token_grid_and_odd_images_round_down():
    image = picture(100, 170)
    routing = route_from_boxes(image, [(20, 20, 60, 60)], 5)
    assert routing.video_hw == (96, 160) and routing.token_masks[0].shape == (2, 6, 10)
    routing = route_from_boxes(image, [(20, 20, 60, 60)], 5, size=(480, 832))
    assert routing.token_masks[0].shape == (2, 30, 52) and routing.y_mask.shape == (4, 2, 60, 104)


def test_user_masks_at_an_odd_resolution_route_where_the_faces_are():
    image = picture(480, 832)
    faces = [(100, 80, 260, 240), (560, 120, 720, 280)]  # x0, y0, x1, y1 at 480 x 832
    masks = []
    for x0, y0, x1, y1 in faces[::-1]:  # given right first: routing still numbers them left to right
        m = torch.zeros(333, 517)
        m[round(y0 * 333 / 480) : round(y1 * 333 / 480), round(x0 * 517 / 832) : round(x1 * 517 / 832)] = 1
        masks.append(m)
    routing = route_from_masks(image, masks, 9)
    for box, expected, tokens in zip(routing.boxes, faces, routing.token_masks):
        assert all(abs(a - b) <= 2 for a, b in zip(box, expected)), (box, expected)
        row, col = centre_of_mass(tokens[0])
        centre = ((expected[1] + expected[3]) / 32 - 0.5, (expected[0] + expected[2]) / 32 - 0.5)  # cell centres
        assert abs(row - centre[0]) < 0.3 and abs(col - centre[1]) < 0.3
    assert routing.token_masks[0][:, :, 26:].max() == 0 and routing.token_masks[1][:, :, :26].max() == 0
    batch = route_from_masks(image, torch.stack(masks), 9)  # a ComfyUI MASK batch [N, H, W]: N people
    assert batch.boxes == routing.boxes


def test_one_mask_with_two_regions_splits_left_to_right():
    image = picture()
    both = torch.zeros(1, H, W)
    both[0, 20:60, 100:140] = 1  # the right person is painted larger
    both[0, 30:50, 20:40] = 1
    both[0, 90, 150] = 1  # a stray dab is ignored, with a warning
    split = route_from_masks(image, both, 9)
    assert split.boxes == ((20.0, 30.0, 40.0, 50.0), (100.0, 20.0, 140.0, 60.0))
    assert any("stray" in w for w in split.warnings)
    left, right = torch.zeros(H, W), torch.zeros(H, W)
    left[30:50, 20:40], right[20:60, 100:140] = 1, 1
    separate = route_from_masks(image, [right, left], 9)
    for a, b in zip(split.token_masks, separate.token_masks):
        assert torch.equal(a, b)
    one = route_from_masks(image, both[0], 9, speakers=1)  # [H, W] works too; the larger face is kept
    assert one.boxes == ((100.0, 20.0, 140.0, 60.0),) and any("not routed" in w for w in one.warnings)


def test_label_regions_joins_diagonals_and_u_shapes():
    grid = np.zeros((8, 12), dtype=bool)
    grid[1:6, 1] = grid[1:6, 4] = grid[5, 1:5] = True  # a U: two runs that meet lower down
    grid[0, 7] = grid[1, 8] = grid[2, 9] = True  # a diagonal line (8-connected)
    grid[6, 11] = True
    regions = label_regions(grid)
    assert [int(r.sum()) for r in regions] == [12, 3, 1]
    assert label_regions(np.zeros((4, 4), dtype=bool)) == []


def test_order_override_swaps_the_bindings():
    image = picture()
    boxes = [(16, 24, 48, 56), (100, 20, 140, 60)]
    plain = route_from_boxes(image, boxes, 9)
    swapped = route_from_boxes(image, boxes, 9, order="2,1")
    assert swapped.faces == (2, 1) and plain.faces == (1, 2)
    assert torch.equal(swapped.token_masks[0], plain.token_masks[1])
    assert torch.equal(swapped.token_masks[1], plain.token_masks[0])
    assert torch.equal(swapped.crops[0], plain.crops[1]) and torch.equal(swapped.crops[1], plain.crops[0])
    assert torch.equal(swapped.y_mask, plain.y_mask)  # everybody's union: not repainted
    assert route_from_boxes(image, boxes, 9, order=[2, 1]).faces == (2, 1)
    assert route_from_boxes(image, boxes, 9, order=" ").faces == (1, 2)
    report = swapped.describe().splitlines()  # what a node shows the artist
    assert report[0].startswith("voice 1 -> face 2") and report[1].startswith("voice 2 -> face 1")


@pytest.mark.parametrize(
    "order, why",
    [("1,1", "1 appears twice"), ("3,1", "3 is not a face number"), ("1", "names 1 faces"), ("a,b", "like '2,1'")],
)
def test_bad_orders_are_named(order, why):
    with pytest.raises(RoutingError, match=f"order '{order}'") as err:
        parse_order(order, 2)
    assert why in str(err.value)


def test_moving_masks_give_time_varying_token_masks_and_y():
    image, frames = picture(), 9
    moving = torch.zeros(frames, H, W)
    for f in range(frames):
        moving[f, 30:62, 8 + 10 * f : 40 + 10 * f] = 1  # one face walking right, 10 px a frame
    routing = route_from_masks(image, moving, frames)
    assert routing.moving and routing.boxes[0] == (8.0, 30.0, 40.0, 62.0)  # frame 0's box
    tokens = routing.token_masks[0]
    cols = [centre_of_mass(tokens[j])[1] for j in range(3)]
    assert cols[0] < cols[1] < cols[2]
    # latent frame 1 is the union of video frames 1..4: it reaches from frame 1's face to frame 4's
    per_frame = [route_from_masks(image, moving[f], frames).token_masks[0][0] for f in range(frames)]
    assert torch.equal(tokens[1], torch.stack(per_frame[1:5]).amax(0))
    assert torch.equal(tokens[0], per_frame[0])
    # y: each video frame's own faces; latent j holds video frames 4(j-1)+1..4j in its 4 channels
    assert torch.all(routing.y_mask[:, 0] == 1)
    for c in range(4):
        static = route_from_masks(image, moving[1 + c], frames).y_mask
        assert torch.equal(routing.y_mask[c, 1], static[c, 1])
    still = route_from_masks(image, moving[:1].repeat(frames, 1, 1), frames)  # not moving: the static result
    static = route_from_masks(image, moving[0], frames)
    assert torch.equal(still.token_masks[0], static.token_masks[0])
    assert torch.allclose(still.y_mask, static.y_mask)


def test_moving_list_masks_and_lost_regions():
    image, frames = picture(), 5
    mover = torch.zeros(frames, H, W)
    for f in range(frames):
        mover[f, 30:62, 90 + 5 * f : 122 + 5 * f] = 1
    still = torch.zeros(H, W)
    still[20:50, 10:40] = 1
    routing = route_from_masks(image, [mover, still], frames)
    assert routing.moving and routing.faces == (1, 2) and routing.boxes[0][0] == 10
    two = mover.clone()
    two[:, 20:50, 10:40] = 1
    two[3, 20:50, 10:40] = 0  # one person vanishes in frame 3
    with pytest.raises(RoutingError, match="frame 3 has 1 separate region"):
        route_from_masks(image, two, frames)


def test_fewer_faces_than_speakers_says_how_many_and_what_to_do():
    with pytest.raises(RoutingError, match=r"found 1 face\(s\) but there are 2 speakers: lower the detection"):
        route_from_boxes(picture(), [(16, 24, 48, 56)], 9, speakers=2)
    only = torch.zeros(H, W)
    only[20:50, 10:40] = 1
    with pytest.raises(RoutingError, match=r"found 1 mask region\(s\) but there are 3 speakers"):
        route_from_masks(picture(), only, 9, speakers=3)
    with pytest.raises(RoutingError, match="no face"):
        route_from_boxes(picture(), [], 9)


def test_more_faces_than_speakers_routes_the_largest():
    boxes = [(2, 2, 30, 30), (60, 40, 70, 50), (100, 10, 150, 60)]
    routing = route_from_boxes(picture(), boxes, 9, speakers=2)
    assert routing.boxes == ((2, 2, 30, 30), (100, 10, 150, 60))
    assert any("not routed (no voice): face(s) 2" in w for w in routing.warnings)


def test_empty_mask_is_named():
    full = torch.zeros(H, W)
    full[20:50, 10:40] = 1
    with pytest.raises(RoutingError, match=r"mask 2 \(of 2\) is empty"):
        route_from_masks(picture(), [full, torch.zeros(50, 80)], 9)
    with pytest.raises(RoutingError, match="the mask is empty"):
        route_from_masks(picture(), torch.zeros(1, 50, 80), 9)
    faint = torch.full((H, W), 0.3)  # nothing above 0.5
    with pytest.raises(RoutingError, match="mask 2"):
        route_from_masks(picture(), [full, faint], 9)


def test_heavy_overlap_warns_with_the_share():
    routing = route_from_boxes(picture(), [(20, 20, 60, 60), (40, 20, 80, 60)], 9)  # half of each is shared
    assert len(routing.warnings) == 1
    assert "faces 1 and 2 overlap: 50% of the smaller face box" in routing.warnings[0]
    light = route_from_boxes(picture(), [(20, 20, 60, 60), (52, 20, 92, 60)], 9)  # 20%: no warning
    assert not light.warnings


def test_a_face_too_small_for_the_token_grid_is_an_error():
    image = picture(480, 832)
    with pytest.raises(RoutingError, match=r"face 1 is too small to route: its box is 2x2 px") as err:
        route_from_boxes(image, [(3, 3, 5, 5)], 9, size=(96, 160))
    assert "token cell is 83x80 image px" in str(err.value) and "higher resolution" in str(err.value)
    weak = route_from_boxes(picture(100, 170), [(2, 2, 8, 8)], 9)  # the grid samples only the widened edge
    assert weak.warnings == (
        "face 1 barely reaches the token grid: its strongest token-mask value is 0.17 (box 6 px, token cell 17 px), "
        "so its voice will drive it weakly; a higher resolution or a larger mask helps",
    )


def test_bad_inputs_are_named():
    with pytest.raises(RoutingError, match="video_frames is 8"):
        route_from_boxes(picture(), [(16, 24, 48, 56)], 8)
    with pytest.raises(RoutingError, match="box 1"):
        route_from_boxes(picture(), [(48, 24, 16, 56)], 9)
    with pytest.raises(RoutingError, match="image: expected"):
        route_from_boxes(torch.zeros(H, W), [(16, 24, 48, 56)], 9)
    with pytest.raises(RoutingError, match=r"mask 1: expected .* got \(3, 96, 160\)"):
        route_from_masks(picture(), [torch.ones(3, H, W)], 9)
    assert issubclass(RoutingError, ValueError)


def test_preview_shows_each_identity_in_its_colour():
    image = torch.full((H, W, 3), 0.5)
    routing = route_from_boxes(image, [(16, 24, 48, 56), (100, 20, 140, 60)], 9)
    out = preview(image[None], routing)  # a ComfyUI IMAGE batch works too
    assert out.dim() == 3 and out.shape[1:] == (W, 3) and out.shape[0] > H
    assert out.min() >= 0 and out.max() <= 1
    for i, colour in enumerate(PALETTE[:2]):
        close = (out - torch.tensor(colour)).abs().amax(-1) < 0.02  # the box outline, in the identity's colour
        assert close[:H].sum() > 50, i
        assert close[H:].sum() > 50, i  # the crop's frame
        tinted = out[int(routing.boxes[i][1]) + 10, int(routing.boxes[i][0]) + 20]
        assert int(torch.argmax(tinted)) == int(np.argmax(colour))


@requires_shared
def test_real_photo_routes_and_previews():
    image_module = pytest.importorskip("PIL.Image", reason="Pillow reads the example photo")
    image = np.asarray(image_module.open(SHARED / "examples" / "2p-1.png").convert("RGB"))
    boxes = [(949, 224, 1270, 545), (288, 145, 647, 504)]  # as the detector finds them, given right first
    routing = route_from_boxes(image, boxes, 81, speakers=2, size=(480, 720))
    assert routing.boxes[0][0] == 288 and torch.stack(routing.token_masks).shape == (2, 21, 30, 45)
    assert routing.token_masks[0][0, :, :22].max() > 0.9 and routing.token_masks[0][0, :, 23:].max() == 0
    assert routing.crops[0].shape == (359, 359, 3)
    assert preview(image, routing).shape[1:] == (1536, 3)


def test_preview_fits_many_identities_on_a_small_image():
    image = picture()
    routing = route_from_boxes(image, [(i * 26, 10, i * 26 + 20, 30) for i in range(6)], 9, order="6,5,4,3,2,1")
    assert routing.faces == (6, 5, 4, 3, 2, 1)
    out = preview(image, routing)
    assert out.shape[1:] == (W, 3) and out.shape[0] > H

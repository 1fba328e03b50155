"""Conditioning building blocks: size rule, first frame, latent normalisation, y, CLIP input (all host-free)."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anytalker_core.encoders.image import CLIP_MEAN, CLIP_STD, clip_input
from anytalker_core.encoders.vae import (
    WAN21_LATENT_MEAN,
    WAN21_LATENT_STD,
    VideoVAE,
    denormalize_latent,
    normalize_latent,
)
from anytalker_core.people.masks import y_mask_channels
from anytalker_core.pipeline.condition import build_y, first_frame_video, prepare_image, target_size, to_m11

# ------------------------------------------------------------------------------------------------- size rule

# (height, width) of the picture -> (h, w), derived by hand from the reference's formula with max_area 832*480:
#   lat = sqrt(399360 * aspect) // 8 // 2 * 2, side = 8 lat, then the multiple-of-32 candidates.
HAND = [
    # 852x480 (w x h): sqrt(399360*480/852)=474.3 -> 59 -> 58 -> 464; sqrt(399360*852/480)=841.9 -> 105 -> 104 -> 832.
    # a=464/832. (a) w1=832, h1=int(464.0)//32*32=448, diff 16; (b) h2=448, w2=int(803.3)//32*32=800, diff 48 -> (a).
    ((480, 852), (448, 832)),
    # 1536x1024: sqrt(266240)=516.0 -> 64 -> 64 -> 512; sqrt(599040)=774.0 -> 96 -> 96 -> 768; already /32.
    ((1024, 1536), (512, 768)),
    # 1344x768: sqrt(228205.7)=477.7 -> 59 -> 58 -> 464; sqrt(698880)=836.0 -> 104 -> 832; then as 852x480.
    ((768, 1344), (448, 832)),
    # 480x832 (portrait): sqrt(692224)=832 -> 104 -> 832; sqrt(230400)=480 -> 60 -> 480; already /32.
    ((832, 480), (832, 480)),
    # 832x480 (landscape) lands on 448x832, not 480x832: the 474.3 floors to an odd 59 latent rows.
    ((480, 832), (448, 832)),
    # square: sqrt(399360)=631.9 -> 78 -> 78 -> 624 both; (a) = (b) = 608x608 (diff 32 each) -> (a).
    ((512, 512), (608, 608)),
]


@pytest.mark.parametrize("picture, expected", HAND)
def test_target_size_matches_the_hand_derived_reference_values(picture, expected):
    h, w = target_size(*picture)
    assert (h, w) == expected
    assert h % 32 == 0 and w % 32 == 0
    assert h * w <= 832 * 480


def test_target_size_other_area_and_properties():
    # 720x1280 area, 1280x720 landscape: sqrt(921600*0.5625)=720 -> 90 -> 90 -> 720; sqrt(1638400)=1280 -> 160.
    assert target_size(720, 1280, max_area=1280 * 720) == (704, 1280)
    for height in range(200, 2400, 97):
        for width in range(200, 2400, 89):
            h, w = target_size(height, width)
            assert h % 32 == 0 and w % 32 == 0 and h * w <= 832 * 480
            # aspect kept to within a step of the 32 grid
            assert abs(h / w - height / width) <= 64 / min(h, w) * max(1, height / width)


def _reference_literal(height, width, max_area):
    """The reference lines transcribed with numpy, for cross-checking only."""
    aspect = height / width
    lat_h = round(np.sqrt(max_area * aspect) // 8 // 2 * 2)
    lat_w = round(np.sqrt(max_area / aspect) // 8 // 2 * 2)
    h, w = lat_h * 8, lat_w * 8
    a = h / w
    w1 = (w // 32) * 32 or 32
    h1 = (int(w1 * a) // 32) * 32 or 32
    h2 = (h // 32) * 32 or 32
    w2 = (int(h2 / a) // 32) * 32 or 32
    return (h1, w1) if abs(w1 - w) + abs(h1 - h) <= abs(w2 - w) + abs(h2 - h) else (h2, w2)


def test_target_size_equals_the_reference_lines_on_a_sweep():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        height, width = (int(v) for v in rng.integers(64, 4096, size=2))
        area = int(rng.choice([832 * 480, 1280 * 720, 512 * 512]))
        assert target_size(height, width, area) == _reference_literal(height, width, area)


@pytest.mark.parametrize("args", [(0, 480), (480, -1), (480.0, 832), (480, 832, 0), (True, 832), (1, 100000)])
def test_target_size_errors(args):
    with pytest.raises(ValueError):
        target_size(*args)


# ----------------------------------------------------------------------------------------------------- image


def _cubic(x, a=-0.75):
    x = abs(x)
    if x <= 1:
        return (a + 2) * x**3 - (a + 3) * x**2 + 1
    if x < 2:
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return 0.0


def _bicubic_1d(src, out_len):
    """Keys cubic (a=-0.75), half-pixel centres (align_corners False), clamped borders, no antialias."""
    n = src.shape[-1]
    scale = n / out_len
    out = np.zeros(src.shape[:-1] + (out_len,))
    for i in range(out_len):
        x = (i + 0.5) * scale - 0.5
        x0 = math.floor(x)
        t = x - x0
        for k in range(-1, 3):
            out[..., i] += _cubic(t - k) * src[..., min(max(x0 + k, 0), n - 1)]
    return out


def _bicubic_np(chw, size):
    rows = _bicubic_1d(chw, size[1])  # along W
    return np.swapaxes(_bicubic_1d(np.swapaxes(rows, -1, -2), size[0]), -1, -2)  # along H


def _picture(h=37, w=53, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_to_m11_scales_like_to_tensor_then_sub_div():
    pic = _picture()
    out = to_m11(pic)
    assert out.shape == (3, 37, 53) and out.dtype == torch.float32
    expected = torch.from_numpy(pic).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)
    assert torch.equal(out, expected)
    assert to_m11(np.zeros((2, 2, 3), np.uint8)).eq(-1).all() and to_m11(np.full((2, 2, 3), 255, np.uint8)).eq(1).all()
    # float 0..1, torch, batched [1, H, W, 3]: the same picture
    as_float = torch.from_numpy(pic).float() / 255
    assert torch.allclose(to_m11(as_float[None]), expected, atol=1e-6)
    assert torch.equal(to_m11(torch.from_numpy(pic)[None]), expected)


@pytest.mark.parametrize("size", [(32, 64), (64, 96), (16, 16)])
def test_prepare_image_is_torch_bicubic_after_scaling(size):
    pic = _picture()
    out = prepare_image(pic, size)
    assert out.shape == (3, *size) and out.dtype == torch.float32
    m11 = to_m11(pic)
    assert torch.equal(out, F.interpolate(m11[None], size=size, mode="bicubic", align_corners=False)[0])
    assert np.allclose(out.numpy(), _bicubic_np(m11.double().numpy(), size), atol=1e-5)


def test_prepare_image_keeps_bicubic_overshoot_and_constants():
    assert torch.allclose(prepare_image(np.full((9, 7, 3), 255, np.uint8), (32, 32)), torch.ones(3, 32, 32))
    edge = np.zeros((8, 8, 3), np.uint8)
    edge[:, 4:] = 255
    out = prepare_image(edge, (32, 32))
    assert out.max() > 1.0 and out.min() < -1.0  # no clamp, as the reference


@pytest.mark.parametrize(
    "bad, error",
    [
        (np.zeros((8, 8), np.uint8), ValueError),
        (np.zeros((8, 8, 4), np.uint8), ValueError),
        (np.zeros((3, 8, 8), np.uint8), ValueError),
        (np.zeros((2, 8, 8, 3), np.uint8), ValueError),
        (np.zeros((0, 8, 3), np.uint8), ValueError),
        (np.zeros((8, 8, 3), np.int32), ValueError),
        ([[0, 0, 0]], ValueError),
    ],
)
def test_prepare_image_errors(bad, error):
    with pytest.raises(error):
        prepare_image(bad, (32, 32))


@pytest.mark.parametrize("size", [(0, 32), (32,), (32.0, 32), "ab"])
def test_prepare_image_bad_size(size):
    with pytest.raises(ValueError):
        prepare_image(_picture(), size)


# ------------------------------------------------------------------------------------------- normalisation


def test_latent_statistics_are_wan21_and_agree_with_diffusers():
    assert len(WAN21_LATENT_MEAN) == len(WAN21_LATENT_STD) == 16
    assert WAN21_LATENT_MEAN[:2] == (-0.7571, -0.7089) and WAN21_LATENT_STD[-1] == 1.9160
    diffusers = pytest.importorskip("diffusers")
    params = inspect.signature(diffusers.AutoencoderKLWan.__init__).parameters
    assert tuple(params["latents_mean"].default) == WAN21_LATENT_MEAN
    assert tuple(params["latents_std"].default) == WAN21_LATENT_STD


def test_normalize_is_mean_then_times_inverse_std_and_round_trips():
    mean = torch.tensor(WAN21_LATENT_MEAN).view(16, 1, 1, 1)
    std = torch.tensor(WAN21_LATENT_STD).view(16, 1, 1, 1)
    raw = torch.randn(2, 16, 3, 4, 5, generator=torch.Generator().manual_seed(0)) * 2 + 0.3
    norm = normalize_latent(raw)
    assert torch.equal(norm, (raw - mean) * (1.0 / std))
    assert torch.allclose(norm, (raw - mean) / std, atol=1e-6)
    assert torch.allclose(denormalize_latent(norm), raw, atol=1e-5)
    assert torch.equal(denormalize_latent(norm), norm / (1.0 / std) + mean)
    # unbatched [16, T, H, W]; the mean maps to 0, mean + std to 1
    assert torch.allclose(normalize_latent(mean.expand(16, 1, 2, 2)), torch.zeros(16, 1, 2, 2), atol=1e-6)
    assert torch.allclose(normalize_latent((mean + std).expand(16, 1, 2, 2)), torch.ones(16, 1, 2, 2), atol=1e-6)
    assert normalize_latent(raw.to(torch.bfloat16)).dtype == torch.bfloat16


def test_normalize_wrong_channels():
    with pytest.raises(ValueError):
        normalize_latent(torch.zeros(1, 4, 1, 2, 2))
    with pytest.raises(ValueError):
        denormalize_latent(torch.zeros(16, 2, 2))


# -------------------------------------------------------------------------------------------------------- y


class RecordingVAE:
    """Records the video it gets; returns a latent whose values identify it."""

    def __init__(self):
        self.videos = []

    def encode(self, video):
        self.videos.append(video.clone())
        b, _, f, h, w = video.shape
        t = (f - 1) // 4 + 1
        return torch.arange(b * 16 * t * (h // 8) * (w // 8), dtype=torch.float32).view(b, 16, t, h // 8, w // 8)

    def decode(self, latent):
        b, _, t, h, w = latent.shape
        return torch.zeros(b, 3, 4 * (t - 1) + 1, h * 8, w * 8)


def _mask_channels(h, w, frames):
    face = torch.zeros(h, w)
    face[h // 4 : h // 2, w // 4 : w // 2] = 1
    return y_mask_channels([face], (h // 8, w // 8), frames)


def test_build_y_encodes_first_frame_then_zeros_and_puts_masks_first():
    h, w, frames = 64, 96, 9
    image = prepare_image(_picture(), (h, w))
    masks = _mask_channels(h, w, frames)
    vae = RecordingVAE()
    assert isinstance(vae, VideoVAE)
    y = build_y(vae, image, frames, masks)

    (video,) = vae.videos
    assert video.shape == (1, 3, frames, h, w) and video.dtype == torch.float32
    assert torch.equal(video[0, :, 0], image)
    assert torch.count_nonzero(video[0, :, 1:]) == 0
    assert torch.equal(video[0], first_frame_video(image, frames))

    assert y.shape == (20, 3, h // 8, w // 8)
    assert torch.equal(y[:4], masks)
    assert torch.equal(y[4:], RecordingVAE().encode(video)[0])
    assert torch.equal(y[:4, 0], torch.ones(4, h // 8, w // 8))  # frame 0 repeated: all ones


def test_build_y_takes_an_encode_function():
    h, w, frames = 32, 32, 5
    seen = []

    def encode(video):
        seen.append(video.shape)
        return torch.full((1, 16, 2, 4, 4), 7.0)

    y = build_y(encode, prepare_image(_picture(), (h, w)), frames, _mask_channels(h, w, frames))
    assert seen == [(1, 3, 5, 32, 32)]
    assert y.shape == (20, 2, 4, 4) and torch.equal(y[4:], torch.full((16, 2, 4, 4), 7.0))


def test_build_y_errors():
    h, w = 32, 32
    image = prepare_image(_picture(), (h, w))
    vae = RecordingVAE()
    with pytest.raises(ValueError):  # frames not 4n+1
        build_y(vae, image, 8, _mask_channels(h, w, 9))
    with pytest.raises(ValueError):  # mask for another frame count
        build_y(vae, image, 5, _mask_channels(h, w, 9))
    with pytest.raises(ValueError):  # mask for another size
        build_y(vae, image, 5, _mask_channels(64, 32, 5))
    with pytest.raises(ValueError):  # not a multiple of 8
        build_y(vae, prepare_image(_picture(), (36, 32)), 5, torch.zeros(4, 2, 4, 4))
    with pytest.raises(ValueError):  # image layout
        build_y(vae, image.permute(1, 2, 0), 5, _mask_channels(h, w, 5))
    with pytest.raises(ValueError):  # VAE returns the wrong latent
        build_y(lambda v: torch.zeros(1, 16, 1, 4, 4), image, 5, _mask_channels(h, w, 5))


# ----------------------------------------------------------------------------------------------------- CLIP


def test_clip_input_squashes_to_224_and_normalises():
    image = to_m11(_picture(100, 300))
    out = clip_input(image)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    squashed = F.interpolate(image[None], size=(224, 224), mode="bicubic", align_corners=False)[0]
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    assert torch.allclose(out, (squashed * 0.5 + 0.5 - mean) / std, atol=1e-6)
    assert torch.equal(clip_input(image[None]), out)


def test_clip_input_constant_colour():
    grey = torch.full((3, 50, 70), 0.2)  # 0.6 in [0, 1]
    expected = (0.6 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(clip_input(grey), expected.view(3, 1, 1).expand(3, 224, 224), atol=1e-5)
    assert CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073) and CLIP_STD == (0.26862954, 0.26130258, 0.27577711)


@pytest.mark.parametrize(
    "bad, error",
    [
        (torch.zeros(4, 8, 8), ValueError),
        (torch.zeros(2, 3, 8, 8), ValueError),
        (torch.zeros(3, 8, 8).long(), TypeError),
    ],
)
def test_clip_input_errors(bad, error):
    with pytest.raises(error):
        clip_input(bad)

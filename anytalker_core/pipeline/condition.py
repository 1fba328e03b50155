"""Conditioning of a window: the video size, the first frame, and ``y`` (``docs/model.md``, "Inputs").

Everything follows the reference's ``generate`` (HKUST-C4G/AnyTalker ``wan/audio2video_multiID.py``) step by
step, in its operation order, so that the tensors match it:

- :func:`~anytalker_core.sizes.target_size` (from :mod:`anytalker_core.sizes`): the output size from the
  picture's aspect and ``max_area``;
- :func:`to_m11` / :func:`prepare_image`: the picture as a float32 ``[3, H, W]`` tensor in [-1, 1]
  (``TF.to_tensor(img).sub_(0.5).div_(0.5)``), then resized *after* the scaling with
  ``F.interpolate(mode="bicubic")`` (align_corners False, no antialias, no clamp: bicubic may overshoot [-1, 1]
  slightly, as in the reference);
- :func:`build_y`: the 20-channel condition ``y = concat(4 mask channels, VAE latent of [first frame, zeros])``,
  through a :class:`~anytalker_core.encoders.vae.VideoVAE` (which owns the latent normalisation).

The image encoder's input (``clip_input``) lives with the image encoder, in :mod:`anytalker_core.encoders.image`.
"""

from __future__ import annotations

from typing import Callable, Union

import numpy as np
import torch
import torch.nn.functional as F

from .. import timeline
from ..encoders.vae import LATENT_CHANNELS, VideoVAE
from ..images import as_rgb, check_chw
from ..sizes import MAX_AREA, PIXELS_PER_LATENT, target_size  # noqa: F401  (target_size: this module's API)

VAE_STRIDE = (timeline.STRIDE, PIXELS_PER_LATENT, PIXELS_PER_LATENT)  # time, height, width (a2v_1_3B.vae_stride)
MASK_CHANNELS = 4


# ---------------------------------------------------------------------------------------------------- image

ImageLike = Union[np.ndarray, torch.Tensor]


def to_m11(image: ImageLike) -> torch.Tensor:
    """A picture ``[H, W, 3]`` (or ``[1, H, W, 3]``), uint8 0..255 or float 0..1, numpy or torch, as the
    reference's ``TF.to_tensor(img).sub_(0.5).div_(0.5)``: float32 ``[3, H, W]`` in [-1, 1], not resized.

    uint8 is divided by 255 in float32 first (what ``to_tensor`` does); float input is taken as already in 0..1.
    """
    chw = as_rgb(image).permute(2, 0, 1).contiguous()
    return chw.sub_(0.5).div_(0.5)


def resize_m11(image_m11: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[3, H, W]`` -> ``[3, h, w]``, float32, by ``F.interpolate(mode="bicubic")`` as the reference resizes the
    first frame (align_corners False, no antialias, no clamp)."""
    check_chw(image_m11, "image_m11")
    h, w = _check_size(size)
    out = F.interpolate(image_m11[None].to(torch.float32), size=(h, w), mode="bicubic")
    return out[0]


def prepare_image(image: ImageLike, size: tuple[int, int]) -> torch.Tensor:
    """The first frame at the target ``size`` (h, w): float32 ``[3, h, w]`` in [-1, 1] (bicubic overshoot kept).

    Order as the reference: scale to [-1, 1] at the original size, then resize with torch bicubic.
    """
    return resize_m11(to_m11(image), size)


# -------------------------------------------------------------------------------------------------------- y

EncodeFn = Callable[[torch.Tensor], torch.Tensor]


def first_frame_video(image_m11: torch.Tensor, video_frames: int) -> torch.Tensor:
    """The video the reference encodes for ``y``: ``[3, F, H, W]`` float32, frame 0 the picture, frames 1..F-1
    zeros (zero = mid grey in [-1, 1]).

    ``image_m11`` may also hold M known frames ``[3, M, H, W]`` (a long video's window continuing the previous
    one): they come first, then F - M zero frames.
    """
    known = image_m11[:, None] if image_m11.dim() == 3 else image_m11
    check_chw(known[:, 0], "image_m11")
    timeline.check_frames(video_frames, "video_frames")
    m, h, w = known.shape[1:]
    if m > video_frames:
        raise ValueError(f"{m} known frames do not fit a video of {video_frames} frames")
    known = known.to(torch.float32)
    return torch.cat([known, torch.zeros(3, video_frames - m, h, w, dtype=torch.float32, device=known.device)], 1)


def build_y(
    vae: VideoVAE | EncodeFn, image_m11: torch.Tensor, video_frames: int, mask_channels: torch.Tensor
) -> torch.Tensor:
    """The condition ``y`` ``[20, T, H/8, W/8]``: the 4 mask channels first, then the 16-channel normalised
    latent of [the first frame, then F-1 zero frames] (reference: ``y = torch.concat([msk, y])`` /
    ``torch.cat([dit_mask, y], dim=0)``).

    ``vae``: a :class:`VideoVAE` (its ``encode`` is used) or a function with ``encode``'s contract
    (``[1, 3, F, H, W]`` in [-1, 1] -> normalised ``[1, 16, T, H/8, W/8]``). ``image_m11``: the first frame at the
    target size, ``[3, H, W]`` (:func:`prepare_image`), or the known frames ``[3, M, H, W]`` a window starts from.
    ``mask_channels``: ``[4, T, H/8, W/8]`` (``anytalker_core.routing.y_mask_channels``). The result has the
    latent's dtype and device.
    """
    video = first_frame_video(image_m11, video_frames)
    _, _, h, w = video.shape
    latent_shape = (timeline.latent_frames(video_frames), h // VAE_STRIDE[1], w // VAE_STRIDE[2])
    if h % VAE_STRIDE[1] or w % VAE_STRIDE[2]:
        raise ValueError(f"image size {(h, w)} must be a multiple of {VAE_STRIDE[1]} on both sides")
    if tuple(mask_channels.shape) != (MASK_CHANNELS, *latent_shape):
        raise ValueError(
            f"mask_channels must be {(MASK_CHANNELS, *latent_shape)} for {video_frames} frames of {h}x{w}, "
            f"got {tuple(mask_channels.shape)}"
        )
    encode = vae.encode if hasattr(vae, "encode") else vae
    if not callable(encode):
        raise TypeError("vae must be a VideoVAE (with encode) or an encode function")
    latent = encode(video[None])
    if not isinstance(latent, torch.Tensor) or tuple(latent.shape) != (1, LATENT_CHANNELS, *latent_shape):
        got = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
        raise ValueError(f"VAE encode must return {(1, LATENT_CHANNELS, *latent_shape)}, got {got}")
    latent = latent[0]
    return torch.cat([mask_channels.to(dtype=latent.dtype, device=latent.device), latent], 0)


# -------------------------------------------------------------------------------------------------- helpers


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = size
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    for value in (h, w):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"size must be two positive integers (height, width), got {size!r}")
    return int(h), int(w)

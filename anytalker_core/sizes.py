"""Video sizes: the reference's size rule from a picture and an area budget, and its 480p budget.

The VAE turns 8x8 pixels into one latent cell and the model's patch turns 2x2 latent cells into one token, so a
video side is a multiple of 16 pixels; the reference moves both sides to multiples of 32.
"""

from __future__ import annotations

import math

import numpy as np

PIXELS_PER_LATENT = 8  # the VAE's spatial stride
LATENTS_PER_TOKEN = 2  # the model's spatial patch
MAX_AREA = 832 * 480  # the reference's 480p area budget (its ``--size 832*480`` / ``480*832``)


def target_size(height: int, width: int, max_area: int = MAX_AREA, multiple: int = 32) -> tuple[int, int]:
    """The output (h, w) in pixels for a picture of ``height`` x ``width``, exactly as the reference computes it.

    1. aspect = height / width (of the input picture);
       lat_h = round(sqrt(max_area * aspect) // 8 // 2 * 2), lat_w = round(sqrt(max_area / aspect) // 8 // 2 * 2)
       (floor to the VAE stride 8, then to an even latent size for the patch 2); h, w = 8 lat_h, 8 lat_w.
    2. With a = h / w of that size, two candidates:
       (a) w1 = w // 32 * 32, h1 = int(w1 * a) // 32 * 32;
       (b) h2 = h // 32 * 32, w2 = int(h2 / a) // 32 * 32;
       every side that comes out 0 becomes 32. Keep (a) when |w1 - w| + |h1 - h| <= that of (b), else (b).

    Both sides are multiples of ``multiple`` (the reference's 32) and, since every step rounds down, the area is
    at most ``max_area`` (unless a side was raised to the minimum ``multiple``).
    """
    for name, value in (("height", height), ("width", width), ("max_area", max_area), ("multiple", multiple)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    stride_h = stride_w = PIXELS_PER_LATENT
    patch_h = patch_w = LATENTS_PER_TOKEN
    aspect = height / width
    lat_h = round(math.sqrt(max_area * aspect) // stride_h // patch_h * patch_h)
    lat_w = round(math.sqrt(max_area / aspect) // stride_w // patch_w * patch_w)
    if lat_h == 0 or lat_w == 0:  # the reference divides by zero here
        raise ValueError(f"aspect of {height}x{width} is too extreme for max_area {max_area}: a side rounds to 0")
    h, w = lat_h * stride_h, lat_w * stride_w
    aspect = h / w  # the reference's "original_aspect_ratio": of the rounded size, not of the picture

    w1 = (w // multiple) * multiple or multiple
    h1 = (int(w1 * aspect) // multiple) * multiple or multiple
    h2 = (h // multiple) * multiple or multiple
    w2 = (int(h2 / aspect) // multiple) * multiple or multiple
    if abs(w1 - w) + abs(h1 - h) <= abs(w2 - w) + abs(h2 - h):
        return h1, w1
    return h2, w2


def is_480p(height: int, width: int) -> bool:
    """Whether a ``height`` x ``width`` video is a 480p clip in the reference's sense: 832x480 or 480x832 (its
    ``--size`` values), or what its :data:`MAX_AREA` budget makes for a picture of that aspect (448x832 for an
    832x480 picture, 608x608 for a square one, ...)."""
    if {height, width} == {480, 832} and height != width:
        return True
    try:
        return target_size(height, width, MAX_AREA) == (height, width)
    except ValueError:
        return False

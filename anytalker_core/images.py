"""One reading of a picture for every module: ``[H, W, 3]`` or a ComfyUI ``IMAGE`` batch of one."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_rgb(image: Any, name: str = "image", error: type[ValueError] = ValueError) -> torch.Tensor:
    """``[H, W, 3]`` or ``[1, H, W, 3]``, uint8 (0..255) or float (0..1), numpy or torch -> float32 ``[H, W, 3]``.

    uint8 is divided by 255 in float32; float values are kept as they are (not clamped). Raises ``error`` (a
    ``ValueError``) naming ``name`` and the expected vs actual layout.
    """
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.require(image, requirements=("C", "W")))  # copies only read-only or strided
    if not isinstance(image, torch.Tensor):
        raise error(f"{name}: expected a numpy array or torch tensor [H, W, 3], got {type(image).__name__}")
    shape = list(image.shape)
    if image.dim() == 4 and shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise error(f"{name}: expected shape [H, W, 3] or [1, H, W, 3] (RGB, channels last), got {shape}")
    if image.dtype == torch.uint8:
        return image.to(torch.float32).div(255)
    if not image.is_floating_point():
        raise error(f"{name}: expected dtype uint8 (0..255) or float (0..1), got {image.dtype}")
    image = image.to(torch.float32)
    if not torch.isfinite(image).all():
        raise error(f"{name}: the image has NaN or infinite values")
    return image


def read_image(path: Any, name: str = "image") -> np.ndarray:
    """A picture file (PNG, JPEG, WebP, BMP, TIFF; the content decides, not the extension) -> uint8 RGB [H, W, 3].

    An alpha channel is dropped (as the reference's ``Image.convert("RGB")`` does); EXIF orientation is applied.
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one that is not a readable picture.
    """
    import os

    import cv2

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: file not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)  # np + imdecode: non-ASCII paths work on every OS
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ValueError(f"{name}: {path} is not a picture OpenCV can read (expected PNG, JPEG, WebP, BMP or TIFF)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def check_chw(image: torch.Tensor, name: str) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name} must be a [3, H, W] tensor, got {got}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [-1, 1], got {image.dtype}")

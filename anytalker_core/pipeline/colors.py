"""Colour anchoring for long videos: each later window's colours matched to the picture's in CIE Lab.

A window's per-channel mean and spread in Lab are moved to the picture's (:func:`color_stats`), one transform for
the whole window, so colours neither drift nor saturate at the seams while motion and lighting inside a window
are kept.
"""

from __future__ import annotations

import numpy as np
import torch


def _lab(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[n, H, W, 3]`` -> float32 CIE Lab (L 0..100, a and b about -128..127), same shape."""
    import cv2

    n, h, w, _ = frames.shape
    rgb = frames.reshape(n * h, w, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).reshape(n, h, w, 3)


def color_stats(frames: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation in CIE Lab of uint8 RGB frames ``[n, H, W, 3]`` (or one picture)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    lab = _lab(frames).reshape(-1, 3).astype(np.float64)
    return lab.mean(0), lab.std(0)


def anchor_colors(
    frames: np.ndarray | torch.Tensor, target: tuple[np.ndarray, np.ndarray], strength: float = 1.0
) -> np.ndarray:
    """Match the frames' Lab mean and spread to ``target`` (:func:`color_stats` of the picture), per channel,
    over the whole window (one transform for all its frames, so motion and lighting within it are kept).
    ``strength`` in 0..1 blends the transform (1 = full match). uint8 RGB in, uint8 RGB out."""
    import cv2

    frames = np.asarray(frames)
    if strength == 0:
        return frames
    lab = _lab(frames)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
    scale = np.where(std > 1e-3, target[1] / np.maximum(std, 1e-3), 1.0)
    matched = (lab - mean) * scale + target[0]
    lab = (lab + strength * (matched - lab)).astype(np.float32)
    n, h, w, _ = frames.shape
    rgb = cv2.cvtColor(lab.reshape(n * h, w, 3), cv2.COLOR_Lab2RGB).reshape(n, h, w, 3)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)

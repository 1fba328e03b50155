"""Talking frames with a known moving mouth, for the judge's tests: the demo's two anchors (384x256) whose lower
lips drop with their voices' loudness, and whose eyes and brows can be made to twitch.

The two voices take turns as the demo does (``concat``): the left anchor's 0.9 s, then the right one's.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from anytalker_core import demo
from anytalker_core.images import read_image
from anytalker_core.judge.mesh import CHIN, EYE_BROW, LOWER_LIP, UPPER_LIP, face_mesh
from anytalker_core.judge.sync import loudness
from anytalker_core.people.audio import load_audio
from anytalker_core.people.faces import find_faces

FPS = 24.0
MOUTH_PX = 4.0  # the widest opening, pixels
LEFT_CORNER, RIGHT_CORNER = 61, 291  # the mouth corners of the face mesh


@lru_cache(maxsize=1)
def still() -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The demo picture and each anchor's mesh on it, left to right."""
    picture = read_image(demo.IMAGE)
    faces = find_faces(picture, n=2, backend="yunet").faces
    return picture, tuple(face_mesh(picture, f.raw_box, f.landmarks[:2])[0] for f in faces)


def voices() -> list[np.ndarray]:
    """The two voices on one 1.8 s timeline (16 kHz): the left one first, then the right one."""
    left, right = (load_audio(path).numpy() for path in demo.AUDIO)
    total = left.shape[0] + right.shape[0]
    return [np.pad(left, (0, total - left.shape[0])), np.pad(right, (total - right.shape[0], 0))]


def frames_for(tracks: list[np.ndarray]) -> int:
    return int(tracks[0].shape[0] / 16000 * FPS)


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return ys, xs


def open_mouth(image: np.ndarray, points: np.ndarray, pixels: float) -> np.ndarray:
    """The lower lip and the jaw below it slid down by ``pixels`` (fading out under the chin), the gap dark."""
    ys, xs = _grid(image.shape[:2])
    lip = (points[UPPER_LIP, 1] + points[LOWER_LIP, 1]) / 2
    x0, x1 = points[LEFT_CORNER, 0], points[RIGHT_CORNER, 0]
    centre, half = (x0 + x1) / 2, (x1 - x0) / 2
    floor = points[CHIN, 1] + 0.3 * (points[CHIN, 1] - lip)
    across = np.clip(1 - np.abs(xs - centre) / (1.6 * half), 0, 1) ** 0.5
    down = np.clip((floor - ys) / (floor - lip), 0, 1)
    shift = np.where(ys >= lip, pixels * across * down, 0).astype(np.float32)
    out = cv2.remap(image, xs, ys - shift, cv2.INTER_LINEAR)
    out[(ys >= lip) & (ys < lip + shift) & (np.abs(xs - centre) < 0.9 * half)] = (60, 20, 25)
    return out


def raise_brows(image: np.ndarray, points: np.ndarray, pixels: float) -> np.ndarray:
    """The eyes and brows moved up by ``pixels`` (the rest of the face fading out around them)."""
    if pixels == 0:
        return image
    ys, xs = _grid(image.shape[:2])
    region = points[list(EYE_BROW)]
    (x0, y0), (x1, y1) = region.min(0), region.max(0)
    pad = 0.5 * (y1 - y0)
    inside_x = np.clip(1 - np.maximum(x0 - xs, xs - x1) / pad, 0, 1)
    inside_y = np.clip(1 - np.maximum(y0 - ys, ys - y1) / pad, 0, 1)
    return cv2.remap(image, xs, ys + pixels * inside_x * inside_y, cv2.INTER_LINEAR)


def talking_frames(tracks: list[np.ndarray | None], brows: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """uint8 [T, 256, 384, 3]: each anchor's mouth opens with the loudness of their track (None: still), and
    their eyes and brows jump up by ``brows[p]`` pixels every other frame."""
    picture, meshes = still()
    count = frames_for([t for t in tracks if t is not None])
    levels = [None if t is None else loudness(t, count, FPS) for t in tracks]
    out = np.empty((count, *picture.shape), np.uint8)
    for t in range(count):
        frame = picture
        for person, points in enumerate(meshes):
            if levels[person] is not None:
                frame = open_mouth(frame, points, MOUTH_PX * levels[person][t] / levels[person].max())
            frame = raise_brows(frame, points, brows[person] * (t % 2))
        out[t] = frame
    return out

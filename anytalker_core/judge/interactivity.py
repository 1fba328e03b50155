"""Listener motion: the paper's interactivity metric, with the rules of the reference's
``benchmark/calculate_interactivity.py`` (HKUST-C4G/AnyTalker), on the face mesh instead of InsightFace.

Per person, in every frame that shows them:

1. the detector's box made square (``people.masks.square_box``); one crop side for the whole video, the largest
   square side of any face in any frame, at least :data:`TARGET` (the reference's first pass);
2. the crop's centre follows the box centre smoothly, ``centre = 0.7 * new + 0.3 * old``; a box centre more
   than :data:`OUTLIER` px (picture pixels) from the last stable centre is an outlier and the stable centre is used
   instead of it;
3. the mesh points moved into that crop and rescaled to :data:`TARGET` px; points whose mean distance to the last
   stable points exceeds :data:`OUTLIER` px (crop pixels) are an outlier and the stable points stand in;
4. the frame's motion: the mean distance the 22 eye and eyebrow points (``mesh.EYE_BROW``) moved since the
   person's previous frame;
5. counted only while the person is silent (not inside one of their speaking intervals, ``start <= t <= end``
   with ``t = frame / fps``), each frame weighing ``1 / fps``.

Per person the weighted mean over their counted frames (None when none counts); overall the weighted mean over
everybody's counted frames. The overall is -1.0, as in the reference, when the face count is not stable (a frame
shows fewer faces than there are people) or when no frame counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..people.masks import square_box
from .mesh import EYE_BROW
from .tracks import FaceTracks

TARGET = 224  # the crop's side after rescaling, pixels
OUTLIER = 10.0  # pixels: box centre (picture) and mean point (crop) jumps beyond this are outliers
SMOOTHING = 0.7  # weight of the new box centre

Intervals = Sequence[Sequence[float]]


@dataclass
class ListenerMotion:
    """motion: float32 [T, P] eye/brow motion per frame (px in the 224-px crop; NaN: no previous frame);
    counted: bool [T, P] frames that count (silent); per_person: the mean per person (None: nothing counted);
    overall: the reference's overall mean, -1.0 when not scored; crop: the crop side in picture pixels."""

    motion: np.ndarray
    counted: np.ndarray
    per_person: list[float | None]
    overall: float
    crop: int


def speaking_mask(speaking: Sequence[Intervals], frames: int, fps: float) -> np.ndarray:
    """bool [T, P]: person p speaks at frame t (``start <= t / fps <= end`` for one of their intervals)."""
    times = np.arange(frames) / fps
    mask = np.zeros((frames, len(speaking)), bool)
    for p, intervals in enumerate(speaking):
        for start, end in intervals:
            mask[:, p] |= (times >= start) & (times <= end)
    return mask


def crop_side(tracks: FaceTracks) -> int:
    """The reference's first pass: the largest square face side (whole pixels) of the video, at least TARGET."""
    sides = [TARGET]
    for box in tracks.boxes[tracks.present()]:
        x0, _, x1, _ = square_box(tuple(float(v) for v in box), tracks.width, tracks.height)
        sides.append(int(x1 - x0))
    return max(sides)


def listener_motion(tracks: FaceTracks, speaking: Sequence[Intervals], fps: float, stable: bool) -> ListenerMotion:
    """The interactivity metric (module docs) for every tracked person; ``speaking``: one interval list per person."""
    frames, people = tracks.frames, tracks.people
    crop = crop_side(tracks)
    scale = TARGET / crop
    silent = ~speaking_mask(speaking, frames, fps)
    motion = np.full((frames, people), np.nan, np.float32)
    present = tracks.present()
    for p in range(people):
        centre = stable_centre = previous = stable_points = None
        for t in np.nonzero(present[:, p])[0]:
            x0, y0, x1, y1 = square_box(tuple(float(v) for v in tracks.boxes[t, p]), tracks.width, tracks.height)
            new = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
            outlier = stable_centre is not None and np.linalg.norm(new - stable_centre) > OUTLIER
            if outlier:
                new = stable_centre
            centre = new if centre is None else SMOOTHING * new + (1 - SMOOTHING) * centre
            if not outlier:
                stable_centre = centre
            points = (tracks.points[t, p].astype(np.float64) - (centre - crop / 2)) * scale
            jumped = stable_points is not None and np.linalg.norm(points - stable_points, axis=-1).mean() > OUTLIER
            if jumped:
                points = stable_points
            if previous is not None:
                motion[t, p] = np.linalg.norm(points[list(EYE_BROW)] - previous[list(EYE_BROW)], axis=-1).mean()
            previous = points
            if not jumped:
                stable_points = points
    counted = silent & ~np.isnan(motion)
    values = np.where(counted, motion, 0.0)  # every frame weighs 1 / fps: the weighted means are plain means
    per_person = [float(values[:, p].sum() / counted[:, p].sum()) if counted[:, p].any() else None
                  for p in range(people)]  # fmt: skip
    overall = float(values.sum() / counted.sum()) if stable and counted.any() else -1.0
    return ListenerMotion(motion, counted, per_person, overall, crop)

"""Everybody's face through the video: detected in every frame, followed from frame to frame, meshed.

Per frame the detector (``people.faces``, YuNet by default) finds the faces and the ``people`` largest are kept, as
the reference keeps its two largest. The first frame with that many faces numbers them left to right; later
frames match each face to the nearest one of the frame before (closest pairs first), so a person keeps their
number when people move or cross. Each face then gets its 468 mesh points (:mod:`.mesh`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..people.faces import find_faces
from .mesh import CHIN, FOREHEAD, LOWER_LIP, MESH_POINTS, UPPER_LIP, face_mesh
from .video import Frames, JudgeError


@dataclass
class FaceTracks:
    """``people`` faces through ``frames`` frames, numbered left to right as in the first frame that shows them
    all; NaN where a face was not found.

    boxes: float32 [T, P, 4] the detector's boxes (x0, y0, x1, y1); points: float32 [T, P, 468, 2] the mesh;
    found: int [T] faces the detector found in each frame (before keeping the largest ``people``).
    """

    boxes: np.ndarray
    points: np.ndarray
    found: np.ndarray
    width: int
    height: int
    backend: str

    @property
    def frames(self) -> int:
        return self.boxes.shape[0]

    @property
    def people(self) -> int:
        return self.boxes.shape[1]

    def present(self) -> np.ndarray:
        """bool [T, P]: the face was found in the frame."""
        return ~np.isnan(self.boxes[..., 0])


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _match(previous: np.ndarray, boxes: list) -> list[int | None]:
    """For each track (its last box, [P, 4]), the index of the box it continues into (closest pairs first)."""
    pairs = sorted(
        (float(np.linalg.norm(_centre(p) - _centre(np.asarray(b)))), t, d)
        for t, p in enumerate(previous)
        for d, b in enumerate(boxes)
    )
    chosen: list[int | None] = [None] * len(previous)
    used: set[int] = set()
    for _, track, found in pairs:
        if chosen[track] is None and found not in used:
            chosen[track] = found
            used.add(found)
    return chosen


def track_faces(
    frames: Frames,
    people: int | None,
    *,
    backend: str = "auto",
    threshold: float | None = None,
    root: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FaceTracks:
    """Detect, follow and mesh ``people`` faces through ``frames`` (None: as many as the first frame with faces
    shows). ``root``: InsightFace's model folder (``people.faces.find_faces``). ``progress(done, total)`` is called
    after every frame."""
    count = frames.count
    boxes = np.full((count, people or 0, 4), np.nan, np.float32)
    points = np.full((count, people or 0, MESH_POINTS, 2), np.nan, np.float32)
    found = np.zeros(count, np.int64)
    last: np.ndarray | None = None  # every track's last box, [P, 4]
    seen = 0
    for t, rgb in enumerate(frames):
        if t >= count:
            break
        seen += 1
        detection = find_faces(rgb, backend=backend, threshold=threshold, root=root)
        backend = detection.backend  # "auto" decides once, on the first frame
        faces = sorted(detection.faces, key=lambda f: -(f.raw_box[2] - f.raw_box[0]) * (f.raw_box[3] - f.raw_box[1]))
        found[t] = len(faces)
        if people is None and faces:
            people = len(faces)
            boxes = np.full((count, people, 4), np.nan, np.float32)
            points = np.full((count, people, MESH_POINTS, 2), np.nan, np.float32)
        faces = faces[: people or 0]
        if last is None:
            if people and len(faces) == people:  # the first frame with everybody: number them left to right
                faces.sort(key=lambda f: f.raw_box[0])
                order: list[int | None] = list(range(people))
            else:
                order = []
        else:
            order = _match(last, [f.raw_box for f in faces])
        for person, index in enumerate(order):
            if index is None:
                continue
            face = faces[index]
            boxes[t, person] = face.raw_box
            eyes = (face.landmarks[0], face.landmarks[1]) if face.landmarks else None
            points[t, person] = face_mesh(rgb, face.raw_box, eyes)[0]
        if order:
            last = np.where(np.isnan(boxes[t]), last if last is not None else boxes[t], boxes[t])
        if progress is not None:
            progress(t + 1, count)
    if seen < count:  # a file whose header counted more frames than it decodes to
        boxes, points, found = boxes[:seen], points[:seen], found[:seen]
    if not found.any():
        raise JudgeError(f"video: no face found in any of the {seen} frames of {frames.name} (detector "
                         f"{backend}); is this the talking video? Try a lower face threshold")  # fmt: skip
    if people and found.max() < people:
        raise JudgeError(f"video: at most {found.max()} face(s) in any frame of {frames.name} but {people} people "
                         "are to be judged (one per voice); give one voice per visible face, or a lower face "
                         "threshold")  # fmt: skip
    return FaceTracks(boxes, points, found, frames.width, frames.height, backend)


def mouth_openings(tracks: FaceTracks) -> np.ndarray:
    """float32 [T, P]: inner-lip gap over face height per frame and face (NaN where the face is missing)."""
    p = tracks.points
    gap = np.linalg.norm(p[:, :, UPPER_LIP] - p[:, :, LOWER_LIP], axis=-1)
    height = np.linalg.norm(p[:, :, FOREHEAD] - p[:, :, CHIN], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (gap / height).astype(np.float32)


def short_frames(tracks: FaceTracks) -> np.ndarray:
    """The frames where fewer faces were found than there are people (the reference's unstable face count)."""
    return np.nonzero(tracks.found < tracks.people)[0]

"""MediaPipe's face mesh (468 points) on one face, through OpenCV's TFLite reader: no MediaPipe package.

The model (``face_models/face_landmark.tflite``, Apache-2.0) reads a 192x192 RGB crop (0..1, NCHW) and gives
468 (x, y, z) points in the crop's pixels and a face score (a logit). The crop is a square of
:data:`CROP_SCALE` x the detector's box about its centre, turned so the eyes lie level (the detector's two eye
landmarks give the angle), as MediaPipe's own pipeline crops it.

Points used (MediaPipe's face mesh topology):

- the mouth: inner lips :data:`UPPER_LIP` 13 and :data:`LOWER_LIP` 14; the face height :data:`FOREHEAD` 10 to
  :data:`CHIN` 152; the mouth opening is ``|13 - 14| / |10 - 152|``.
- the reference's 22 eye and eyebrow points (InsightFace's 106-point model, the 68-point layout's brows 17-26
  and eyes 36-47), mapped to the mesh point by point in the same order, :data:`EYE_BROW`:

  ===================== ===================================== ========================
  68-point layout        106-point (the reference)              face mesh
  ===================== ===================================== ========================
  brow 17-21 (image left) 43, 48, 49, 51, 50                    70, 63, 105, 66, 107
  brow 22-26              102, 103, 104, 105, 101               336, 296, 334, 293, 300
  eye 36-41               35, 41, 42, 39, 37, 36                33, 160, 158, 133, 153, 144
  eye 42-47               89, 95, 96, 93, 91, 90                362, 385, 387, 263, 373, 380
  ===================== ===================================== ========================

  The mesh's brow points are the brow's upper edge (the 68-point layout's line), its eye points the corners and
  two points on each lid. The two models place their points differently, so listener motion measured here is
  comparable between videos scored with this tool, not with the paper's InsightFace numbers.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .video import JudgeError

MESH_FILE = Path(__file__).resolve().parent / "face_models" / "face_landmark.tflite"
MESH_INPUT = 192  # the model's crop side, pixels
MESH_POINTS = 468
# The model's two outputs by name (the same in OpenCV 4 and in OpenCV 5's classic engine).
POINTS_OUTPUT, FACE_FLAG_OUTPUT = "conv2d_21", "conv2d_31"  # [1, 1404, 1, 1] (x, y, z per point), [1, 1, 1, 1]
CROP_SCALE = 1.5  # crop side / detector box side (MediaPipe's ROI scale)
UPPER_LIP, LOWER_LIP, FOREHEAD, CHIN = 13, 14, 10, 152
EYE_BROW = (
    70, 63, 105, 66, 107,  # brow on the image's left (the person's right)
    336, 296, 334, 293, 300,  # the other brow
    33, 160, 158, 133, 153, 144,  # eye on the image's left
    362, 385, 387, 263, 373, 380,  # the other eye
)  # fmt: skip

Point = tuple[float, float]


class MeshError(JudgeError):
    """The face mesh model cannot run here; the message says why and what to do."""


@lru_cache(maxsize=1)
def _network() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise MeshError(f'the face mesh needs OpenCV (cv2), not importable ({exc}); pip install '
                        '"opencv-python-headless>=4.8,<6"') from exc  # fmt: skip
    if not MESH_FILE.is_file():
        raise MeshError(f"the face mesh model {MESH_FILE} is missing from the pack; reinstall the pack")
    if not hasattr(cv2.dnn, "readNetFromTFLite"):
        raise MeshError(f"OpenCV {cv2.__version__} cannot read TFLite models (cv2.dnn.readNetFromTFLite, OpenCV "
                        '4.8 or newer); pip install "opencv-python-headless>=4.8,<6"')  # fmt: skip
    if hasattr(cv2.dnn, "ENGINE_CLASSIC"):  # OpenCV 5: its new engine gives this model only one of its two outputs
        return cv2.dnn.readNetFromTFLite(str(MESH_FILE), engine=cv2.dnn.ENGINE_CLASSIC)
    return cv2.dnn.readNetFromTFLite(str(MESH_FILE))


_LOCK = threading.Lock()  # one network object: one face at a time


def crop_transform(box: Sequence[float], eyes: tuple[Point, Point] | None) -> np.ndarray:
    """The 2x3 affine map from image pixels to the model's 192-px crop of the face ``box`` (x0, y0, x1, y1),
    turned so that ``eyes`` (image-left eye, other eye) lie level; no turn without eyes."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = CROP_SCALE * max(box[2] - box[0], box[3] - box[1])
    angle = 0.0 if eyes is None else math.atan2(eyes[1][1] - eyes[0][1], eyes[1][0] - eyes[0][0])
    scale = MESH_INPUT / side
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    # rotate by -angle about the centre, scale, then move the centre to the crop's centre
    return np.array([[cos, sin, MESH_INPUT / 2 - cos * cx - sin * cy],
                     [-sin, cos, MESH_INPUT / 2 + sin * cx - cos * cy]], np.float64)  # fmt: skip


def face_mesh(
    rgb: np.ndarray, box: Sequence[float], eyes: tuple[Point, Point] | None = None
) -> tuple[np.ndarray, float]:
    """The 468 mesh points of the face in ``box`` of the picture ``rgb`` (uint8 [H, W, 3]): float32 [468, 2] in
    the picture's pixels, and the model's face score (a logit: above 0 a face, about 20-40 for a clear one)."""
    import cv2

    forward = crop_transform(box, eyes)
    crop = cv2.warpAffine(rgb, forward, (MESH_INPUT, MESH_INPUT), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)  # fmt: skip
    blob = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]  # [1, 3, 192, 192]
    with _LOCK:
        net = _network()
        net.setInput(blob)
        raw_points, flag = net.forward([POINTS_OUTPUT, FACE_FLAG_OUTPUT])
    points = raw_points.reshape(MESH_POINTS, 3)[:, :2]
    score = float(flag.reshape(()))
    back = cv2.invertAffineTransform(forward)
    image_points = points.astype(np.float64) @ back[:, :2].T + back[:, 2]
    return image_points.astype(np.float32), score

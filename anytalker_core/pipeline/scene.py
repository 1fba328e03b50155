"""What every window of one clip shares: the picture, the video size, who says what, and the image features.

A :class:`Scene` is computed once per clip, before any sampling, by whoever runs the clip: the standalone
pipeline (:func:`anytalker_core.pipeline.standalone.prepare`) and the ComfyUI nodes build it the same way, from a
speaker layout, a routing and an image encoder, with :func:`build_scene`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..people.routing import Routing
from ..people.speakers import SpeakerLayout
from .condition import to_m11

EncodeImage = Callable[[torch.Tensor], torch.Tensor]  # picture [3, H, W] in [-1, 1] -> [1, 257, 1280]


@dataclass(frozen=True)
class Scene:
    """One clip's shared state.

    ``picture``: float32 ``[H, W, 3]`` in 0..1, the input picture at its own size.
    ``size``: the video's (H, W) in pixels, multiples of 32.
    ``layout``: every person's audio features on the clip's timeline, and the mixed soundtrack.
    ``routing``: which voice drives which face (token masks, ``y`` mask channels, face crops).
    ``picture_features``: image-encoder features of the whole picture ``[1, 257, 1280]`` (the model's ``clip``).
    ``face_features``: per person, image-encoder features of the face crop ``[1, 257, 1280]``.
    """

    picture: torch.Tensor
    size: tuple[int, int]
    layout: SpeakerLayout
    routing: Routing
    picture_features: torch.Tensor
    face_features: tuple[torch.Tensor, ...]

    @property
    def frames(self) -> int:
        """The clip's length in video frames (4n+1)."""
        return self.layout.num_frames


def build_scene(
    picture: torch.Tensor,
    size: tuple[int, int],
    layout: SpeakerLayout,
    routing: Routing,
    encode_image: EncodeImage,
    picture_features: torch.Tensor | None = None,
) -> Scene:
    """The :class:`Scene` of a clip: the image encoder runs on the picture at its own size (as the reference
    does) unless ``picture_features`` are given, and on every face crop, in voice order."""
    if picture_features is None:
        picture_features = encode_image(to_m11(picture))
    faces = tuple(encode_image(crop.permute(2, 0, 1).mul(2).sub(1)) for crop in routing.crops)
    return Scene(picture, (int(size[0]), int(size[1])), layout, routing, picture_features, faces)

"""Who is in the picture and what they say: voices, face detection, and the identity chain."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..anytalker_core.people.faces import BACKENDS
from .payloads import Identity, Voice
from .schema import EXPERT, IDENTITIES, VOICE


def _seconds(audio: dict) -> float:
    waveform, rate = audio["waveform"], int(audio["sample_rate"])
    return float(waveform.shape[-1]) / rate


class AnyTalkerVoice(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerVoice",
            display_name="AnyTalker Voice",
            category="AnyTalker",
            description="One person's speech; the clip's node encodes it on the clip's timeline.",
            inputs=[
                io.Audio.Input("audio", tooltip="This person's speech (any sample rate; stereo is mixed to mono)."),
            ],
            outputs=[VOICE.Output(display_name="voice", tooltip="Connect to an AnyTalker Identity.")],
        )

    @classmethod
    def execute(cls, audio: dict) -> io.NodeOutput:
        from ..anytalker_core.people.audio import load_audio

        load_audio(audio, speaker="audio")  # fails now, with a clear message, on an empty or broken track
        return io.NodeOutput(Voice(audio=audio, seconds=_seconds(audio)))


class AnyTalkerFaceDetect(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerFaceDetect",
            display_name="AnyTalker Face Detect",
            category="AnyTalker",
            description="Find the faces in the picture: one mask per person, numbered left to right.",
            inputs=[
                io.Image.Input("image", tooltip="The start picture with everybody in it."),
                io.Int.Input("people", default=2, min=1, max=16,
                             tooltip="How many faces to keep (the largest ones), numbered left to right."),
                io.Combo.Input("backend", options=list(BACKENDS), default="auto", **EXPERT,
                               tooltip="auto: InsightFace when installed (models/insightface), else OpenCV's "
                               "Haar cascade (frontal faces)."),
            ],
            outputs=[
                io.Mask.Output(display_name="masks",
                               tooltip="One face mask per person, person 1 = leftmost; pick one with an "
                               "Identity's 'face' number."),
                io.Image.Output(display_name="preview", tooltip="The faces found, numbered."),
            ],
        )  # fmt: skip

    @classmethod
    def execute(cls, image: torch.Tensor, people: int, backend: str) -> io.NodeOutput:
        from ..anytalker_core.people.faces import detect_faces
        from ..anytalker_core.people.masks import box_mask
        from ..anytalker_core.people.preview import preview
        from ..anytalker_core.people.routing import route_from_boxes

        picture = image[0, :, :, :3]
        height, width = picture.shape[:2]
        boxes = detect_faces(picture, n=people, backend=backend, root=insightface_root())
        masks = torch.stack([box_mask(b, height, width) for b in boxes])
        routing = route_from_boxes(picture, boxes, 1)
        return io.NodeOutput(masks, preview(picture, routing)[None], ui={"text": [routing.describe()]})


def insightface_root() -> str | None:
    import os

    import folder_paths

    root = os.path.join(folder_paths.models_dir, "insightface")
    return root if os.path.isdir(root) else None


class AnyTalkerIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerIdentity",
            display_name="AnyTalker Identity",
            category="AnyTalker",
            description="One person: a voice bound to a face. Chain one per person, as many as you like.",
            inputs=[
                io.Mask.Input("face_mask", tooltip="This person's face: a mask from Face Detect or one you painted."),
                io.Int.Input("face", default=1, min=1, max=64,
                             tooltip="Which mask of a mask batch (Face Detect numbers people left to right); "
                             "ignored for a single mask."),
                VOICE.Input("voice", optional=True, tooltip="This person's voice. Leave empty for a listener."),
                IDENTITIES.Input("identities", optional=True,
                                 tooltip="The people added so far; this one is appended."),
                io.Float.Input("offset", default=0.0, min=0.0, max=600.0, step=0.05, optional=True, **EXPERT,
                               tooltip="Seconds of silence before this voice starts."),
            ],
            outputs=[IDENTITIES.Output(display_name="identities",
                                       tooltip="Everybody so far, in order; connect to the next Identity or to "
                                       "AnyTalker Image To Video.")],
        )  # fmt: skip

    @classmethod
    def execute(cls, face_mask, face, voice=None, identities=None, offset=0.0) -> io.NodeOutput:
        mask = face_mask if face_mask.dim() == 3 else face_mask[None]
        if mask.shape[0] > 1:
            if face > mask.shape[0]:
                raise ValueError(
                    f"face: asked for face {face} but the mask batch holds {mask.shape[0]} faces; Face Detect "
                    f"numbers people 1..{mask.shape[0]} from left to right"
                )
            mask = mask[face - 1]
        else:
            mask = mask[0]
        person = Identity(voice=voice, face_mask=mask.float().cpu(), offset=float(offset))
        return io.NodeOutput(tuple(identities or ()) + (person,))

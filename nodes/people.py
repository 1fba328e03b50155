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
                               tooltip="auto: InsightFace when installed with its models (models/insightface), "
                               "else YuNet (ships with the pack: profiles, hats, close-ups). haar: OpenCV's "
                               "frontal-face cascade, a last resort."),
                io.Float.Input("threshold", default=0.0, min=0.0, max=1.0, step=0.01, optional=True, **EXPERT,
                               tooltip="Detection score threshold; lower finds more faces (and more false ones). "
                               f"0 = the backend's default ({_defaults()})."),
            ],
            outputs=[
                io.Mask.Output(display_name="masks",
                               tooltip="One face mask per person, person 1 = leftmost; pick one with an "
                               "Identity's 'face' number."),
                io.Image.Output(display_name="preview",
                                tooltip="The faces found, numbered, with each face's score and the detector."),
            ],
        )  # fmt: skip

    @classmethod
    def execute(cls, image: torch.Tensor, people: int, backend: str, threshold: float = 0.0) -> io.NodeOutput:
        from ..anytalker_core.people.faces import find_faces
        from ..anytalker_core.people.masks import box_mask
        from ..anytalker_core.people.preview import preview
        from ..anytalker_core.people.routing import route_from_boxes

        picture = image[0, :, :, :3]
        height, width = picture.shape[:2]
        found = find_faces(picture, n=people, backend=backend, threshold=threshold or None, root=insightface_root())
        masks = torch.stack([box_mask(b, height, width) for b in found.boxes])
        routing = route_from_boxes(picture, found.boxes, 1)
        lines = [f"detector: {found.backend}, threshold {found.threshold:g}, {found.seconds * 1000:.0f} ms"]
        lines += [f"note: {found.note}"] if found.note else []
        lines += [f"face {i + 1}: score {s:.2f}, box {', '.join(str(int(v)) for v in b)}"
                  for i, (s, b) in enumerate(zip(found.scores, found.boxes))]  # fmt: skip
        image_out = preview(picture, routing, scores=found.scores, caption=found.backend)[None]
        return io.NodeOutput(masks, image_out, ui={"text": ["\n".join(lines)]})


def _defaults() -> str:
    from ..anytalker_core.people.faces import DEFAULT_THRESHOLDS

    return ", ".join(f"{name} {value:g}" for name, value in DEFAULT_THRESHOLDS.items())


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
                io.Int.Input("face", default=1, min=1, max=64,  # first: the host lists required inputs first
                             tooltip="Which mask of a face_mask batch (Face Detect numbers people left to right); "
                             "ignored for a single mask."),
                io.Mask.Input("face_mask", optional=True,
                              tooltip="This person's face: a mask from Face Detect or one you painted. Connect "
                              "this or moving_mask."),
                io.Mask.Input("moving_mask", optional=True,
                              tooltip="Instead of face_mask: this person's face in every frame, a mask batch as "
                              "long as the clip (e.g. from a segmentation or tracking node); the face's region "
                              "follows it."),
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
    def execute(cls, face_mask=None, face=1, voice=None, identities=None, offset=0.0, moving_mask=None):
        if (face_mask is None) == (moving_mask is None):
            given = "both are connected" if face_mask is not None else "neither is connected"
            raise ValueError(f"face_mask / moving_mask: connect exactly one of them ({given})")
        if moving_mask is not None:
            mask = moving_mask if moving_mask.dim() == 3 else moving_mask[None]
            if mask.shape[0] % 4 != 1:
                raise ValueError(
                    f"moving_mask: expected one mask per video frame, a batch of 4n+1 (as every clip: 1, 5, ..., "
                    f"81, ...) that matches the clip's length; got a batch of {mask.shape[0]}"
                )
            mask = mask[0] if mask.shape[0] == 1 else mask  # one mask: it holds still
        else:
            mask = face_mask if face_mask.dim() == 3 else face_mask[None]
            if face > mask.shape[0] > 1:
                raise ValueError(
                    f"face: asked for face {face} but the mask batch holds {mask.shape[0]} faces; Face Detect "
                    f"numbers people 1..{mask.shape[0]} from left to right"
                )
            mask = mask[face - 1] if mask.shape[0] > 1 else mask[0]
        person = Identity(voice=voice, face_mask=mask.float().cpu(), offset=float(offset))
        return io.NodeOutput(tuple(identities or ()) + (person,))

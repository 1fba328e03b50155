"""AnyTalker's image-to-video conditioning: like the host's WanImageToVideo, plus voices, faces and masks.

:func:`clip_scene` turns a clip node's inputs into the core's :class:`~anytalker_core.pipeline.scene.Scene`
(every voice on the clip's timeline, the routing, the image features) with the host's encoders;
:func:`window_conditioning` turns one window's inputs (the core's window engine) into the host's conditioning.
Image To Video is the clip as one window; the long-video nodes in ``long.py`` use the same two functions.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..anytalker_core import timeline
from ..anytalker_core.pipeline.condition import MAX_AREA, first_frame_video, target_size
from ..anytalker_core.pipeline.scene import Scene, build_scene
from ..anytalker_core.pipeline.windows import Window, WindowInputs, window_inputs
from ..anytalker_core.sampling import null_audio
from . import host
from .payloads import Identity
from .schema import EXPERT, check_clip, clip_frames, clip_inputs


def video_size(height: int, width: int, picture_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w): both given -> checked multiples of 32; else the reference's rule for the picture at 832x480 area."""
    if width == 0 and height == 0:
        return target_size(*picture_hw, MAX_AREA)
    if width % 32 or height % 32 or not width or not height:
        raise ValueError(
            f"width and height must both be multiples of 32 (or both 0 for the picture's aspect at 832x480), got "
            f"{width}x{height}"
        )
    return height, width


def clip_scene(
    start_image: torch.Tensor, identities: tuple[Identity, ...], clip_vision, audio_encoder, width: int, height: int,
    length: int, mode: str, clip_vision_output=None, chunk_frames: int | None = None,
) -> Scene:  # fmt: skip
    """The clip's :class:`Scene` from a clip node's inputs (``length`` 0: as long as the audio). ``chunk_frames``:
    the long-video nodes encode tracks longer than that in chunks (as ``render`` does); Image To Video, one pass
    over the clip, takes the reference's single pass."""
    from ..anytalker_core.people.audio import AudioError
    from ..anytalker_core.people.routing import route_from_masks
    from ..anytalker_core.people.speakers import arrange_speakers

    picture = start_image[0, :, :, :3].float().cpu()
    size = video_size(height, width, tuple(picture.shape[:2]))
    if length:
        timeline.check_frames(length, "length")
    if not identities:
        raise ValueError("identities: connect at least one AnyTalker Identity")
    if all(p.voice is None for p in identities):
        raise AudioError("identities: nobody has a voice; connect an AnyTalker Voice to at least one Identity")
    layout = arrange_speakers(
        [None if p.voice is None else p.voice.audio for p in identities], host.audio_encoder(audio_encoder),
        mode=mode, offsets=[p.offset for p in identities], num_frames=length or None, chunk_frames=chunk_frames,
    )  # fmt: skip
    for k, person in enumerate(identities):
        if person.moving and person.face_mask.shape[0] != layout.num_frames:
            raise ValueError(
                f"identities: person {k + 1}'s moving_mask holds {person.face_mask.shape[0]} masks but the clip has "
                f"{layout.num_frames} frames; give one mask per frame of the clip (or set duration to 'length' and "
                f"length to {person.face_mask.shape[0]})"
            )
    routing = route_from_masks(  # a moving mask [F, H, W] moves that person's face region frame by frame
        picture, [p.face_mask for p in identities], layout.num_frames, size=size, keep_order=True
    )
    given = None if clip_vision_output is None else clip_vision_output.penultimate_hidden_states
    return build_scene(picture, size, layout, routing, host.image_encoder(clip_vision), given)


def window_conditioning(scene: Scene, inputs: WindowInputs, vae, positive, negative):
    """(positive, negative, empty latent) for one window: the VAE latent of its known frames followed by grey
    frames, its ``y`` mask channels, the clip's image features, and its slice of every voice (zeroed, the
    reference's null audio, in the negative)."""
    import comfy.model_management as mm
    import node_helpers

    video = first_frame_video(inputs.known, inputs.window.length)  # the known frames, then grey
    latent = vae.encode(video.permute(1, 2, 3, 0).add(1).mul(0.5)).float()
    audio = torch.stack(inputs.audio)[None]  # [1, N, F, 5, 12, 768]
    common = {
        "concat_latent_image": latent,
        "anytalker_y_mask": inputs.y_mask[None],
        "clip_vision_output": host.clip_vision_output(scene.picture_features),
        "anytalker_faces": torch.cat(scene.face_features)[None],  # [1, N, 257, 1280]
        "anytalker_masks": torch.stack(inputs.token_masks)[None],  # [1, N, T, H/16, W/16]
    }
    positive = node_helpers.conditioning_set_values(positive, {**common, "anytalker_audio": audio})
    negative = node_helpers.conditioning_set_values(negative, {**common, "anytalker_audio": null_audio(audio)})
    empty = torch.zeros(latent.shape, device=mm.intermediate_device())
    return positive, negative, {"samples": empty}


def mixed_audio(scene: Scene) -> dict:
    """Everybody's voice on the clip's timeline, as the host's ``AUDIO``."""
    return {"waveform": scene.layout.mix[None, None].clone(), "sample_rate": scene.layout.mix_rate}


class AnyTalkerImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerImageToVideo",
            display_name="AnyTalker Image To Video",
            category="AnyTalker",
            description="Conditioning for AnyTalker: the start picture, everybody's voice and face, the clip length.",
            inputs=[
                *clip_inputs(),
                io.ClipVisionOutput.Input(
                    "clip_vision_output", optional=True, **EXPERT,
                    tooltip="Optional: CLIPVisionEncode of the start image (crop: none). When empty, clip_vision "
                    "encodes it exactly as the reference does.",
                ),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive",
                                       tooltip="The prompt with the picture, voices and faces."),
                io.Conditioning.Output(display_name="negative", tooltip="Carries zeroed voices, as the reference."),
                io.Latent.Output(display_name="latent", tooltip="An empty video latent of the right size."),
                io.Audio.Output(display_name="audio", tooltip="Everybody's voice mixed on the video's timeline, "
                                "for the video save node."),
                io.Image.Output(display_name="binding", tooltip="Which voice drives which face."),
            ],
        )  # fmt: skip

    @classmethod
    def validate_inputs(cls, width=None, height=None, length=None, duration=None) -> bool | str:
        return check_clip(width, height, length, duration)

    @classmethod
    def execute(
        cls, positive, negative, vae, clip_vision, audio_encoder, start_image, identities, width=0, height=0,
        length=0, mode="pad", clip_vision_output=None, duration=None,
    ) -> io.NodeOutput:  # fmt: skip
        from ..anytalker_core.people.preview import preview

        frames = clip_frames(length, duration)
        scene = clip_scene(start_image, identities, clip_vision, audio_encoder, width, height, frames, mode,
                           clip_vision_output)  # fmt: skip
        whole = Window(0, 0, scene.frames, 1)  # one pass over the clip, as the reference
        positive, negative, latent = window_conditioning(scene, window_inputs(scene, whole), vae, positive, negative)
        report = scene.layout.report() + "\n" + scene.routing.describe()
        return io.NodeOutput(
            positive, negative, latent, mixed_audio(scene), preview(scene.picture, scene.routing)[None],
            ui={"text": [report]},
        )  # fmt: skip

"""AnyTalker's image-to-video conditioning: like the host's WanImageToVideo, plus voices, faces and masks."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from .payloads import Identity
from .people import IDENTITIES

MAX_AREA = 832 * 480


def video_size(height: int, width: int, picture_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w): both given -> checked multiples of 32; else the reference's rule for the picture at 832x480 area."""
    from ..anytalker_core.condition import target_size

    if width == 0 and height == 0:
        return target_size(*picture_hw, MAX_AREA)
    if width % 32 or height % 32 or not width or not height:
        raise ValueError(
            f"width and height must both be multiples of 32 (or both 0 for the picture's aspect at 832x480), got "
            f"{width}x{height}"
        )
    return height, width


def encode_identities(identities: tuple[Identity, ...], picture: torch.Tensor, size, length: int, mode: str):
    """(layout, routing, face features [1, N, 257, 1280]) for the chained people."""
    from ..anytalker_core.audio import AudioError
    from ..anytalker_core.identities import route_from_masks
    from ..anytalker_core.speakers import arrange_speakers
    from .host import audio_encoder, image_encoder

    if not identities:
        raise ValueError("identities: connect at least one AnyTalker Identity")
    voices = [p.voice for p in identities if p.voice is not None]
    if not voices:
        raise AudioError("identities: nobody has a voice; connect an AnyTalker Voice to at least one Identity")
    if any(v.encoder is not voices[0].encoder for v in voices):
        raise ValueError("identities: every voice must use the same audio encoder (one AudioEncoderLoader)")
    layout = arrange_speakers(
        [p.voice.audio if p.voice is not None else None for p in identities], audio_encoder(voices[0].encoder),
        mode=mode, offsets=[p.offset for p in identities], num_frames=length or None,
    )  # fmt: skip
    routing = route_from_masks(
        picture, [p.face_mask for p in identities], layout.num_frames, size=size, keep_order=True
    )
    faces = torch.cat(
        [image_encoder(p.clip_vision)(crop.permute(2, 0, 1).mul(2).sub(1))
         for p, crop in zip(identities, routing.crops)]
    )
    return layout, routing, faces[None]


class AnyTalkerImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerImageToVideo",
            display_name="AnyTalker Image To Video",
            category="AnyTalker",
            description="Conditioning for AnyTalker: the start picture, everybody's voice and face, the clip length.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="The prompt (CLIPTextEncode with the umt5 'wan' CLIP)."),
                io.Conditioning.Input("negative", tooltip="The negative prompt."),
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE (wan_2.1_vae.safetensors)."),
                io.Image.Input("start_image", tooltip="The picture with everybody in it (the video's first frame)."),
                IDENTITIES.Input("identities", tooltip="The people, from a chain of AnyTalker Identity nodes."),
                io.Int.Input("width", default=0, min=0, max=4096, step=32,
                             tooltip="Video width, a multiple of 32; 0 with height 0 = the picture's aspect at "
                             "832x480 pixels."),
                io.Int.Input("height", default=0, min=0, max=4096, step=32, tooltip="Video height; see width."),
                io.Int.Input("length", default=0, min=0, max=1601, step=4,
                             tooltip="Frames (4n+1) at 24 fps; 0 = as long as the audio."),
                io.Combo.Input("mode", options=["pad", "concat"], default="pad",
                               tooltip="pad: everybody on one timeline from the start; concat: people take turns "
                               "in identity order."),
                io.ClipVisionOutput.Input(
                    "clip_vision_output", optional=True,
                    tooltip="Optional: CLIPVisionEncode of the start image (crop: none). When empty, the first "
                    "identity's clip_vision encodes it exactly as the reference does.",
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
    def execute(
        cls, positive, negative, vae, start_image, identities, clip_vision_output=None, width=0, height=0, length=0,
        mode="pad",
    ) -> io.NodeOutput:  # fmt: skip
        from ..anytalker_core.long import Window
        from ..anytalker_core.preview import preview
        from .long import mixed_audio, prepare_clip, window_conditioning

        clip = prepare_clip(start_image, identities, width, height, length, mode, clip_vision_output)
        whole = Window(0, 0, clip.frames, 1)  # one pass over the clip, as the reference
        positive, negative, latent = window_conditioning(clip, vae, positive, negative, whole)
        report = clip.layout.report() + "\n" + clip.routing.describe()
        return io.NodeOutput(
            positive, negative, latent, mixed_audio(clip), preview(clip.picture, clip.routing)[None],
            ui={"text": [report]},
        )  # fmt: skip

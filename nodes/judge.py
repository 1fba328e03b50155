"""Judging the finished video: which voice drives which face, and how alive the listeners are."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..anytalker_core.people.speakers import MODES
from .schema import EXPERT, IDENTITIES

AUDIO_INPUTS = 4  # audio_1 .. audio_4: voices without an Identity chain


def chain_voices(identities, mode: str, frames: int, fps: float) -> list:
    """The chain's voices in the order of their faces, left to right, each placed on the video's ``frames`` as the
    clip's node placed it (``mode``, offsets): ``(waveform [T], 16000)``, or None for a listener."""
    from ..anytalker_core.judge.sync import place_voices

    def centre_x(person) -> float:
        mask = person.face_mask if person.face_mask.dim() == 2 else person.face_mask[0]
        columns = mask.float().sum(0)
        return float((columns * torch.arange(columns.shape[0])).sum() / columns.sum().clamp(min=1e-6))

    people = sorted(identities, key=centre_x)
    tracks = [None if p.voice is None else p.voice.audio for p in people]
    return place_voices(tracks, [p.offset for p in people], mode, frames, fps)


class AnyTalkerEvaluate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerEvaluate",
            display_name="AnyTalker Evaluate",
            category="AnyTalker",
            description="Judge the finished video: which voice drives which face, and how alive the listeners are.",
            is_output_node=True,  # runs and shows its table even when the plot is not connected
            inputs=[
                io.Image.Input("images", tooltip="The finished video's frames (after VAE Decode or Long Video)."),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=1.0,
                               tooltip="Frames per second of the video (AnyTalker makes 24)."),
                io.Combo.Input("mode", options=list(MODES), default="pad",  # required first, as the host lists them
                               tooltip="How the identities' voices were timed, as on the clip's node: pad (all "
                               "from the start) or concat (taking turns)."),
                IDENTITIES.Input("identities", optional=True,
                                 tooltip="The people the video was made from: each voice should drive its own face. "
                                 "Or connect audio_1, audio_2, ... instead."),
                *[io.Audio.Input(f"audio_{k}", optional=True,
                                 tooltip=f"Instead of identities: the voice of face {k} from the left, covering the "
                                 "whole video.") for k in range(1, AUDIO_INPUTS + 1)],
                io.String.Input("speaking", default="", multiline=True, optional=True, **EXPERT,
                                tooltip="Speaking intervals in seconds, JSON: [[[0, 4.2]], [[4.2, 8.2]]] per person "
                                "or the reference's {\"left\": ..., \"right\": ...}; empty = from each voice's "
                                "loudness."),
            ],
            outputs=[
                io.Image.Output(display_name="plot",
                                tooltip="Per person: mouth opening against the voice's loudness over time, speaking "
                                "shaded, listener motion."),
                io.String.Output(display_name="report",
                                 tooltip="The table (who drives which face, sync, listener motion) and the JSON "
                                 "report."),
            ],
        )  # fmt: skip

    @classmethod
    def execute(cls, images: torch.Tensor, fps: float, mode: str = "pad", identities=None, audio_1=None, audio_2=None,
                audio_3=None, audio_4=None, speaking: str = "") -> io.NodeOutput:  # fmt: skip
        import comfy.model_management as mm
        import comfy.utils

        from ..anytalker_core.judge import JudgeError, evaluate
        from ..anytalker_core.judge.plot import message, plot
        from .people import insightface_root

        given = [audio_1, audio_2, audio_3, audio_4]  # AUDIO_INPUTS of them
        while given and given[-1] is None:
            given.pop()
        bar = comfy.utils.ProgressBar(images.shape[0])

        def progress(done: int, total: int) -> None:
            mm.throw_exception_if_processing_interrupted()  # Cancel stops a long video between frames
            bar.update_absolute(done, total)

        try:
            if (identities is None) == (not given):
                both = "both are connected" if given else "neither is connected"
                raise JudgeError(f"identities / audio_1...: connect the Identity chain or the audio inputs ({both})")
            voices = chain_voices(identities, mode, images.shape[0], fps) if identities is not None else given
            report = evaluate(images, voices, speaking.strip() or None, fps, face_root=insightface_root(),
                              progress=progress)  # fmt: skip
        except JudgeError as err:  # the judge sits after the render: say why on the node, never fail the video
            text = f"Cannot judge this video: {err}"
            picture = torch.from_numpy(message(str(err))).float().div(255)[None]
            return io.NodeOutput(picture, text, ui={"text": [text]})
        text = report.table()
        picture = torch.from_numpy(plot(report)).float().div(255)[None]
        return io.NodeOutput(picture, text + "\n\n" + report.to_json(), ui={"text": [text]})

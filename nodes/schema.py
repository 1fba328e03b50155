"""Inputs several nodes share, declared once, and the host's "advanced" flag for expert inputs.

Expert inputs (``**EXPERT``) sit behind the "show advanced inputs" toggle in hosts that have one (ComfyUI 0.33
and newer), as the host's own nodes do; older hosts (0.3.64) show them like any other input.
"""

from __future__ import annotations

import inspect

from comfy_api.latest import io

from ..anytalker_core.people.speakers import MODES
from ..anytalker_core.pipeline.windows import MOTION_FRAMES, WINDOW
from ..anytalker_core.sampling import SOLVER_NAMES
from ..anytalker_core.sampling.defaults import GUIDANCE, SHIFT_480P, SHIFT_OTHER, STEPS

VOICE = io.Custom("ANYTALKER_VOICE")
IDENTITIES = io.Custom("ANYTALKER_IDENTITIES")


def _takes_advanced() -> bool:
    params = inspect.signature(io.Int.Input.__init__).parameters.values()
    return any(p.name == "advanced" or p.kind is p.VAR_KEYWORD for p in params)


EXPERT = {"advanced": True} if _takes_advanced() else {}


def clip_inputs() -> list:
    """What makes one clip: prompts, encoders, the picture, the people, size, length and timing mode."""
    return [
    io.Conditioning.Input("positive", tooltip="The prompt (CLIPTextEncode with the umt5 'wan' CLIP)."),
    io.Conditioning.Input("negative", tooltip="The negative prompt."),
    io.Vae.Input("vae", tooltip="The Wan 2.1 VAE (wan_2.1_vae.safetensors)."),
    io.ClipVision.Input("clip_vision", tooltip="clip_vision_h: encodes the picture and every face crop."),
    io.AudioEncoder.Input("audio_encoder",
                          tooltip="wav2vec2-base-960h from AudioEncoderLoader (models/audio_encoders): encodes "
                          "every voice on the clip's timeline."),
    io.Image.Input("start_image", tooltip="The picture with everybody in it (the video's first frame)."),
    IDENTITIES.Input("identities", tooltip="The people, from a chain of AnyTalker Identity nodes."),
    io.Int.Input("width", default=0, min=0, max=4096, step=32,
                 tooltip="Video width, a multiple of 32; 0 with height 0 = the picture's aspect at 832x480 pixels."),
    io.Int.Input("height", default=0, min=0, max=4096, step=32, tooltip="Video height; see width."),
    io.Int.Input("length", default=0, min=0, max=100001, step=4,
                 tooltip="The clip in frames (4n+1: 1, 5, ..., 81, ...) at 24 fps; 0 = as long as the audio."),
    io.Combo.Input("mode", options=list(MODES), default="pad",
                   tooltip="pad: everybody on one timeline from the start; concat: people take turns in identity "
                   "order."),
    ]  # fmt: skip


def window_inputs() -> list:
    """How a long clip is cut into windows."""
    return [
    io.Int.Input("window", default=WINDOW, min=5, max=161, step=4, **EXPERT,
                 tooltip="Frames per window (4n+1); 81 is what the model was trained on."),
    io.Int.Input("motion_frames", default=MOTION_FRAMES, min=1, max=33, step=4, **EXPERT,
                 tooltip="Frames each window takes over from the one before (1+4k)."),
    ]  # fmt: skip


def sampling_inputs(steps_tooltip: str = "Sampling steps") -> list:
    """Seed, steps, guidance, schedule shift and solver; 0 steps / 0 shift: the reference's for this model / clip."""
    return [
    io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                 tooltip="The noise seed."),
    io.Int.Input("steps", default=0, min=0, max=200,
                 tooltip=f"{steps_tooltip}; 0 = the reference's for the loaded model: {STEPS['af']} (1.3B) or "
                 f"{STEPS['legacy']} (14B)."),
    io.Float.Input("cfg", default=GUIDANCE, min=0.0, max=30.0, step=0.1, round=0.01,
                   tooltip=f"Guidance for prompt and voices together (the reference: {GUIDANCE:g})."),
    io.Float.Input("shift", default=0.0, min=0.0, max=100.0, step=0.1, round=0.01, **EXPERT,
                   tooltip=f"Noise schedule shift; 0 = the reference's rule for this clip: {SHIFT_480P:g} at 480p "
                   f"(832x480 area), {SHIFT_OTHER:g} otherwise."),
    io.Combo.Input("solver", options=list(SOLVER_NAMES), default="unipc", **EXPERT,
                   tooltip="unipc: the reference's flow UniPC (bh2, order 2); euler and dpmpp_2m are lighter."),
    ]  # fmt: skip


def check_clip(width: int | None, height: int | None, length: int | None) -> bool | str:
    """``validate_inputs`` for the clip inputs (runs when the prompt is queued, before anything loads): True, or
    one line naming the input and the nearest valid values."""
    from ..anytalker_core import timeline

    if width is not None and height is not None:
        for name, value in (("width", width), ("height", height)):
            if not 0 <= value <= 4096 or value % 32:
                below = value // 32 * 32
                return f"{name} is {value}: use a multiple of 32 ({below} or {below + 32}), or 0 with the other 0"
        if (width == 0) != (height == 0):
            return f"width {width} and height {height}: give both (multiples of 32), or both 0 for the picture's aspect"
    if length:
        try:
            timeline.check_frames(length, "length (0 = as long as the audio)")
        except ValueError as err:
            return str(err)
    return True


def check_windows(window: int | None, motion_frames: int | None) -> bool | str:
    """``validate_inputs`` for window and motion_frames (4n+1 each, the motion shorter than the window)."""
    from ..anytalker_core import timeline

    try:
        if window is not None:
            timeline.check_frames(window, "window", minimum=5)
        if motion_frames is not None:
            timeline.check_frames(motion_frames, "motion_frames")
    except ValueError as err:
        return str(err)
    if window is not None and motion_frames is not None and motion_frames >= window:
        return f"motion_frames ({motion_frames}) must be shorter than the window ({window})"
    return True

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


# Each numeric widget below reaches exactly the values its node accepts: both frontends (1.27 and 1.49) round a
# typed value, and step with the arrows, to min + k * step (ints) within [min, max], and the checks further down
# hold the same settings. Rules that min and step cannot say (width and height both set or both 0, motion frames
# shorter than the window) are in the tooltips and in the errors, with the nearest valid values.
SIZE = {"min": 0, "max": 4096, "step": 32}  # multiples of 32; 0 (with the other 0) = the picture's aspect
FRAMES = {"min": 1, "max": 100001, "step": 4}  # 4n+1 video frames: 1, 5, 9, ..., 81, ...
WINDOW_FRAMES = {"min": 5, "max": 161, "step": 4}  # 4n+1, at least 5
MOTION = {"min": 1, "max": 33, "step": 4}  # 4n+1
DURATIONS = ("audio", "length")  # how long the clip is: as long as the voices, or `length` frames


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
    io.Int.Input("width", default=0, **SIZE,
                 tooltip="Video width, a multiple of 32 (e.g. 832); 0 with height 0 = the picture's aspect at "
                 "832x480 pixels. Give both or neither."),
    io.Int.Input("height", default=0, **SIZE,
                 tooltip="Video height, a multiple of 32 (e.g. 480); 0 with width 0 = the picture's aspect. Give "
                 "both or neither."),
    io.Int.Input("length", default=81, **FRAMES,
                 tooltip="The clip in frames at 24 fps, 4n+1 (1, 5, 9, ..., 81 = 3.4 s, ...), when duration is "
                 "'length'; with duration 'audio' the clip is as long as the voices."),
    io.Combo.Input("mode", options=list(MODES), default="pad",
                   tooltip="pad: everybody on one timeline from the start; concat: people take turns in identity "
                   "order."),
    # optional, so that the host lists it after every required input: a workflow saved before it existed (its
    # values are by position, length 0 then meaning "as long as the audio") loads with every value in place
    io.Combo.Input("duration", options=list(DURATIONS), default="audio", optional=True,
                   tooltip="audio: the clip is as long as the voices (with their offsets; one after another in "
                   "concat mode); length: exactly 'length' frames, cutting or padding the voices with silence."),
    ]  # fmt: skip


def window_inputs() -> list:
    """How a long clip is cut into windows."""
    return [
    io.Int.Input("window", default=WINDOW, **WINDOW_FRAMES, **EXPERT,
                 tooltip="Frames per window, 4n+1 (5, 9, ..., 161); 81 is what the model was trained on."),
    io.Int.Input("motion_frames", default=MOTION_FRAMES, **MOTION, **EXPERT,
                 tooltip="Frames each window takes over from the one before, 4n+1 (1, 5, ..., 33) and shorter than "
                 "the window (at most window - 4)."),
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


def check_int(value: int, name: str, spec: dict, rule: str) -> str | None:
    """None when ``value`` is one of ``spec``'s min + k * step in [min, max]; else one line naming ``name``, the
    ``rule`` and the nearest valid values."""
    low, step = spec["min"], spec["step"]
    top = spec["max"] - (spec["max"] - low) % step
    if low <= value <= top and (value - low) % step == 0:
        return None
    below = low + (value - low) // step * step
    nearest = [low] if value < low else [top] if value > top else [below, below + step]
    return f"{name} is {value}: use {' or '.join(map(str, nearest))} ({rule})"


def clip_frames(length: int, duration: str | None) -> int:
    """The clip's frame count for the core, 0 = as long as the audio. ``duration`` None (a prompt written before
    the input existed, over the API): ``length`` 0 meant the audio's length."""
    if duration is None:
        duration = "length" if length else "audio"
    return length if duration == "length" else 0


def check_clip(width: int | None, height: int | None, length: int | None, duration: str | None = None) -> bool | str:
    """``validate_inputs`` for the clip inputs (runs when the prompt is queued, before anything loads): True, or
    one line naming the input and the nearest valid values. None: fed by a link, checked when the node runs."""
    for name, value in (("width", width), ("height", height)):
        if value is not None and (error := check_int(value, name, SIZE, "a multiple of 32 up to 4096, or 0 with "
                                                     "the other 0 for the picture's aspect")):  # fmt: skip
            return error
    if width is not None and height is not None and (width == 0) != (height == 0):
        return (f"width {width} and height {height}: give both (multiples of 32, e.g. 832 and 480), or set both to 0 "
                "for the picture's aspect")  # fmt: skip
    if duration is not None and duration not in DURATIONS:
        return f"duration is {duration!r}: use one of {', '.join(DURATIONS)}"
    if length is not None and clip_frames(length, duration):
        error = check_int(length, "length", FRAMES, "4n+1 frames: 1, 5, 9, ..., 81, ...; or duration 'audio' for as "
                          "long as the audio")  # fmt: skip
        if error:
            return error
    elif length is not None and duration == "length":
        return "length is 0: use 1 or 5 (4n+1 frames), or duration 'audio' for as long as the audio"
    return True


def check_windows(window: int | None, motion_frames: int | None) -> bool | str:
    """``validate_inputs`` for window and motion_frames (4n+1 each, the motion shorter than the window)."""
    error = None
    if window is not None:
        error = check_int(window, "window", WINDOW_FRAMES, "4n+1 frames, 5 to 161")
    if error is None and motion_frames is not None:
        error = check_int(motion_frames, "motion_frames", MOTION, "4n+1 frames, 1 to 33")
    if error is None and window is not None and motion_frames is not None and motion_frames >= window:
        error = (f"motion_frames ({motion_frames}) must be shorter than the window ({window}): use motion_frames "
                 f"{window - 4} or less, or a window of {motion_frames + 4} or more")  # fmt: skip
    return True if error is None else error

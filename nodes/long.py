"""Long videos in ComfyUI: a whole clip window by window, the next window of a clip, and colour matching.

The windows are the core's (:mod:`anytalker_core.pipeline.windows`: the plan, motion frames as known ``y``
frames, one audio timeline, face following, colours anchored to the picture); here the host's VAE, CLIP vision
and sampling do the work of each window.
"""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io

from ..anytalker_core.people.audio_features import CHUNK_FRAMES
from ..anytalker_core.pipeline.colors import anchor_colors, color_stats
from ..anytalker_core.pipeline.windows import Window, WindowInputs, WindowRun, plan_windows, window_inputs
from ..anytalker_core.sizes import PIXELS_PER_LATENT
from .conditioning import clip_scene, mixed_audio, window_conditioning
from .schema import EXPERT, check_clip, check_windows, clip_frames, clip_inputs, sampling_inputs
from .schema import window_inputs as window_schema


def _uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE ``[n, H, W, C]`` in 0..1 -> uint8 RGB ``[n, H, W, 3]``."""
    return images[..., :3].float().mul(255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def _image(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``[n, H, W, 3]`` -> IMAGE in 0..1."""
    return torch.from_numpy(frames).float().div(255)


class AnyTalkerExtend(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerExtend",
            display_name="AnyTalker Extend",
            category="AnyTalker/long",
            description="The next window of a long clip, continuing from the frames made so far.",
            inputs=[
                *clip_inputs(),
                *window_schema(),
                io.Image.Input("previous_frames", tooltip="Every frame made so far (the clip from its start)."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="For the sampler."),
                io.Conditioning.Output(display_name="negative", tooltip="For the sampler."),
                io.Latent.Output(display_name="latent", tooltip="The next window's empty latent."),
                io.Int.Output(display_name="trim",
                              tooltip="Drop this many frames from the start of the decoded window (they repeat the "
                              "end of previous_frames), then append the rest."),
                io.Int.Output(display_name="frames_left",
                              tooltip="Frames of the clip still to make after this window (0: this is the last)."),
            ],
        )  # fmt: skip

    @classmethod
    def validate_inputs(cls, width=None, height=None, length=None, window=None, motion_frames=None,
                        duration=None) -> bool | str:  # fmt: skip
        clip = check_clip(width, height, length, duration)
        return check_windows(window, motion_frames) if clip is True else clip

    @classmethod
    def execute(cls, positive, negative, vae, clip_vision, audio_encoder, start_image, identities, width, height,
                length, mode, window, motion_frames, previous_frames, duration=None) -> io.NodeOutput:  # fmt: skip
        scene = clip_scene(start_image, identities, clip_vision, audio_encoder, width, height,
                           clip_frames(length, duration), mode, chunk_frames=CHUNK_FRAMES)  # fmt: skip
        plan_windows(scene.frames, window, motion_frames)  # checks window and motion_frames
        made = int(previous_frames.shape[0])
        if made < motion_frames:
            raise ValueError(f"previous_frames holds {made} frames; at least motion_frames ({motion_frames}) needed")
        if made >= scene.frames:
            raise ValueError(f"the clip is complete: previous_frames already holds {made} of {scene.frames} frames")
        known = previous_frames[-motion_frames:, :, :, :3].float().cpu()
        if tuple(known.shape[1:3]) != scene.size:
            raise ValueError(
                f"previous_frames are {known.shape[2]}x{known.shape[1]} but the video is {scene.size[1]}x"
                f"{scene.size[0]}: use the frames decoded from the previous AnyTalker window (same width and height)"
            )
        start = made - motion_frames
        step = Window(1, start, min(window, scene.frames - start), motion_frames)
        inputs = window_inputs(scene, step, known.permute(3, 0, 1, 2).mul(2).sub(1))
        pos, neg, latent = window_conditioning(scene, inputs, vae, positive, negative)
        return io.NodeOutput(pos, neg, latent, motion_frames, scene.frames - (start + step.length))


class AnyTalkerColorMatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerColorMatch",
            display_name="AnyTalker Color Match",
            category="AnyTalker/long",
            description="Match a window's colours (Lab mean and spread) to the start picture's, against drift.",
            inputs=[
                io.Image.Input("images", tooltip="The decoded frames of one window."),
                io.Image.Input("reference", tooltip="The start picture."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="1 = full match, 0 = unchanged."),
            ],
            outputs=[io.Image.Output(tooltip="The frames with the picture's colour statistics.")],
        )  # fmt: skip

    @classmethod
    def execute(cls, images, reference, strength) -> io.NodeOutput:
        target = color_stats(_uint8(reference[:1])[0])
        return io.NodeOutput(_image(anchor_colors(_uint8(images), target, strength)))


class AnyTalkerLongVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerLongVideo",
            display_name="AnyTalker Long Video",
            category="AnyTalker/long",
            description="A whole clip of any length, window by window, with continuous motion and steady colours.",
            inputs=[
                io.Model.Input("model", tooltip="From AnyTalker Model Loader."),
                *clip_inputs(),
                *window_schema(),
                *sampling_inputs("Sampling steps per window"),
                io.Boolean.Input("color_anchor", default=True, **EXPERT,
                                 tooltip="Match each later window's colours to the start picture's."),
                io.Boolean.Input("follow_faces", default=False,
                                 tooltip="Find the faces again at the start of every window (for people who move); "
                                 "each keeps their voice. Off: the masks stay where they are in the picture."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Every frame of the clip."),
                io.Audio.Output(display_name="audio", tooltip="Everybody's voice on the clip's timeline."),
            ],
        )  # fmt: skip

    @classmethod
    def validate_inputs(cls, width=None, height=None, length=None, window=None, motion_frames=None,
                        duration=None) -> bool | str:  # fmt: skip
        clip = check_clip(width, height, length, duration)
        return check_windows(window, motion_frames) if clip is True else clip

    @classmethod
    def execute(cls, model, positive, negative, vae, clip_vision, audio_encoder, start_image, identities, width,
                height, length, mode, window, motion_frames, seed, steps, cfg, shift, solver, color_anchor,
                follow_faces=False, duration=None) -> io.NodeOutput:  # fmt: skip
        import comfy.model_management as mm
        import comfy.sample
        import comfy.utils

        from .people import insightface_root
        from .sampling import host_sampler, reference_schedule

        scene = clip_scene(start_image, identities, clip_vision, audio_encoder, width, height,
                           clip_frames(length, duration), mode, chunk_frames=CHUNK_FRAMES)  # fmt: skip
        latent_hw = (scene.size[0] // PIXELS_PER_LATENT, scene.size[1] // PIXELS_PER_LATENT)
        steps, shift, sigmas, timesteps = reference_schedule(model, steps, shift, latent_hw)
        windows = len(plan_windows(scene.frames, window, motion_frames))
        bar = comfy.utils.ProgressBar(steps * windows)

        def sample_window(inputs: WindowInputs) -> np.ndarray:
            w = inputs.window
            mm.throw_exception_if_processing_interrupted()
            pos, neg, latent = window_conditioning(scene, inputs, vae, positive, negative)
            noise = comfy.sample.prepare_noise(latent["samples"], seed + w.index)

            def progress(step, x0, x, total, base=w.index * steps):
                bar.update_absolute(base + step + 1)

            samples = comfy.sample.sample_custom(
                model, noise, cfg, host_sampler(solver, timesteps), sigmas, pos, neg, latent["samples"],
                callback=progress, disable_pbar=True, seed=seed + w.index,
            )  # fmt: skip
            frames = vae.decode(samples)
            return _uint8(frames.reshape(-1, *frames.shape[-3:])[: w.length])

        run = WindowRun(
            scene, sample_window, window=window, motion_frames=motion_frames, color_anchor=color_anchor,
            follow_faces=follow_faces, face_root=insightface_root() if follow_faces else None,
        )  # fmt: skip
        return io.NodeOutput(_image(np.concatenate(list(run))), mixed_audio(scene))

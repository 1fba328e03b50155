"""Long videos in ComfyUI: the clip's conditioning per window, an extend node, a whole-clip node, colour match.

The window logic is ``anytalker_core.long``'s (plan, motion frames as known ``y`` frames, one audio timeline,
colours anchored to the picture); here the host's VAE, CLIP vision and sampling do the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from comfy_api.latest import io

from ..anytalker_core.long import (
    MOTION_FRAMES,
    WINDOW,
    Window,
    anchor_colors,
    bound_order,
    color_stats,
    plan_windows,
    track_boxes,
)
from .people import IDENTITIES
from .sampling import SOLVER_NAMES


@dataclass
class Clip:
    """What every window of one clip shares: the timeline, the routing, the face and picture features."""

    picture: torch.Tensor  # float32 [H, W, 3] 0..1, the start image at its own size
    size: tuple[int, int]
    layout: Any
    routing: Any
    faces: torch.Tensor  # [1, N, 257, 1280]
    clip_vision_output: Any

    @property
    def frames(self) -> int:
        return self.layout.num_frames


def prepare_clip(start_image, identities, width, height, length, mode, clip_vision_output=None) -> Clip:
    from ..anytalker_core.condition import to_m11
    from .host import clip_vision_output as as_output
    from .host import image_encoder
    from .video import encode_identities, video_size

    picture = start_image[0, :, :, :3].float().cpu()
    size = video_size(height, width, tuple(picture.shape[:2]))
    if length and (length - 1) % 4:
        raise ValueError(f"length must be 4n+1 frames (1, 5, ..., 81) or 0 for the audio's length, got {length}")
    layout, routing, faces = encode_identities(tuple(identities), picture, size, length, mode)
    if clip_vision_output is None:
        clip_vision_output = as_output(image_encoder(identities[0].clip_vision)(to_m11(picture)))
    return Clip(picture, size, layout, routing, faces, clip_vision_output)


def window_conditioning(
    clip: Clip, vae, positive, negative, window: Window, known: torch.Tensor | None = None, routing: Any = None
):
    """(positive, negative, empty latent) for one window. ``known``: IMAGE ``[M, H, W, 3]`` (0..1) of the frames
    the window starts from (None: the start picture, as window 0). ``routing``: the faces re-detected for this
    window (made for its length); None: the clip's routing, sliced."""
    import comfy.model_management as mm
    import node_helpers

    from ..anytalker_core.condition import first_frame_video, prepare_image

    height, width = clip.size
    if known is None:
        known_m11 = prepare_image(clip.picture, clip.size)[:, None]
    else:
        known = known[..., :3].float().cpu()
        if tuple(known.shape[1:3]) != (height, width):
            raise ValueError(
                f"previous_frames are {known.shape[2]}x{known.shape[1]} but the video is {width}x{height}: use the "
                "frames decoded from the previous AnyTalker window (same width and height)"
            )
        known_m11 = known.permute(3, 0, 1, 2).mul(2).sub(1)
    video = first_frame_video(known_m11, window.length)  # the known frames, then grey
    latent = vae.encode(video.permute(1, 2, 3, 0).add(1).mul(0.5)).float()
    latent_frames = (window.length - 1) // 4 + 1
    routing, offset = (clip.routing, window.start // 4) if routing is None else (routing, 0)
    y_mask = routing.y_mask[:, offset : offset + latent_frames].clone()
    y_mask[:, : (window.known - 1) // 4 + 1] = 1.0
    audio = torch.stack([f[window.start : window.start + window.length] for f in clip.layout.features])[None]
    common = {
        "concat_latent_image": latent,
        "anytalker_y_mask": y_mask[None],
        "clip_vision_output": clip.clip_vision_output,
        "anytalker_faces": clip.faces,
        "anytalker_masks": routing.token_mask_batch[:, offset : offset + latent_frames][None],
    }
    positive = node_helpers.conditioning_set_values(positive, {**common, "anytalker_audio": audio})
    silent = {**common, "anytalker_audio": torch.zeros_like(audio)}  # the reference's null audio
    negative = node_helpers.conditioning_set_values(negative, silent)
    empty = torch.zeros(latent.shape, device=mm.intermediate_device())
    return positive, negative, {"samples": empty}


def mixed_audio(clip: Clip) -> dict:
    return {"waveform": clip.layout.mix[None, None].clone(), "sample_rate": clip.layout.mix_rate}


# ----------------------------------------------------------------------------------------------------------- nodes

def _clip_inputs() -> list:
    """The inputs the extend and whole-clip nodes share (fresh objects for each schema)."""
    return [
    io.Conditioning.Input("positive", tooltip="The prompt (CLIPTextEncode with the umt5 'wan' CLIP)."),
    io.Conditioning.Input("negative", tooltip="The negative prompt."),
    io.Vae.Input("vae", tooltip="The Wan 2.1 VAE."),
    io.Image.Input("start_image", tooltip="The picture with everybody in it."),
    IDENTITIES.Input("identities", tooltip="The people, from a chain of AnyTalker Identity nodes."),
    io.Int.Input("width", default=0, min=0, max=4096, step=32,
                 tooltip="Video width, a multiple of 32; 0 with height 0 = the picture's aspect at 832x480."),
    io.Int.Input("height", default=0, min=0, max=4096, step=32, tooltip="Video height; see width."),
    io.Int.Input("length", default=0, min=0, max=100001, step=4,
                 tooltip="The whole clip in frames (4n+1) at 24 fps; 0 = as long as the audio."),
    io.Combo.Input("mode", options=["pad", "concat"], default="pad",
                   tooltip="pad: everybody on one timeline; concat: people take turns in identity order."),
    io.Int.Input("window", default=WINDOW, min=5, max=161, step=4,
                 tooltip="Frames per window (4n+1); 81 is what the model was trained on."),
    io.Int.Input("motion_frames", default=MOTION_FRAMES, min=1, max=33, step=4,
                 tooltip="Frames each window takes over from the one before (1+4k)."),
]  # fmt: skip


class AnyTalkerExtend(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerExtend",
            display_name="AnyTalker Extend",
            category="AnyTalker/long",
            description="The next window of a long clip, continuing from the frames made so far.",
            inputs=[
                *_clip_inputs(),
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
    def execute(cls, positive, negative, vae, start_image, identities, width, height, length, mode, window,
                motion_frames, previous_frames) -> io.NodeOutput:  # fmt: skip
        clip = prepare_clip(start_image, identities, width, height, length, mode)
        plan_windows(clip.frames, window, motion_frames)  # checks window and motion_frames
        made = int(previous_frames.shape[0])
        if made < motion_frames:
            raise ValueError(f"previous_frames holds {made} frames; at least motion_frames ({motion_frames}) needed")
        if made >= clip.frames:
            raise ValueError(f"the clip is complete: previous_frames already holds {made} of {clip.frames} frames")
        start = made - motion_frames
        step = Window(1, start, min(window, clip.frames - start), motion_frames)
        pos, neg, latent = window_conditioning(clip, vae, positive, negative, step, previous_frames[-motion_frames:])
        return io.NodeOutput(pos, neg, latent, motion_frames, clip.frames - (start + step.length))


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
        return io.NodeOutput(_float(anchor_colors(_uint8(images), target, strength)))


def _uint8(images: torch.Tensor):
    return images[..., :3].float().mul(255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def _float(frames) -> torch.Tensor:
    return torch.from_numpy(frames).float().div(255)


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
                *_clip_inputs(),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="The noise seed (each window draws from it in turn)."),
                io.Int.Input("steps", default=40, min=1, max=200, tooltip="Sampling steps per window."),
                io.Float.Input("cfg", default=4.5, min=0.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Guidance for prompt and voices together."),
                io.Float.Input("shift", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Noise schedule shift."),
                io.Combo.Input("solver", options=SOLVER_NAMES, default="unipc", tooltip="The solver."),
                io.Boolean.Input("color_anchor", default=True,
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
    def execute(cls, model, positive, negative, vae, start_image, identities, width, height, length, mode, window,
                motion_frames, seed, steps, cfg, shift, solver, color_anchor, follow_faces=False,
                ) -> io.NodeOutput:  # fmt: skip
        import comfy.model_management as mm
        import comfy.sample
        import comfy.utils

        from ..anytalker_core.solvers import flow_sigmas
        from .sampling import host_sampler

        clip = prepare_clip(start_image, identities, width, height, length, mode)
        plan = plan_windows(clip.frames, window, motion_frames)
        sigmas, _ = flow_sigmas(steps, shift)
        target = color_stats(_uint8(start_image[:1])[0])
        bar = comfy.utils.ProgressBar(steps * len(plan))
        parts, known = [], None
        sx, sy = clip.size[1] / clip.picture.shape[1], clip.size[0] / clip.picture.shape[0]
        boxes = [(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in clip.routing.boxes]  # in video pixels
        for w in plan:
            mm.throw_exception_if_processing_interrupted()
            routing = None
            if follow_faces and known is not None:
                from ..anytalker_core.identities import route_from_boxes

                frame = _uint8(known[:1])[0]
                boxes = track_boxes(frame, boxes)
                routing = route_from_boxes(frame, boxes, w.length, order=bound_order(boxes), size=clip.size)
            pos, neg, latent = window_conditioning(clip, vae, positive, negative, w, known, routing)
            noise = comfy.sample.prepare_noise(latent["samples"], seed + w.index)

            def progress(step, x0, x, total, base=w.index * steps):
                bar.update_absolute(base + step + 1)

            samples = comfy.sample.sample_custom(
                model, noise, cfg, host_sampler(solver), sigmas, pos, neg, latent["samples"], callback=progress,
                disable_pbar=True, seed=seed + w.index,
            )  # fmt: skip
            frames = vae.decode(samples)
            frames = frames.reshape(-1, *frames.shape[-3:])[: w.length].float().cpu()
            if color_anchor and w.index > 0:
                frames = _float(anchor_colors(_uint8(frames), target))
            known = frames[-motion_frames:]
            first, _ = w.written
            parts.append(frames[first - w.start :])
        return io.NodeOutput(torch.cat(parts), mixed_audio(clip))

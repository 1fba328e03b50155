"""From one picture, one audio track per person and a prompt to a talking video: the reference's ``generate``.

Steps, in the reference's order (``wan/audio2video_multiID.py``; each is a function of its own module):

1. size: :func:`~anytalker_core.pipeline.condition.target_size` of the picture for ``max_area``;
2. audio: every person's features on the video timeline and the clip length
   (:func:`~anytalker_core.people.speakers.arrange_speakers`, ``pad`` or ``concat``);
3. noise ``[1, 16, T, H/8, W/8]`` from ``seed`` (drawn first, on the model's device, as the reference does);
4. text: the prompt and the negative prompt through the text encoder;
5. who is who and the image features: faces found (or boxes / masks given) -> routing; the image encoder on the
   picture at its original size and on each face crop (:class:`~anytalker_core.pipeline.scene.Scene`);
6. ``y``: mask channels + the VAE latent of [first frame, zeros];
7. sampling with guidance (:func:`~anytalker_core.sampling.sample`), then the VAE decode;
8. the video: uint8 frames at 24 fps and the speakers' audio mixed on the same timeline.

:func:`generate` makes a clip in one pass and keeps it in memory; :func:`render` makes a clip of any length
window by window (:mod:`.windows`) and streams it to an mp4. Both share :func:`prepare` (steps 1-5, once per
clip) and :func:`sample_window` (steps 6-7, once per window).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..images import as_rgb, read_image
from ..people.audio_features import CHUNK_FRAMES
from ..people.routing import Routing, route_faces, route_from_boxes, route_from_masks
from ..people.speakers import SpeakerLayout, arrange_speakers
from ..sampling import GUIDANCE, SamplingCancelled, default_shift, default_steps, get_solver, negative_cond, sample
from ..timeline import FPS, latent_frames
from .condition import MAX_AREA, build_y, target_size
from .memory import context_cache_budget, free_memory, on_device
from .models import Models
from .scene import Scene, build_scene
from .windows import MOTION_FRAMES, WINDOW, Window, WindowInputs, WindowRun, plan_windows, to_uint8, window_inputs
from .writer import write_video

log = logging.getLogger(__name__)

# The reference's default negative prompt (wan/configs/shared_config.py ``sample_neg_prompt``).
NEGATIVE_PROMPT = (
    "This shot begins with a scene, then becomes a distorted scene with subtitles, captions, and words on the "
    "bottom, featuring an ugly, incomplete or unnatural-looking character or object with extra fingers, poorly "
    "drawn hands and face, deformed and disfigured limbs, fused fingers, three legs, deformed arms or legs, "
    "distorted body passing through objects, swapped left and right arms, swapped left and right legs, or a "
    "deformed face on the back. The mouth movements are unnatural and not synchronized with the speech; lip motion "
    "is delayed or mismatched with the voice, showing poor lip-sync accuracy, with visible imperfections or "
    "distortions in the teeth. The facial expressions are stiff, frozen, or flickering, with jittering eyes and "
    "inconsistent gaze direction. The characters' necks or heads appear twisted. The objects and background in the "
    "scene are crashed, broken, or deformed, unnaturally distorted, and changing their front and back orientation."
)


@dataclass
class Video:
    """A clip made in one pass. ``frames``: uint8 ``[F, H, W, 3]``; ``audio``: the mixed speakers, mono float32 at
    ``audio_rate``; ``latent``: the sampled latent ``[1, 16, T, H/8, W/8]`` (normalised, as the DiT sees it)."""

    frames: torch.Tensor
    audio: torch.Tensor
    audio_rate: int
    fps: int
    layout: SpeakerLayout
    routing: Routing
    latent: torch.Tensor
    seed: int
    size: tuple[int, int]

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the mp4 (H.264 + AAC), atomically; an existing file is kept unless ``overwrite``."""
        return write_video(path, self.frames, self.fps, self.audio, self.audio_rate, overwrite=overwrite)


@dataclass
class LongVideo:
    """What :func:`render` made. ``frames``: how many are in the file; ``cancelled``: stopped early (the file
    then holds the finished windows, with the audio cut to match)."""

    path: Path | None
    frames: int
    windows: list[Window]
    windows_done: int
    layout: SpeakerLayout
    routing: Routing
    seed: int
    size: tuple[int, int]
    cancelled: bool = False


@dataclass
class Job:
    """One clip with the standalone models: its :class:`Scene`, the encoded prompts and the sampling settings."""

    models: Models
    scene: Scene
    text: torch.Tensor
    negative: torch.Tensor
    seed: int
    generator: torch.Generator
    device: torch.device
    offload: bool
    steps: int
    guidance: float
    audio_guidance: float | None
    shift: float
    solver: str


def _picture(image: Any) -> torch.Tensor:
    if isinstance(image, (str, Path)):
        image = read_image(image)
    return as_rgb(image).clamp(0, 1)


def _route(picture, faces, frames, speakers, order, size, face_backend, face_root) -> Routing:
    if faces is None:
        return route_faces(
            picture, frames, speakers=speakers, order=order, size=size, backend=face_backend, root=face_root
        )
    is_boxes = isinstance(faces, (list, tuple)) and all(
        isinstance(b, (list, tuple)) or (hasattr(b, "shape") and tuple(b.shape) == (4,)) for b in faces
    )
    if is_boxes:
        return route_from_boxes(picture, faces, frames, speakers=speakers, order=order, size=size)
    return route_from_masks(picture, faces, frames, speakers=speakers, order=order, size=size)


def prepare(
    models: Models,
    image: Any,
    audio: Sequence[Any],
    prompt: str = "",
    *,
    negative_prompt: str | None = None,
    faces: Any = None,
    order: str | Sequence[int] | None = None,
    mode: str = "pad",
    offsets: Sequence[float | None] | None = None,
    num_frames: int | None = None,
    max_frames: int | None = None,
    max_area: int = MAX_AREA,
    size: tuple[int, int] | None = None,
    steps: int | None = None,
    guidance: float = GUIDANCE,
    audio_guidance: float | None = None,
    shift: float | None = None,
    solver: str = "unipc",
    seed: int | None = None,
    device: torch.device | str | None = None,
    offload: bool = True,
    face_backend: str = "auto",
    face_root: str | None = None,
    status: Callable[[str], None] | None = None,
    audio_chunk_frames: int | None = None,
) -> Job:
    """Steps 1-5 of the module docstring, once per clip (see :func:`generate` for the arguments)."""
    say = status or (lambda message: log.info(message))
    dev = torch.device(device) if device is not None else next(models.dit.parameters()).device
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if isinstance(audio, (str, Path)) or not isinstance(audio, Sequence) or not audio:
        raise ValueError("audio: give a list with one track (or None for a listener) per person, left to right")
    get_solver(solver)  # an unknown name fails here, before any model runs

    picture = _picture(image)
    height, width = picture.shape[:2]
    if size is None:
        size = target_size(height, width, max_area)
    else:
        size = tuple(int(v) for v in size)
        if len(size) != 2 or any(v <= 0 or v % 32 for v in size):
            raise ValueError(f"size must be (height, width), both positive multiples of 32, got {size}")
    say(f"picture {width}x{height} -> video {size[1]}x{size[0]}")
    variant = getattr(getattr(models.dit, "config", None), "variant", None)
    steps = default_steps(variant) if steps is None else steps
    shift = default_shift(*size) if shift is None else shift

    with on_device(models.audio_encoder, dev, offload):
        layout = arrange_speakers(
            audio, models.audio_encoder, mode=mode, offsets=offsets, num_frames=num_frames, fps=FPS,
            max_frames=max_frames, chunk_frames=audio_chunk_frames,
        )  # fmt: skip
    say(layout.report())
    seed = random.randint(0, 2**31 - 1) if seed is None else int(seed)

    with on_device(models.text_encoder, dev, offload):
        text = models.text_encoder(prompt)
        negative = models.text_encoder(NEGATIVE_PROMPT if negative_prompt is None else negative_prompt)

    routing = _route(picture, faces, layout.num_frames, len(audio), order, size, face_backend, face_root)
    say(routing.describe())
    with on_device(models.image_encoder, dev, offload):
        scene = build_scene(picture, size, layout, routing, models.image_encoder)
    return Job(
        models=models, scene=scene, text=text, negative=negative, seed=seed,
        generator=torch.Generator(device=dev).manual_seed(seed), device=dev, offload=offload, steps=steps,
        guidance=guidance, audio_guidance=audio_guidance, shift=shift, solver=solver,
    )  # fmt: skip


@torch.no_grad()
def sample_window(
    job: Job,
    inputs: WindowInputs,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 6-7 for one window: (latent ``[1, 16, T, h, w]``, decoded video ``[1, 3, F, H, W]`` in [-1, 1]).

    The VAE encodes the window's known frames followed by zero frames for ``y``. Noise comes from the job's
    generator, so windows draw one after another from one seeded stream.
    """
    models, dev, offload, scene = job.models, job.device, job.offload, job.scene
    frames = inputs.window.length
    latent_shape = (1, 16, latent_frames(frames), scene.size[0] // 8, scene.size[1] // 8)
    noise = torch.randn(latent_shape, generator=job.generator, device=dev, dtype=torch.float32)
    with on_device(models.vae, dev, offload):
        y = build_y(models.vae, inputs.known, frames, inputs.y_mask)
    cond = {
        "text": job.text.to(dev),
        "clip": scene.picture_features.to(dev),
        "y": y.to(dev)[None],
        "audio": [f.to(dev)[None] for f in inputs.audio],
        "faces": [f.to(dev) for f in scene.face_features],
        "masks": [m.to(dev)[None] for m in inputs.token_masks],
    }
    uncond = negative_cond(cond, job.negative.to(dev))  # the negative prompt and the reference's null audio
    try:
        with on_device(models.dit, dev, offload), models.dit.context_cache(context_cache_budget(dev)):
            latent = sample(
                models.dit, noise, steps=job.steps, shift=job.shift, guidance=job.guidance, cond=cond,
                uncond=uncond, solver=job.solver, callback=callback, audio_guidance=job.audio_guidance,
                should_stop=should_stop,
            )  # fmt: skip
    except SamplingCancelled:
        del cond, uncond, noise, y
        free_memory()
        raise
    del cond, uncond, noise, y
    with on_device(models.vae, dev, offload):
        decoded = models.vae.decode(latent)
    return latent, decoded


def _announce(job: Job, say: Callable[[str], None]) -> None:
    audio = f", audio guidance {job.audio_guidance}" if job.audio_guidance is not None else ""
    settings = f"{job.steps} {job.solver} steps, shift {job.shift:g}, guidance {job.guidance}{audio}"
    say(f"sampling: {settings}, seed {job.seed}")


@torch.no_grad()
def generate(
    models: Models,
    image: Any,
    audio: Sequence[Any],
    prompt: str = "",
    *,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    status: Callable[[str], None] | None = None,
    **options: Any,
) -> Video:
    """Make the talking video in one pass (see the module docstring for the steps); the frames stay in memory.

    ``image``: a file path or a picture ``[H, W, 3]`` (uint8 or float 0..1). ``audio``: one entry per person, left
    to right (a path, ``(waveform, rate)``, a ComfyUI ``AUDIO`` or ``None`` for a listener). Options (keywords):
    ``negative_prompt``; ``faces``: ``None`` to detect them, a list of boxes (x0, y0, x1, y1; pixels or fractions)
    or masks (see ``route_from_masks``); ``order``: voice i drives face ``order[i]`` (``"2,1"``); ``mode`` /
    ``offsets`` / ``num_frames`` / ``max_frames``: the timeline (``arrange_speakers``); ``size``: (H, W) multiples
    of 32 instead of the ``max_area`` rule; ``steps``, ``guidance``, ``audio_guidance``, ``shift``, ``solver``;
    ``seed``: None draws one (reported in the result); ``device``: where to run (default: where the DiT is); with
    ``offload`` (default) each model goes back to the CPU after its step; ``face_backend``, ``face_root``.
    ``callback(step, total, x0)`` after each sampling step; ``should_stop()`` before each, cancelling with
    :class:`~anytalker_core.sampling.SamplingCancelled` (memory is freed first). ``status(message)`` receives one
    line per stage.

    Defaults are the reference's documented settings (:mod:`anytalker_core.sampling.defaults`): UniPC, 40 steps
    for the 1.3B model and 20 for the 14B, guidance 4.5, shift 3 for a 480p clip (5 otherwise), the 832x480 area,
    its negative prompt.
    Long clips: :func:`render` makes them window by window and streams them to a file.
    """
    say = status or (lambda message: log.info(message))
    job = prepare(models, image, audio, prompt, status=say, **options)
    _announce(job, say)
    scene = job.scene
    whole = Window(0, 0, scene.frames, 1)  # one pass over the clip, as the reference
    latent, video = sample_window(job, window_inputs(scene, whole), callback, should_stop)
    return Video(
        frames=to_uint8(video), audio=scene.layout.mix, audio_rate=scene.layout.mix_rate, fps=FPS,
        layout=scene.layout, routing=scene.routing, latent=latent.cpu(), seed=job.seed, size=scene.size,
    )  # fmt: skip


@torch.no_grad()
def render(
    models: Models,
    image: Any,
    audio: Sequence[Any],
    prompt: str,
    out: str | Path,
    *,
    window: int = WINDOW,
    motion_frames: int = MOTION_FRAMES,
    color_anchor: bool = True,
    track_faces: bool | None = None,
    overwrite: bool = False,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    on_window: Callable[[Window, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    status: Callable[[str], None] | None = None,
    **options: Any,
) -> LongVideo:
    """Make the video window by window (:class:`~.windows.WindowRun`) and stream it to ``out`` (mp4, H.264 + AAC,
    written atomically). A clip of at most one window gives exactly :func:`generate`'s frames.

    ``window`` / ``motion_frames``: see :mod:`.windows`. ``color_anchor``: match each later window's colours to the
    picture's. ``track_faces``: re-detect the faces on each window's first frame (default: when the faces were
    detected, not given). ``on_window(window, total)`` before each window; ``callback(step, total, x0)`` after
    each sampling step; ``should_stop()`` between steps and windows: the finished windows stay in the file
    (``LongVideo.cancelled``); when nothing was finished, ``SamplingCancelled`` is raised and nothing is
    written. Tracks longer than 2 minutes are encoded in chunks. Other keywords as :func:`generate`.
    """
    say = status or (lambda message: log.info(message))
    options.setdefault("audio_chunk_frames", CHUNK_FRAMES)
    plan_windows(5, window, motion_frames)  # check the arguments before any work
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"{str(out)!r} already exists; pass overwrite=True to replace it, or choose another name")
    job = prepare(models, image, audio, prompt, status=say, **options)
    if track_faces is None:
        track_faces = options.get("faces") is None and not job.scene.routing.moving

    def sample_frames(inputs: WindowInputs) -> np.ndarray:
        _, video = sample_window(job, inputs, callback, should_stop)
        frames = to_uint8(video).numpy()
        del video
        free_memory()  # each window starts from the same memory, however many came before
        return frames

    run = WindowRun(
        job.scene, sample_frames, window=window, motion_frames=motion_frames, color_anchor=color_anchor,
        follow_faces=track_faces, face_backend=options.get("face_backend", "auto"),
        face_root=options.get("face_root"), should_stop=should_stop, on_window=on_window,
    )  # fmt: skip
    _announce(job, say)
    say(f"{len(run.plan)} window(s) of up to {window} frames, {motion_frames} motion frames")
    layout, path = job.scene.layout, Path(out)
    try:
        write_video(path, iter(run), FPS, layout.mix, layout.mix_rate, overwrite=overwrite)
    except ValueError as err:
        if run.cancelled and run.frames == 0:
            raise SamplingCancelled(0, job.steps * len(run.plan)) from err  # nothing finished, nothing written
        raise
    if run.cancelled:
        say(f"cancelled: kept {run.done} of {len(run.plan)} window(s), {run.frames} frames")
    return LongVideo(
        path=path, frames=run.frames, windows=run.plan, windows_done=run.done, layout=layout,
        routing=job.scene.routing, seed=job.seed, size=job.scene.size, cancelled=run.cancelled,
    )  # fmt: skip

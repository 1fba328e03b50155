"""From one picture, one audio track per person and a prompt to a talking video: the reference's ``generate``.

Steps, in the reference's order (``wan/audio2video_multiID.py``; each is a function of its own module):

1. size: :func:`~anytalker_core.condition.target_size` of the picture for ``max_area``;
2. audio: every person's features on the video timeline and the clip length
   (:func:`~anytalker_core.speakers.arrange_speakers`, ``pad`` or ``concat``);
3. noise ``[1, 16, T, H/8, W/8]`` from ``seed`` (drawn first, on the model's device, as the reference does);
4. text: the prompt and the negative prompt through the text encoder;
5. picture: the image encoder on the picture at its original size (``clip``);
6. who is who: faces found (or boxes / masks given) -> routing masks, face crops, ``y`` mask channels;
   each face crop through the image encoder;
7. ``y``: mask channels + the VAE latent of [first frame, zeros];
8. sampling with guidance (:func:`~anytalker_core.sampling.sample`), then the VAE decode;
9. the video: uint8 frames at 24 fps and the speakers' audio mixed on the same timeline.

Encoders come in through small protocols (:class:`~anytalker_core.text_encoder.TextEncoder`,
:class:`~anytalker_core.image_encoder.ImageEncoder`, :class:`~anytalker_core.condition.VideoVAE`), so a host's
own models plug in; :func:`load_models` loads the standalone ones from the files users have.
"""

from __future__ import annotations

import gc
import logging
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .condition import build_y, prepare_image, target_size, to_m11
from .identities import Routing, route_faces, route_from_boxes, route_from_masks
from .images import as_rgb, read_image
from .sampling import sample
from .solvers import SamplingCancelled
from .speakers import SpeakerLayout, arrange_speakers
from .video import write_video

log = logging.getLogger(__name__)

FPS = 24
MAX_AREA = 832 * 480
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
class Models:
    """Everything ``generate`` runs. ``audio_encoder``: anything ``load_audio_encoder`` accepts."""

    dit: torch.nn.Module
    audio_encoder: Any
    text_encoder: Callable[[str], torch.Tensor]
    image_encoder: Callable[[torch.Tensor], torch.Tensor]
    vae: Any


@dataclass
class Video:
    """A generated clip. ``frames``: uint8 ``[F, H, W, 3]``; ``audio``: the mixed speakers, mono float32 at
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
    timings: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the mp4 (H.264 + AAC), atomically; an existing file is kept unless ``overwrite``."""
        return write_video(path, self.frames, self.fps, self.audio, self.audio_rate, overwrite=overwrite)


# ------------------------------------------------------------------------------------------------------ loading


def load_models(
    dit: Any,
    audio_encoder: Any,
    text_encoder: Any,
    image_encoder: Any,
    vae: Any,
    *,
    tokenizer: Any = None,
    dit_config: Any = None,
    dtype: torch.dtype = torch.float32,
) -> Models:
    """Load the standalone models from files (each argument may also be an already loaded model).

    ``dit``: the AnyTalker checkpoint (``load_dit``); ``audio_encoder``: wav2vec2-base (folder or .safetensors);
    ``text_encoder``: umT5-XXL (``umt5_xxl_*.safetensors``, Wan's .pth with ``tokenizer``, or an HF folder);
    ``image_encoder``: ``clip_vision_h.safetensors``; ``vae``: ``wan_2.1_vae.safetensors``. All load on the CPU;
    ``generate(device=...)`` moves each to the device while it is used. ``dtype``: the DiT's weights dtype;
    ``dit_config``: the reference's config JSON (only needed for non-standard sizes).
    """
    from .audio import load_audio_encoder
    from .image_encoder import load_image_encoder
    from .loader import load_dit
    from .text_encoder import load_text_encoder
    from .vae import load_vae

    def path_like(x: Any) -> bool:
        return isinstance(x, (str, Path))

    return Models(
        dit=load_dit(dit, dit_config, device="cpu", dtype=dtype) if path_like(dit) else dit,
        audio_encoder=load_audio_encoder(audio_encoder) if path_like(audio_encoder) else audio_encoder,
        text_encoder=load_text_encoder(text_encoder, tokenizer=tokenizer) if path_like(text_encoder) else text_encoder,
        image_encoder=load_image_encoder(image_encoder) if path_like(image_encoder) else image_encoder,
        vae=load_vae(vae) if path_like(vae) else vae,
    )


# --------------------------------------------------------------------------------------------------- generation


def _movable(obj: Any) -> Any:
    """The object whose ``.to(device)`` moves a model: our wrappers, ``AudioEncoder.model``, or a module."""
    if hasattr(obj, "to") and callable(obj.to):
        return obj
    inner = getattr(obj, "model", None)
    return inner if hasattr(inner, "to") else None


@contextmanager
def _on(obj: Any, device: torch.device | None, offload: bool) -> Iterator[None]:
    """Run with ``obj`` on ``device``; with ``offload`` move it back to the CPU afterwards (and free the cache)."""
    movable = _movable(obj) if device is not None else None
    if movable is not None:
        movable.to(device)
    try:
        yield
    finally:
        if movable is not None and offload and torch.device(device).type != "cpu":
            movable.to("cpu")
            _free_memory()


def _free_memory() -> None:
    """Give freed memory back: Python's garbage, CUDA's cache, and glibc's heap (which otherwise keeps the peak of
    every window's large temporary buffers as fragmented free space)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _trim_heap()


def lean_heap(threshold: int = 1 << 20) -> None:
    """For a process of our own (the CLI, benchmarks): serve allocations of ``threshold`` bytes and more with
    ``mmap`` so they go back to the system when freed. glibc otherwise raises this threshold as big buffers are
    freed and then keeps later ones in its heap, where they fragment: a long video's resident memory would creep
    up window after window. Linux/glibc only; a no-op elsewhere. Not for a host process (ComfyUI) to call."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").mallopt(-3, int(threshold))  # -3 = M_MMAP_THRESHOLD
        except (OSError, AttributeError):
            pass


def _trim_heap() -> None:
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
            pass


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


def _frames_uint8(video: torch.Tensor) -> torch.Tensor:
    """``[1, 3, F, H, W]`` in [-1, 1] -> uint8 ``[F, H, W, 3]`` (rounded, as a writer of [0, 1] floats would)."""
    frames = video[0].permute(1, 2, 3, 0).add(1)  # one float copy, then in place: long clips stay lean
    return frames.mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).cpu()


@dataclass
class Job:
    """Everything computed once per clip, before any sampling: what :func:`sample_window` needs."""

    models: Models
    picture: torch.Tensor  # float32 [H, W, 3] in 0..1, the input picture at its own size
    size: tuple[int, int]  # the video's (H, W)
    layout: SpeakerLayout
    routing: Routing
    text: torch.Tensor
    negative: torch.Tensor
    clip: torch.Tensor
    faces: list[torch.Tensor]
    seed: int
    generator: torch.Generator
    device: torch.device
    offload: bool
    steps: int
    guidance: float
    audio_guidance: float | None
    shift: float
    solver: str

    @property
    def frames(self) -> int:
        return self.layout.num_frames


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
    steps: int = 40,
    guidance: float = 4.5,
    audio_guidance: float | None = None,
    shift: float = 5.0,
    solver: str = "unipc",
    seed: int | None = None,
    device: torch.device | str | None = None,
    offload: bool = True,
    face_backend: str = "auto",
    face_root: str | None = None,
    status: Callable[[str], None] | None = None,
    audio_chunk_frames: int | None = None,
) -> Job:
    """Steps 1-6 of the module docstring (see :func:`generate` for the arguments): the size, the audio timeline,
    the text, the picture's and faces' image features and the routing, once per clip."""
    say = status or (lambda message: log.info(message))
    dev = torch.device(device) if device is not None else next(models.dit.parameters()).device
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if isinstance(audio, (str, Path)) or not isinstance(audio, Sequence) or not audio:
        raise ValueError("audio: give a list with one track (or None for a listener) per person, left to right")
    if solver not in ("unipc", "euler", "dpmpp_2m"):
        raise ValueError(f"solver {solver!r}: expected unipc, euler or dpmpp_2m")

    picture = _picture(image)
    height, width = picture.shape[:2]
    if size is None:
        size = target_size(height, width, max_area)
    else:
        size = tuple(int(v) for v in size)
        if len(size) != 2 or any(v <= 0 or v % 32 for v in size):
            raise ValueError(f"size must be (height, width), both positive multiples of 32, got {size}")
    say(f"picture {width}x{height} -> video {size[1]}x{size[0]}")

    with _on(models.audio_encoder, dev, offload):
        layout = arrange_speakers(
            audio, models.audio_encoder, mode=mode, offsets=offsets, num_frames=num_frames, fps=FPS,
            max_frames=max_frames, chunk_frames=audio_chunk_frames,
        )  # fmt: skip
    say(layout.report())
    seed = random.randint(0, 2**31 - 1) if seed is None else int(seed)

    with _on(models.text_encoder, dev, offload):
        text = models.text_encoder(prompt)
        negative = models.text_encoder(NEGATIVE_PROMPT if negative_prompt is None else negative_prompt)

    routing = _route(picture, faces, layout.num_frames, len(audio), order, size, face_backend, face_root)
    say(routing.describe())
    with _on(models.image_encoder, dev, offload):
        clip = models.image_encoder(to_m11(picture))
        face_features = [models.image_encoder(crop.permute(2, 0, 1).mul(2).sub(1)) for crop in routing.crops]
    return Job(
        models=models, picture=picture, size=tuple(size), layout=layout, routing=routing, text=text,
        negative=negative, clip=clip, faces=face_features, seed=seed,
        generator=torch.Generator(device=dev).manual_seed(seed), device=dev, offload=offload, steps=steps,
        guidance=guidance, audio_guidance=audio_guidance, shift=shift, solver=solver,
    )  # fmt: skip


@torch.no_grad()
def sample_window(
    job: Job,
    known: torch.Tensor,
    audio: Sequence[torch.Tensor],
    token_masks: Sequence[torch.Tensor],
    y_mask: torch.Tensor,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 7-8 for one stretch of video: (latent [1, 16, T, h, w], decoded video [1, 3, F, H, W] in [-1, 1]).

    ``known``: the frames given at the start, ``[3, M, H, W]`` in [-1, 1] (M = 1 + 4k; the picture for the first
    window); the VAE encodes them followed by F - M zero frames for ``y``. ``audio``: each person's features for
    these F frames ``[F, 5, layers, channels]``; ``token_masks``: ``[T, H/16, W/16]`` each; ``y_mask``: ``[4, T, H/8,
    W/8]``. Noise comes from the job's generator, so windows draw one after another from one seeded stream.
    """
    models, dev, offload = job.models, job.device, job.offload
    frames = audio[0].shape[0]
    latent_shape = (1, 16, (frames - 1) // 4 + 1, job.size[0] // 8, job.size[1] // 8)
    noise = torch.randn(latent_shape, generator=job.generator, device=dev, dtype=torch.float32)
    with _on(models.vae, dev, offload):
        y = build_y(models.vae, known, frames, y_mask)
    cond = {
        "text": job.text.to(dev),
        "clip": job.clip.to(dev),
        "y": y.to(dev)[None],
        "audio": [f.to(dev)[None] for f in audio],
        "faces": [f.to(dev) for f in job.faces],
        "masks": [m.to(dev)[None] for m in token_masks],
    }
    uncond = dict(cond, text=job.negative.to(dev), audio=[torch.zeros_like(a) for a in cond["audio"]])
    try:
        with _on(models.dit, dev, offload):
            latent = sample(
                models.dit, noise, steps=job.steps, shift=job.shift, guidance=job.guidance, cond=cond,
                uncond=uncond, solver=job.solver, callback=callback, audio_guidance=job.audio_guidance,
                should_stop=should_stop,
            )  # fmt: skip
    except SamplingCancelled:
        del cond, uncond, noise, y
        _free_memory()
        raise
    del cond, uncond, noise, y
    with _on(models.vae, dev, offload):
        decoded = models.vae.decode(latent)
    return latent, decoded


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
    :class:`SamplingCancelled` (memory is freed first). ``status(message)`` receives one line per stage.

    Defaults are the reference's: 40 UniPC steps, guidance 4.5, shift 5, 832x480 area, its negative prompt.
    Long clips: :func:`anytalker_core.long.render` makes them window by window and streams them to a file.
    """
    say = status or (lambda message: log.info(message))
    job = prepare(models, image, audio, prompt, status=say, **options)
    say(f"sampling: {job.steps} {job.solver} steps, guidance {job.guidance}" + (
        f", audio guidance {job.audio_guidance}" if job.audio_guidance is not None else "") + f", seed {job.seed}")
    first = prepare_image(job.picture, job.size)[:, None]
    routing = job.routing
    latent, video = sample_window(
        job, first, job.layout.features, routing.token_masks, routing.y_mask, callback, should_stop
    )
    return Video(
        frames=_frames_uint8(video), audio=job.layout.mix, audio_rate=job.layout.mix_rate, fps=FPS,
        layout=job.layout, routing=routing, latent=latent.cpu(), seed=job.seed, size=job.size,
    )  # fmt: skip


__all__ = [
    "FPS", "MAX_AREA", "NEGATIVE_PROMPT", "Job", "Models", "Video", "generate", "load_models", "prepare",
    "sample_window",
]  # fmt: skip

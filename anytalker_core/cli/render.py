"""``demo`` and ``generate``: one clip, in this process or split over the processes ``torchrun`` started (``--sp``)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .. import timeline
from .console import Progress, StopOnCtrlC, status
from .flags import (
    DTYPES,
    binding_path,
    check_device,
    check_model_file,
    check_number,
    check_out,
    check_render_flags,
    check_windows,
    device_options,
    parse_faces,
    parse_offsets,
    parse_size,
    sp_option,
    window_options,
)

DEMO_OUT = Path("anytalker_demo") / "demo.mp4"  # relative to the current folder; git ignores it in a checkout


def add_parsers(commands: Any) -> None:
    """The ``demo`` and ``generate`` commands."""
    from ..people.faces import BACKENDS
    from ..people.speakers import MODES
    from ..sampling import SOLVER_NAMES
    from ..sampling.defaults import GUIDANCE, SHIFT_480P, SHIFT_OTHER, STEPS

    demo = commands.add_parser("demo", help="run the whole pipeline on tiny built-in models (seconds, no downloads)")
    demo.add_argument(
        "--out",
        default=None,
        help=f"the video to write (default {DEMO_OUT}, replaced on every run); "
        "the face binding goes next to it as <name>_binding.png",
    )
    demo.add_argument("--steps", type=int, default=12, help="sampling steps (default 12)")
    demo.add_argument("--seed", type=int, default=0, help="seed for the tiny weights and the noise (default 0)")
    demo.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="render this many seconds (rounded up to whole "
        "4n+1 frames) of the two voices taking turns, window by window (default: the 1.7 s clip)",
    )
    demo.add_argument("--overwrite", action="store_true", help="replace existing output files")
    sp_option(demo)
    window_options(demo)

    gen = commands.add_parser("generate", help="make a talking video with real weights")
    gen.add_argument("--image", required=True, help="the picture (PNG/JPEG/WebP) with every person in it")
    gen.add_argument(
        "--audio",
        action="append",
        required=True,
        metavar="TRACK",
        help="one per person, left to right (repeat the flag); 'none' for a listener",
    )
    gen.add_argument("--prompt", default="", help="what the scene shows (as in the reference's examples)")
    gen.add_argument("--negative-prompt", default=None, help="default: the reference's negative prompt")
    gen.add_argument("--out", required=True, help="the .mp4 to write; the face binding goes next to it as PNG")
    gen.add_argument("--overwrite", action="store_true", help="replace existing output files")
    models = gen.add_argument_group("model files (see the README's table)")
    models.add_argument("--dit", required=True, help="AnyTalker checkpoint: 1_3B-single-v1.pth or 14B-multi-v1.pth")
    models.add_argument(
        "--dit-config",
        default=None,
        help="the reference's config JSON for the checkpoint (only needed for non-standard sizes)",
    )
    models.add_argument("--wav2vec2", required=True, help="wav2vec2-base-960h folder or .safetensors")
    models.add_argument(
        "--text-encoder",
        required=True,
        help="umt5_xxl_fp16.safetensors (or fp8_e4m3fn_scaled), "
        "Wan's models_t5_umt5-xxl-enc-bf16.pth, or a Hugging Face folder",
    )
    models.add_argument(
        "--tokenizer",
        default=None,
        help="umT5 spiece.model or tokenizer folder (only for files that carry none, e.g. Wan's .pth)",
    )
    models.add_argument("--image-encoder", required=True, help="clip_vision_h.safetensors")
    models.add_argument("--vae", required=True, help="wan_2.1_vae.safetensors or Wan2.1_VAE.pth")
    timing = gen.add_argument_group("timeline and faces")
    timing.add_argument(
        "--mode",
        choices=MODES,
        default="pad",
        help="pad: everyone on one timeline (default); concat: people take turns",
    )
    timing.add_argument("--offsets", default=None, help="start delay in seconds per person, e.g. 0,1.5")
    timing.add_argument("--frames", type=int, default=None, help="clip length in frames (4n+1); default from audio")
    timing.add_argument(
        "--faces",
        default=None,
        help="face boxes instead of detection: 'x0,y0,x1,y1;...' (pixels, or fractions of the picture)",
    )
    timing.add_argument("--order", default=None, help="voice i drives face order[i], e.g. '2,1'")
    timing.add_argument(
        "--face-backend",
        default="auto",
        choices=BACKENDS,
        help="face detector (default: InsightFace when installed, else YuNet, shipped with the pack)",
    )
    sampling = gen.add_argument_group("sampling (defaults: the reference's)")
    sampling.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"sampling steps (default: the reference's, {STEPS['af']} for the 1.3B model and "
        f"{STEPS['legacy']} for the 14B)",
    )
    sampling.add_argument(
        "--guidance",
        type=float,
        default=GUIDANCE,
        help=f"text+audio guidance scale (default {GUIDANCE:g}, the reference's)",
    )
    sampling.add_argument(
        "--audio-guidance", type=float, default=None, help="a separate audio scale (three passes per step)"
    )
    sampling.add_argument(
        "--shift",
        type=float,
        default=None,
        help=f"noise schedule shift (default: the reference's rule, {SHIFT_480P:g} for a 480p clip "
        f"(832x480 area, the default size), {SHIFT_OTHER:g} otherwise)",
    )
    sampling.add_argument("--solver", choices=SOLVER_NAMES, default="unipc")
    sampling.add_argument("--seed", type=int, default=None, help="default: a random one, printed at the end")
    sampling.add_argument(
        "--size", default=None, help="video size WxH, multiples of 32 (default: the picture's aspect at --max-area)"
    )
    sampling.add_argument("--max-area", type=int, default=None, help="pixels per frame (default 832*480)")
    window_options(gen)
    device = gen.add_argument_group("device")
    device_options(device, "cuda, cuda:1, cpu... (default: cuda when available)")
    sp_option(device)


def run(args: argparse.Namespace, models: Any, image: Any, audio: list, prompt: str, **kwargs: Any) -> int:
    from ..images import read_image
    from ..people.preview import preview
    from ..pipeline.standalone import render
    from ..pipeline.writer import write_png

    out = Path(args.out).expanduser()
    progress = Progress()
    try:
        with StopOnCtrlC() as stop:
            result = render(
                models, image, audio, prompt, out, window=args.window, motion_frames=args.motion_frames,
                color_anchor=not args.no_color_anchor, overwrite=args.overwrite, callback=progress.step,
                on_window=progress.on_window, should_stop=stop, status=status, **kwargs,
            )  # fmt: skip
    finally:
        progress.close()
    picture = read_image(image) if isinstance(image, (str, Path)) else image
    png = write_png(binding_path(out), preview(picture, result.routing), overwrite=args.overwrite)
    height, width = result.size
    print(
        f"wrote {result.path} ({result.frames} frames, {timeline.seconds(result.frames):.2f} s, {width}x{height}, "
        f"{result.windows_done} window(s), seed {result.seed})"
    )
    print(f"wrote {png} (who drives which face)")
    if result.cancelled:
        print(f"stopped early: the file holds {result.windows_done} of {len(result.windows)} windows", file=sys.stderr)
        return 130
    return 0


def conversation(seconds: float) -> tuple[list, int]:
    """The demo's two voices taking turns (0.3 s pauses) for ``seconds``: two full-length tracks and F = 4n+1."""
    from .. import demo
    from ..people.audio import SAMPLE_RATE, load_audio

    if not 0 < seconds <= 3600:
        raise ValueError(f"--seconds must be between 0 and 3600, got {seconds}")
    frames = timeline.round_up(math.ceil(seconds * timeline.FPS - 1e-9))  # the video lasts at least `seconds`
    clips = [load_audio(path) for path in demo.AUDIO]
    total = int(timeline.seconds(frames) * SAMPLE_RATE) + SAMPLE_RATE
    tracks, at, turn = [torch.zeros(total), torch.zeros(total)], 0, 0
    while at < total:
        clip = clips[turn % 2][: total - at]
        tracks[turn % 2][at : at + clip.shape[0]] = clip
        at += clip.shape[0] + int(0.3 * SAMPLE_RATE)
        turn += 1
    return [(t[None], SAMPLE_RATE) for t in tracks], frames


@contextlib.contextmanager
def ranks(args: argparse.Namespace) -> Iterator[int]:
    """``--sp N``: this process is one of N started together (``torchrun --nproc-per-node N``). Joins their process
    group (unless this process already did; NCCL with one GPU per process, ``cuda:LOCAL_RANK``, else gloo), checks
    that N joined, yields this process's rank, and leaves the group it joined at the end."""
    import torch.distributed as dist

    if args.sp < 1:
        raise ValueError(f"--sp is {args.sp}; expected a number of processes >= 1")
    joined = not dist.is_initialized()
    if joined:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world != args.sp:
            raise ValueError(
                f"--sp {args.sp} splits every model call over {args.sp} processes started together, but this run has "
                f"{world}: start it with torchrun --nproc-per-node {args.sp} -m anytalker_core {args.command} ... "
                f"--sp {args.sp}"
            )
        cuda = str(getattr(args, "device", None) or "cpu").startswith("cuda")
        if cuda:  # one GPU per process
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(args.device)
        dist.init_process_group("nccl" if cuda else "gloo")
    try:
        if dist.get_world_size() != args.sp:
            raise ValueError(f"--sp {args.sp}, but {dist.get_world_size()} processes joined: use the same number")
        yield dist.get_rank()
    finally:
        if joined:
            dist.destroy_process_group()


@contextlib.contextmanager
def frame_split(args: argparse.Namespace) -> Iterator[Callable[[Any], Any]]:
    """``--sp N`` for one clip (``demo``, ``generate``): yields a function that splits the models' DiT over the N
    processes (:func:`ranks`) by latent frames (``model/parallel.py``); every process renders the same clip with the
    same seed, only the first writes the files. Without ``--sp`` the models stay as they are."""
    if args.sp == 1:
        yield lambda models: models
        return
    import torch.distributed as dist

    from ..model.parallel import FrameSplitDiT

    with ranks(args) as rank:
        if getattr(args, "seed", 0) is None:  # one random seed for all
            seed = [random.randint(0, 2**31 - 1)]
            dist.broadcast_object_list(seed, src=0)
            args.seed = seed[0]
        with tempfile.TemporaryDirectory(prefix="anytalker_sp_") as scratch:
            if rank:  # the others render into a scratch folder and print nothing
                args.out, args.overwrite = str(Path(scratch) / Path(args.out).name), True
            with contextlib.redirect_stdout(io.StringIO()) if rank else contextlib.nullcontext():
                yield lambda models: dataclasses.replace(models, dit=FrameSplitDiT(models.dit))


def demo_command(args: argparse.Namespace) -> int:
    from .. import demo

    if args.out is None:  # the demo's own output: a re-run replaces it
        args.out, args.overwrite = str(DEMO_OUT), True
    check_out(Path(args.out).expanduser(), args.overwrite)
    check_windows(args)
    check_number(args.steps, "--steps", 1)
    print(
        "AnyTalker demo: the real pipeline on tiny random-weight models (the video is coloured noise: nothing of "
        "the picture survives random weights; real weights make real faces talk, see the README)",
        file=sys.stderr,
    )
    models = demo.tiny_models(seed=args.seed)
    audio, options = list(demo.AUDIO), {"mode": demo.MODE}
    if args.seconds is not None:
        audio, frames = conversation(args.seconds)
        options = {"mode": "pad", "num_frames": frames}
    with frame_split(args) as split:
        return run(
            args, split(models), demo.IMAGE, audio, demo.PROMPT, max_area=demo.MAX_AREA, steps=args.steps,
            seed=args.seed, device="cpu", **options,
        )  # fmt: skip


def generate_command(args: argparse.Namespace) -> int:
    from ..pipeline import MAX_AREA, load_models

    inputs = check_generate(args)  # everything cheap, before the first weight loads
    print("loading models", file=sys.stderr)
    models = load_models(
        args.dit, args.wav2vec2, args.text_encoder, args.image_encoder, args.vae, tokenizer=args.tokenizer,
        dit_config=args.dit_config, dtype=DTYPES[args.dtype or ("fp32" if args.device == "cpu" else "bf16")],
    )  # fmt: skip
    with frame_split(args) as split:
        return run(
            args, split(models), inputs["picture"], inputs["audio"], args.prompt, negative_prompt=args.negative_prompt,
            faces=inputs["faces"], order=args.order, mode=args.mode, offsets=inputs["offsets"], num_frames=args.frames,
            max_area=args.max_area or MAX_AREA, size=inputs["size"], steps=args.steps, guidance=args.guidance,
            audio_guidance=args.audio_guidance, shift=args.shift, solver=args.solver, seed=args.seed,
            device=args.device, offload=not args.no_offload, face_backend=args.face_backend,
        )  # fmt: skip


def check_generate(args: argparse.Namespace) -> dict[str, Any]:
    """Every input that can be checked cheaply, before any weight loads; each failure names its flag."""
    from ..images import read_image
    from ..people.audio import load_audio
    from ..people.faces import detect_faces
    from ..people.routing import parse_order

    check_device(args.device)
    check_render_flags(args)
    size = parse_size(args.size)
    audio = [None if a.lower() in ("none", "-", "listener") else a for a in args.audio]
    offsets = parse_offsets(args.offsets, len(audio))
    faces = parse_faces(args.faces)
    check_out(Path(args.out).expanduser(), args.overwrite)
    for flag, value, optional in (("--dit", args.dit, False), ("--wav2vec2", args.wav2vec2, False),
                                  ("--text-encoder", args.text_encoder, False), ("--tokenizer", args.tokenizer, True),
                                  ("--image-encoder", args.image_encoder, False), ("--vae", args.vae, False),
                                  ("--dit-config", args.dit_config, True)):  # fmt: skip
        check_model_file(flag, value, optional)
    if not Path(args.image).expanduser().is_file():
        raise FileNotFoundError(f"--image: file not found: {args.image}")
    picture = read_image(args.image, name="--image")
    for i, track in enumerate(audio):
        if track is not None:
            if not Path(track).expanduser().is_file():
                raise FileNotFoundError(f"--audio {i + 1}: file not found: {track}")
            load_audio(track, speaker=f"--audio {i + 1} ({track})")  # decodable, not silent-empty
    parse_order(args.order, len(audio))
    if faces is None:  # enough faces for the people (the pipeline detects them again, as cheaply)
        detect_faces(picture, n=len(audio), backend=args.face_backend)
    elif len(faces) < len(audio):
        raise ValueError(f"--faces gives {len(faces)} boxes for {len(audio)} people (one per --audio)")
    return {"picture": picture, "audio": audio, "offsets": offsets, "faces": faces, "size": size}

"""Command line: ``python -m anytalker_core {demo, generate, batch, inspect, evaluate}``.

- ``demo``: the whole pipeline on tiny built-in models and shipped inputs; writes an mp4 and the face binding PNG.
- ``generate``: a talking video from a picture, one audio track per person and a prompt, with real weights.
- ``batch JOBS.json``: every job of a reference-style job file, models loaded once per worker, resumable; on
  local processes (``--workers``, ``--devices``), a Ray cluster (``--ray``), or each clip on the N processes
  ``torchrun`` started (``--sp N``). Exit 1 when a job failed.
- ``inspect CHECKPOINT``: what an AnyTalker checkpoint holds and whether it loads.
- ``evaluate VIDEO --audio A --audio B``: judge a finished video: which voice drives which face, listener motion;
  prints a table, writes a plot (PNG) and the report (JSON).

Every failure prints one clear line (``error: ...``) and exits non-zero: 2 for bad input, 1 for a checkpoint
with problems, 130 when cancelled with Ctrl-C (no partial file is left behind).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import timeline
from .model.dit import AnyTalkerDiT
from .model.loader import check_keys, read_state_dict, resolve_config
from .weights import CheckpointError

DEMO_OUT = Path("anytalker_demo") / "demo.mp4"  # relative to the current folder; git ignores it in a checkout
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def inspect_checkpoint(source: str | Path, config: str | None = None) -> dict[str, Any]:
    """What a DiT checkpoint holds and whether it loads: variant, sizes, dtypes, parameter count, problems."""
    state, name = read_state_dict(source)
    report: dict[str, Any] = {
        "file": name,
        "tensors": len(state),
        "parameters": sum(t.numel() for t in state.values()),
        "dtypes": dict(Counter(str(t.dtype).replace("torch.", "") for t in state.values())),
        "problems": [],
    }
    try:
        cfg = resolve_config(state, config, name)
    except (CheckpointError, ValueError) as err:
        report["problems"].append(str(err))
        return report
    report["config"] = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    with torch.device("meta"):
        model = AnyTalkerDiT(cfg)
    try:
        check_keys({k: v.shape for k, v in model.state_dict().items()}, state, name)
    except CheckpointError as err:
        report["problems"].append(str(err))
    return report


def _print_report(report: dict[str, Any]) -> None:
    print(f"file:        {report['file']}")
    print(f"tensors:     {report['tensors']} ({report['parameters'] / 1e9:.3f} B parameters)")
    print(f"dtypes:      {', '.join(f'{k} x{v}' for k, v in report['dtypes'].items())}")
    cfg = report.get("config")
    if cfg:
        print(f"variant:     {cfg['variant']} ({'1.3B-style' if cfg['variant'] == 'af' else '14B-style'})")
        print(
            f"dimensions:  dim {cfg['dim']}, ffn {cfg['ffn_dim']}, {cfg['num_layers']} blocks, "
            f"{cfg['num_heads']} heads (head size {cfg['dim'] // cfg['num_heads']}), text_dim {cfg['text_dim']}"
        )
    if report["problems"]:
        print("problems:")
        for problem in report["problems"]:
            print(f"  - {problem}")
    else:
        print("problems:    none: the checkpoint loads into AnyTalkerDiT")


# ------------------------------------------------------------------------------------------- generate / demo


class _Progress:
    """One tqdm bar over every sampling step of every window; the window number in its label."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=None, desc="sampling", unit="step", file=sys.stderr, dynamic_ncols=True)
        self.windows, self.index, self.base = 1, 0, 0

    def on_window(self, window: Any, total: int) -> None:
        self.windows, self.index = total, window.index
        self.base = self.bar.n
        if total > 1:
            self.bar.set_description(f"window {window.index + 1}/{total}")

    def step(self, step: int, total: int, _x0: torch.Tensor) -> None:
        if self.bar.total is None:
            self.bar.reset(total=total * self.windows)
        self.bar.update(self.base + step + 1 - self.bar.n)
        if step + 1 == total:  # the VAE decode and the mp4 writing come next
            where = f"window {self.index + 1}/{self.windows}: " if self.windows > 1 else ""
            self.bar.set_description(f"{where}decoding and writing")

    def close(self) -> None:
        self.bar.close()


class _StopOnCtrlC:
    """The first Ctrl-C asks to stop after the current step (the finished windows are kept); a second aborts."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> "_StopOnCtrlC":
        import signal

        def handler(_signum, _frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            print("\nstopping after this step (Ctrl-C again to abort without saving)", file=sys.stderr)

        self.previous = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *_: Any) -> None:
        import signal

        signal.signal(signal.SIGINT, self.previous)

    def __call__(self) -> bool:
        return self.requested


def _status(message: str) -> None:
    for line in message.splitlines():
        print(f"  {line}", file=sys.stderr)


def _binding_path(out: Path) -> Path:
    return out.with_name(out.stem + "_binding.png")


def _check_outputs(out: Path, overwrite: bool) -> None:
    """Fail before any work when a result would overwrite a file."""
    for path in (out, _binding_path(out)):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite or choose another --out")
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out must end in .mp4, got {out.name!r}")


def _parse_faces(text: str | None) -> list[list[float]] | None:
    """``"x0,y0,x1,y1;x0,y0,x1,y1"`` -> boxes (pixels, or fractions when every number <= 1)."""
    if not text:
        return None
    boxes = []
    for i, part in enumerate(p for p in text.split(";") if p.strip()):
        try:
            box = [float(v) for v in part.replace(" ", "").split(",")]
        except ValueError:
            raise ValueError(f"--faces: box {i + 1} {part!r} is not four numbers x0,y0,x1,y1") from None
        if len(box) != 4:
            raise ValueError(f"--faces: box {i + 1} {part!r} has {len(box)} numbers; expected x0,y0,x1,y1")
        boxes.append(box)
    return boxes


def _parse_size(text: str | None) -> tuple[int, int] | None:
    """``"832x480"`` (width x height, as typed) -> (height, width), both positive multiples of 32."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise ValueError(f"--size must look like 832x480 (width x height), got {text!r}") from None
    if w <= 0 or h <= 0 or w % 32 or h % 32:
        near = lambda v: f"{max(32, v // 32 * 32)} or {max(32, v // 32 * 32) + 32}" if v % 32 else str(v)  # noqa: E731
        raise ValueError(f"--size {text}: width and height must be positive multiples of 32 (width {near(w)}, "
                         f"height {near(h)})")  # fmt: skip
    return h, w


def _parse_offsets(text: str | None, people: int) -> list[float] | None:
    if not text:
        return None
    values = []
    for i, part in enumerate(text.split(",")):
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(f"--offsets: value {i + 1} {part.strip()!r} is not a number of seconds") from None
        if not math.isfinite(values[-1]) or values[-1] < 0:
            raise ValueError(f"--offsets: value {i + 1} is {part.strip()}; expected seconds >= 0")
    if len(values) != people:
        raise ValueError(f"--offsets gives {len(values)} start times for {people} people (one per --audio)")
    return values


def _check_device(text: str) -> None:
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {text!r} is not a device: use cpu, cuda, cuda:1 or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {text}: this PyTorch ({torch.__version__}) sees no CUDA GPU; use --device cpu, "
                             "or install a CUDA build of PyTorch")  # fmt: skip
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {text}: there are {torch.cuda.device_count()} CUDA GPU(s) (cuda:0 ...)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {text}: Apple's MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {text}: only cpu, cuda and mps are supported")


def _check_number(value: float | None, flag: str, minimum: float, inclusive: bool = True) -> None:
    if value is None:
        return
    ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
    if not ok:
        raise ValueError(f"{flag} is {value}; expected a number {'>=' if inclusive else '>'} {minimum:g}")


def _check_model_file(flag: str, value: str | None, optional: bool = False) -> None:
    from .weights import file_kind

    if value is None and optional:
        return
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{flag}: not found: {value}")
    kind = file_kind(path) if path.is_file() and path.suffix.lower() != ".json" else None
    if kind is not None:
        raise ValueError(f"{flag}: {value} is {kind}, not a model file")


def _check_windows(args: argparse.Namespace) -> None:
    timeline.check_frames(args.window, "--window", minimum=5)
    timeline.check_frames(args.motion_frames, "--motion-frames")
    if args.motion_frames >= args.window:
        raise ValueError(f"--motion-frames ({args.motion_frames}) must be shorter than --window ({args.window})")


def _check_out(out: Path, overwrite: bool) -> None:
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out: {parent} is a file, not a folder")
            break
    _check_outputs(out, overwrite)


def _run(args: argparse.Namespace, models: Any, image: Any, audio: list, prompt: str, **kwargs: Any) -> int:
    from .images import read_image
    from .people.preview import preview
    from .pipeline.standalone import render
    from .pipeline.writer import write_png

    out = Path(args.out).expanduser()
    progress = _Progress()
    try:
        with _StopOnCtrlC() as stop:
            result = render(
                models, image, audio, prompt, out, window=args.window, motion_frames=args.motion_frames,
                color_anchor=not args.no_color_anchor, overwrite=args.overwrite, callback=progress.step,
                on_window=progress.on_window, should_stop=stop, status=_status, **kwargs,
            )  # fmt: skip
    finally:
        progress.close()
    picture = read_image(image) if isinstance(image, (str, Path)) else image
    png = write_png(_binding_path(out), preview(picture, result.routing), overwrite=args.overwrite)
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


def _conversation(seconds: float) -> tuple[list, int]:
    """The demo's two voices taking turns (0.3 s pauses) for ``seconds``: two full-length tracks and F = 4n+1."""
    from . import demo
    from .people.audio import SAMPLE_RATE, load_audio

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
def _ranks(args: argparse.Namespace) -> Iterator[int]:
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
def _frame_split(args: argparse.Namespace) -> Iterator[Callable[[Any], Any]]:
    """``--sp N`` for one clip (``demo``, ``generate``): yields a function that splits the models' DiT over the N
    processes (:func:`_ranks`) by latent frames (``model/parallel.py``); every process renders the same clip with the
    same seed, only the first writes the files. Without ``--sp`` the models stay as they are."""
    if args.sp == 1:
        yield lambda models: models
        return
    import torch.distributed as dist

    from .model.parallel import FrameSplitDiT

    with _ranks(args) as rank:
        if getattr(args, "seed", 0) is None:  # one random seed for all
            seed = [random.randint(0, 2**31 - 1)]
            dist.broadcast_object_list(seed, src=0)
            args.seed = seed[0]
        with tempfile.TemporaryDirectory(prefix="anytalker_sp_") as scratch:
            if rank:  # the others render into a scratch folder and print nothing
                args.out, args.overwrite = str(Path(scratch) / Path(args.out).name), True
            with contextlib.redirect_stdout(io.StringIO()) if rank else contextlib.nullcontext():
                yield lambda models: dataclasses.replace(models, dit=FrameSplitDiT(models.dit))


def _sp_option(parser: Any, more: str = "") -> None:
    parser.add_argument("--sp", type=int, default=1, metavar="N",
                        help="split every model call by latent frames over N processes (GPUs) started with "
                        "torchrun --nproc-per-node N; N must divide the model's heads (1.3B: 2, 3, 4, 6)"
                        + more)  # fmt: skip


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    if args.out is None:  # the demo's own output: a re-run replaces it
        args.out, args.overwrite = str(DEMO_OUT), True
    _check_out(Path(args.out).expanduser(), args.overwrite)
    _check_windows(args)
    _check_number(args.steps, "--steps", 1)
    print(
        "AnyTalker demo: the real pipeline on tiny random-weight models (the video is coloured noise: nothing of "
        "the picture survives random weights; real weights make real faces talk, see the README)",
        file=sys.stderr,
    )
    models = demo.tiny_models(seed=args.seed)
    audio, options = list(demo.AUDIO), {"mode": demo.MODE}
    if args.seconds is not None:
        audio, frames = _conversation(args.seconds)
        options = {"mode": "pad", "num_frames": frames}
    with _frame_split(args) as split:
        return _run(
            args, split(models), demo.IMAGE, audio, demo.PROMPT, max_area=demo.MAX_AREA, steps=args.steps,
            seed=args.seed, device="cpu", **options,
        )  # fmt: skip


def _generate(args: argparse.Namespace) -> int:
    from .pipeline import MAX_AREA, load_models

    inputs = _check_generate(args)  # everything cheap, before the first weight loads
    print("loading models", file=sys.stderr)
    models = load_models(
        args.dit, args.wav2vec2, args.text_encoder, args.image_encoder, args.vae, tokenizer=args.tokenizer,
        dit_config=args.dit_config, dtype=DTYPES[args.dtype or ("fp32" if args.device == "cpu" else "bf16")],
    )  # fmt: skip
    with _frame_split(args) as split:
        return _run(
            args, split(models), inputs["picture"], inputs["audio"], args.prompt, negative_prompt=args.negative_prompt,
            faces=inputs["faces"], order=args.order, mode=args.mode, offsets=inputs["offsets"], num_frames=args.frames,
            max_area=args.max_area or MAX_AREA, size=inputs["size"], steps=args.steps, guidance=args.guidance,
            audio_guidance=args.audio_guidance, shift=args.shift, solver=args.solver, seed=args.seed,
            device=args.device, offload=not args.no_offload, face_backend=args.face_backend,
        )  # fmt: skip


def _check_render_flags(args: argparse.Namespace) -> None:
    """The sampling, size and timeline flags ``generate`` and ``batch`` share; each failure names its flag."""
    _check_number(args.steps, "--steps", 1)
    _check_number(args.shift, "--shift", 0, inclusive=False)
    _check_number(args.guidance, "--guidance", 0)
    _check_number(args.audio_guidance, "--audio-guidance", 0)
    _check_number(args.max_area, "--max-area", 1)
    if args.frames is not None:
        timeline.check_frames(args.frames, "--frames")
    _check_windows(args)


def _check_generate(args: argparse.Namespace) -> dict[str, Any]:
    """Every input that can be checked cheaply, before any weight loads; each failure names its flag."""
    from .images import read_image
    from .people.audio import load_audio
    from .people.faces import detect_faces
    from .people.routing import parse_order

    _check_device(args.device)
    _check_render_flags(args)
    size = _parse_size(args.size)
    audio = [None if a.lower() in ("none", "-", "listener") else a for a in args.audio]
    offsets = _parse_offsets(args.offsets, len(audio))
    faces = _parse_faces(args.faces)
    _check_out(Path(args.out).expanduser(), args.overwrite)
    for flag, value, optional in (("--dit", args.dit, False), ("--wav2vec2", args.wav2vec2, False),
                                  ("--text-encoder", args.text_encoder, False), ("--tokenizer", args.tokenizer, True),
                                  ("--image-encoder", args.image_encoder, False), ("--vae", args.vae, False),
                                  ("--dit-config", args.dit_config, True)):  # fmt: skip
        _check_model_file(flag, value, optional)
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


def _window_options(parser: argparse.ArgumentParser) -> None:
    from .pipeline.windows import MOTION_FRAMES, WINDOW

    group = parser.add_argument_group("long videos (clips longer than one window)")
    group.add_argument(
        "--window",
        type=int,
        default=WINDOW,
        help=f"frames per window, 4n+1 (default {WINDOW}, what the model was trained on)",
    )
    group.add_argument(
        "--motion-frames",
        type=int,
        default=MOTION_FRAMES,
        help=f"frames each window takes over from the previous one, 1+4k (default {MOTION_FRAMES})",
    )
    group.add_argument(
        "--no-color-anchor", action="store_true", help="do not match each later window's colours to the picture's"
    )


def _parser() -> argparse.ArgumentParser:
    from .people.faces import BACKENDS
    from .people.speakers import MODES
    from .sampling import SOLVER_NAMES
    from .sampling.defaults import GUIDANCE, SHIFT_480P, SHIFT_OTHER, STEPS

    parser = argparse.ArgumentParser(
        prog="python -m anytalker_core", description="AnyTalker: talking videos of several people from one picture."
    )
    commands = parser.add_subparsers(dest="command", required=True)

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
    _sp_option(demo)
    _window_options(demo)

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
    _window_options(gen)
    device = gen.add_argument_group("device")
    device.add_argument("--device", default=None, help="cuda, cuda:1, cpu... (default: cuda when available)")
    device.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default=None,
        help="DiT weights dtype (default: bf16 on a GPU, fp32 on the CPU)",
    )
    device.add_argument("--no-offload", action="store_true", help="keep every model on the device (more memory)")
    _sp_option(device)

    _batch_parser(commands)

    inspect = commands.add_parser("inspect", help="show what an AnyTalker checkpoint holds and whether it loads")
    inspect.add_argument("checkpoint", help=".pth, .safetensors or a folder of shards")
    inspect.add_argument("--config", help="the reference's config JSON (num_heads etc.), checked against the weights")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    _evaluate_parser(commands)
    return parser


# ------------------------------------------------------------------------------------------------------ batch


def _batch_parser(commands: Any) -> None:
    from .people.faces import BACKENDS
    from .people.speakers import MODES
    from .sampling import SOLVER_NAMES
    from .sampling.defaults import GUIDANCE

    batch = commands.add_parser(
        "batch", help="render every job of a job file (the reference's --batch_gen_json format), resumable",
        description="Render every job of a job file: models load once per worker, jobs whose output exists are "
        "skipped, every job is checked before any model loads. See the README's 'Batch rendering'.",
    )  # fmt: skip
    batch.add_argument("jobs", help="the job file (JSON: {name: {image_path, caption, enhance_caption, audio_list}})")
    batch.add_argument("--out", default=None, help="output folder (default: beside the job file, named after it)")
    batch.add_argument("--overwrite", action="store_true", help="render jobs whose output already exists again")
    models = batch.add_argument_group("model files (as for generate)")
    for flag in ("--dit", "--wav2vec2", "--text-encoder", "--image-encoder", "--vae"):
        models.add_argument(flag, default=None, help="required unless --demo-models; see generate --help")
    models.add_argument("--dit-config", default=None, help="the reference's config JSON (non-standard sizes only)")
    models.add_argument("--tokenizer", default=None, help="umT5 spiece.model (for text encoders that carry none)")
    models.add_argument(
        "--demo-models",
        action="store_true",
        help="the demo's tiny random-weight models instead "
        "of model files (seconds, no downloads; the videos are noise): to try a job file or a cluster",
    )
    every = batch.add_argument_group("defaults for every job (a job's own fields win)")
    every.add_argument("--mode", choices=MODES, default="pad", help="pad (one timeline, default) or concat (turns)")
    every.add_argument("--frames", type=int, default=None, help="clip length, 4n+1 (default: from the audio)")
    every.add_argument("--seed", type=int, default=None, help="seed of every job (default: one random seed, printed)")
    every.add_argument("--steps", type=int, default=None, help="sampling steps (default: the reference's)")
    every.add_argument("--guidance", type=float, default=GUIDANCE, help=f"guidance scale (default {GUIDANCE:g})")
    every.add_argument("--audio-guidance", type=float, default=None, help="a separate audio guidance scale")
    every.add_argument("--shift", type=float, default=None, help="noise schedule shift (default: the reference's)")
    every.add_argument("--solver", choices=SOLVER_NAMES, default="unipc")
    every.add_argument("--size", default=None, help="video size WxH, multiples of 32 (default: from --max-area)")
    every.add_argument("--max-area", type=int, default=None, help="pixels per frame (default 832*480)")
    every.add_argument("--negative-prompt", default=None, help="default: the reference's negative prompt")
    every.add_argument("--face-backend", default="auto", choices=BACKENDS, help="face detector (default auto)")
    _window_options(batch)
    workers = batch.add_argument_group("workers")
    workers.add_argument("--device", default=None, help="cuda, cpu... (default: cuda when available)")
    workers.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default=None,
        help="DiT weights dtype (default: bf16 on a GPU, fp32 on the CPU)",
    )
    workers.add_argument("--no-offload", action="store_true", help="keep every model on the device (more memory)")
    workers.add_argument(
        "--workers",
        type=int,
        default=None,
        help="how many workers, each loading the models once "
        "(default: one per --devices entry, one per GPU of a Ray cluster, else 1)",
    )
    workers.add_argument("--devices", default=None, help="GPUs for local workers, one worker each: e.g. 0,1")
    workers.add_argument(
        "--cpus-per-worker",
        type=int,
        default=None,
        help="CPU cores per CPU worker (default: this machine's cores shared out; 1 per Ray actor)",
    )
    workers.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run the workers as Ray actors: on a local cluster (no ADDRESS), the cluster this "
        "machine joined ('auto') or at HOST:PORT (needs: pip install ray)",
    )
    _sp_option(
        workers,
        ". Every clip in turn on all N processes, e.g. torchrun --nproc-per-node 2 -m anytalker_core batch "
        "jobs.json ... --sp 2; the first process writes the videos and the report. Not with --ray, --devices or "
        "--workers",
    )


def _batch_setup(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The model spec and every job's defaults, from the flags; each bad flag fails here, before any work."""
    import random

    from .batch import ModelSpec
    from .pipeline import MAX_AREA

    _check_render_flags(args)
    _check_number(args.workers, "--workers", 1)
    _check_number(args.cpus_per_worker, "--cpus-per-worker", 1)
    if args.demo_models:
        spec = ModelSpec(demo_seed=0)
    else:
        files = (("--dit", args.dit, False), ("--wav2vec2", args.wav2vec2, False),
                 ("--text-encoder", args.text_encoder, False), ("--tokenizer", args.tokenizer, True),
                 ("--image-encoder", args.image_encoder, False), ("--vae", args.vae, False),
                 ("--dit-config", args.dit_config, True))  # fmt: skip
        for flag, value, optional in files:
            if value is None and not optional:
                raise ValueError(f"{flag} is required (or --demo-models to try the batch on tiny random models)")
            _check_model_file(flag, value, optional)
        absolute = lambda v: str(Path(v).expanduser().resolve()) if v else None  # noqa: E731 - the same on every worker
        spec = ModelSpec(
            dit=absolute(args.dit), wav2vec2=absolute(args.wav2vec2), text_encoder=absolute(args.text_encoder),
            image_encoder=absolute(args.image_encoder), vae=absolute(args.vae), tokenizer=absolute(args.tokenizer),
            dit_config=absolute(args.dit_config), dtype=args.dtype,
        )  # fmt: skip
    seed = random.randint(0, 2**31 - 1) if args.seed is None else args.seed
    defaults = {
        "mode": args.mode, "num_frames": args.frames, "seed": seed, "steps": args.steps, "guidance": args.guidance,
        "audio_guidance": args.audio_guidance, "shift": args.shift, "solver": args.solver,
        "size": _parse_size(args.size), "max_area": args.max_area or MAX_AREA, "negative_prompt": args.negative_prompt,
        "face_backend": args.face_backend, "window": args.window, "motion_frames": args.motion_frames,
        "color_anchor": not args.no_color_anchor,
    }  # fmt: skip
    return spec, defaults


def _batch_devices(args: argparse.Namespace) -> list[str]:
    """One device per local worker: ``--devices 0,1`` -> cuda:0, cuda:1; else ``--workers`` copies of --device."""
    if args.devices:
        devices = []
        for part in args.devices.split(","):
            name = part.strip() if not part.strip().isdigit() else f"cuda:{part.strip()}"
            _check_device(name)
            devices.append(name)
        if args.workers is not None and args.workers != len(devices):
            raise ValueError(f"--workers {args.workers} but --devices names {len(devices)}; give one of them")
        return devices
    _check_device(args.device)
    return [args.device] * (args.workers or 1)


def _check_batch_sp(args: argparse.Namespace) -> None:
    """``batch --sp N`` renders one clip at a time on the N processes torchrun started: the flags that choose other
    workers cannot go with it."""
    n = args.sp
    if args.ray is not None:
        raise ValueError(f"--sp {n} renders each clip on the {n} processes torchrun started, --ray spreads whole clips "
                         "over Ray actors: use one of them (--ray for many clips, --sp for clips too slow or too big "
                         "for one GPU)")  # fmt: skip
    if args.devices:
        raise ValueError(f"--devices gives each local worker its own GPU, but with --sp {n} each of the {n} "
                         "processes takes the GPU of its LOCAL_RANK: drop --devices (choose the GPUs with "
                         "CUDA_VISIBLE_DEVICES)")  # fmt: skip
    if args.workers not in (None, 1):
        raise ValueError(f"--workers {args.workers} renders several clips at once, but with --sp {n} every clip uses "
                         f"all {n} processes: drop --workers")  # fmt: skip


def _batch_pool(args: argparse.Namespace, spec: Any) -> Any:
    """A function that makes the workers: Ray actors, local processes, this process, or (``--sp N``) this process
    leading the other ranks."""
    import os

    from .batch import InProcess, Processes

    offload, overwrite = not args.no_offload, args.overwrite
    if args.sp != 1:
        from .batch.ranks import LeadingPool

        _check_device(args.device)
        return lambda: LeadingPool(spec, args.device, offload=offload, overwrite=overwrite, cpus=args.cpus_per_worker)
    if args.ray is not None:
        if args.devices:
            raise ValueError("--devices is for workers on this machine; with --ray, Ray gives each actor its own GPU")
        from .batch.cluster import RayPool

        gpu = args.device != "cpu" if args.device is not None else None
        address = None if args.ray == "local" else args.ray
        return lambda: RayPool(spec, address=address, workers=args.workers, gpu=gpu, cpus=args.cpus_per_worker or 1,
                               offload=offload, overwrite=overwrite)  # fmt: skip
    devices = _batch_devices(args)
    if len(devices) == 1:
        return lambda: InProcess(spec, devices[0], offload=offload, overwrite=overwrite, cpus=args.cpus_per_worker)
    cpus = args.cpus_per_worker or max(1, (os.cpu_count() or 1) // len(devices))
    return lambda: Processes(spec, devices, cpus=cpus, offload=offload, overwrite=overwrite)


def _batch(args: argparse.Namespace) -> int:
    """The batch; with ``--sp N`` on each of the N processes: rank 0 runs it, the others follow (``batch/ranks.py``)."""
    if args.sp != 1:
        _check_batch_sp(args)
    if args.ray is None and args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    spec, defaults = _batch_setup(args)
    if args.sp == 1:
        return _batch_run(args, spec, defaults)
    from .batch.ranks import follow, lead

    with _ranks(args) as rank:
        if rank:  # render what rank 0 sends, into a scratch folder; print nothing
            _check_device(args.device)
            with contextlib.redirect_stdout(io.StringIO()):
                follow(spec, args.device, offload=not args.no_offload, cpus=args.cpus_per_worker)
            return 0
        return _batch_run(args, spec, defaults, lead)


def _batch_run(args: argparse.Namespace, spec: Any, defaults: dict[str, Any],
               around: Callable[[], Any] = contextlib.nullcontext) -> int:  # fmt: skip
    """Run the batch here (rank 0 with ``--sp``), inside ``around()``; print the summary; the exit code."""
    from .batch import BatchError, run_batch

    make_pool = _batch_pool(args, spec)
    if args.seed is None:
        print(f"seed {defaults['seed']} for every job without its own (pass --seed to choose)", file=sys.stderr)
    try:
        with around():
            report = run_batch(args.jobs, args.out, make_pool, defaults=defaults, overwrite=args.overwrite,
                               face_backend=args.face_backend)  # fmt: skip
    except BatchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopped: the finished videos are kept; run the same command again to render the rest", file=sys.stderr)
        return 130
    print(report.summary())
    print(f"report: {Path(report.out_dir) / 'batch_report.json'}")
    return 0 if report.ok else 1


def _inspect(args: argparse.Namespace) -> int:
    report = inspect_checkpoint(args.checkpoint, args.config)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        _print_report(report)
    return 1 if report["problems"] else 0


# ------------------------------------------------------------------------------------------------- evaluate


# fmt: off
def _evaluate_parser(commands: Any) -> None:
    from .people.faces import BACKENDS

    judge = commands.add_parser("evaluate", help="judge a talking video: which voice drives which face, and how "
                                "alive the listeners are (the paper's interactivity metric)")
    judge.add_argument("video", help="the video to judge (mp4, mov, mkv, webm)")
    judge.add_argument("--audio", action="append", default=None, metavar="TRACK",
                       help="one per person, in the order of the faces left to right that the voices should drive "
                       "(repeat the flag); 'none' for a listener. Each track must cover the video")
    judge.add_argument("--speaking", default=None, metavar="JSON",
                       help="speaking intervals: a JSON file with [[start_s, end_s], ...] per person, or the "
                       "reference's speaker_duration.json (its entry for the video's file name is used); default: "
                       "from each track's loudness")
    judge.add_argument("--fps", type=float, default=None, help="frames per second (default: the file's own)")
    judge.add_argument("--out", default=None, help="where the plot and the report go: OUT.png and OUT.json "
                       "(default: beside the video, <name>_evaluate.png / .json)")
    judge.add_argument("--overwrite", action="store_true", help="replace existing output files")
    judge.add_argument("--face-backend", default="auto", choices=BACKENDS,
                       help="face detector (default: InsightFace when installed, else YuNet, shipped with the pack)")
    judge.add_argument("--face-threshold", type=float, default=None, help="face detection threshold 0..1 "
                       "(default: the backend's)")
# fmt: on


def _evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .judge import evaluate
    from .judge.plot import plot
    from .pipeline.writer import write_png

    video = Path(args.video).expanduser()
    if not video.is_file():
        raise FileNotFoundError(f"VIDEO: file not found: {args.video}")
    out = Path(args.out).expanduser() if args.out else video.with_name(video.stem + "_evaluate")
    png, report_path = out.with_name(out.name + ".png"), out.with_name(out.name + ".json")
    for path in (png, report_path):
        if path.exists() and not args.overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite or choose another --out")
    audio = None if args.audio is None else [None if a.lower() in ("none", "-", "listener") else a for a in args.audio]
    for i, track in enumerate(audio or []):
        if track is not None and not Path(track).expanduser().is_file():
            raise FileNotFoundError(f"--audio {i + 1}: file not found: {track}")
    bar = tqdm(total=None, desc="judging", unit="frame", file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    try:
        report = evaluate(video, audio, args.speaking, args.fps, face_backend=args.face_backend,
                          face_threshold=args.face_threshold, progress=progress)  # fmt: skip
    finally:
        bar.close()
    print(report.table())
    write_png(png, plot(report), overwrite=args.overwrite)
    report_path.write_text(report.to_json() + "\n")
    print(f"wrote {png} (per person: mouth opening and voice loudness over time, speaking shaded, listener motion)")
    print(f"wrote {report_path} (the report)")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.command in ("demo", "generate", "batch"):
            from .pipeline.memory import lean_heap

            lean_heap()  # our own process: keep long videos at constant memory
        if args.command == "generate" and args.device is None:
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        command = {"demo": _demo, "generate": _generate, "batch": _batch, "inspect": _inspect, "evaluate": _evaluate}[
            args.command
        ]
        from .people.audio import AudioError
        from .people.faces import FaceError
        from .people.routing import RoutingError
        from .sampling import SamplingCancelled

        try:
            return command(args)
        except SamplingCancelled:
            print("\ncancelled: nothing was written", file=sys.stderr)
            return 130
        except (CheckpointError, AudioError, FaceError, RoutingError, FileNotFoundError, FileExistsError,
                IsADirectoryError, NotADirectoryError, PermissionError, ValueError, TypeError) as err:  # fmt: skip
            print(f"error: {err}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:  # also while torch or a model is still loading
        print("\ncancelled: nothing was written", file=sys.stderr)
        return 130

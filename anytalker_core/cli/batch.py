"""``batch JOBS.json``: every job of a job file on local workers, a Ray cluster, or each clip on all ``--sp`` ranks."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from .flags import (
    check_device,
    check_model_file,
    check_number,
    check_render_flags,
    device_options,
    parse_size,
    sp_option,
    window_options,
)
from .render import ranks


def add_batch_parser(commands: Any) -> None:
    from ..people.faces import BACKENDS
    from ..people.speakers import MODES
    from ..sampling import SOLVER_NAMES
    from ..sampling.defaults import GUIDANCE

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
    window_options(batch)
    workers = batch.add_argument_group("workers")
    device_options(workers, "cuda, cpu... (default: cuda when available)")
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
    sp_option(
        workers,
        ". Every clip in turn on all N processes, e.g. torchrun --nproc-per-node 2 -m anytalker_core batch "
        "jobs.json ... --sp 2; the first process writes the videos and the report. Not with --ray, --devices or "
        "--workers",
    )


def setup(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The model spec and every job's defaults, from the flags; each bad flag fails here, before any work."""

    from ..batch import ModelSpec
    from ..pipeline import MAX_AREA

    check_render_flags(args)
    check_number(args.workers, "--workers", 1)
    check_number(args.cpus_per_worker, "--cpus-per-worker", 1)
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
            check_model_file(flag, value, optional)
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
        "size": parse_size(args.size), "max_area": args.max_area or MAX_AREA, "negative_prompt": args.negative_prompt,
        "face_backend": args.face_backend, "window": args.window, "motion_frames": args.motion_frames,
        "color_anchor": not args.no_color_anchor,
    }  # fmt: skip
    return spec, defaults


def local_devices(args: argparse.Namespace) -> list[str]:
    """One device per local worker: ``--devices 0,1`` -> cuda:0, cuda:1; else ``--workers`` copies of --device."""
    if args.devices:
        devices = []
        for part in args.devices.split(","):
            name = part.strip() if not part.strip().isdigit() else f"cuda:{part.strip()}"
            check_device(name)
            devices.append(name)
        if args.workers is not None and args.workers != len(devices):
            raise ValueError(f"--workers {args.workers} but --devices names {len(devices)}; give one of them")
        return devices
    check_device(args.device)
    return [args.device] * (args.workers or 1)


def check_sp(args: argparse.Namespace) -> None:
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


def pool_factory(args: argparse.Namespace, spec: Any) -> Any:
    """A function that makes the workers: Ray actors, local processes, this process, or (``--sp N``) this process
    leading the other ranks."""

    from ..batch import InProcess, Processes

    offload, overwrite = not args.no_offload, args.overwrite
    if args.sp != 1:
        from ..batch.ranks import LeadingPool

        check_device(args.device)
        return lambda: LeadingPool(spec, args.device, offload=offload, overwrite=overwrite, cpus=args.cpus_per_worker)
    if args.ray is not None:
        if args.devices:
            raise ValueError("--devices is for workers on this machine; with --ray, Ray gives each actor its own GPU")
        from ..batch.cluster import RayPool

        gpu = args.device != "cpu" if args.device is not None else None
        address = None if args.ray == "local" else args.ray
        return lambda: RayPool(spec, address=address, workers=args.workers, gpu=gpu, cpus=args.cpus_per_worker or 1,
                               offload=offload, overwrite=overwrite)  # fmt: skip
    devices = local_devices(args)
    if len(devices) == 1:
        return lambda: InProcess(spec, devices[0], offload=offload, overwrite=overwrite, cpus=args.cpus_per_worker)
    cpus = args.cpus_per_worker or max(1, (os.cpu_count() or 1) // len(devices))
    return lambda: Processes(spec, devices, cpus=cpus, offload=offload, overwrite=overwrite)


def batch_command(args: argparse.Namespace) -> int:
    """The batch; with ``--sp N`` on each of the N processes: rank 0 runs it, the others follow (``batch/ranks.py``)."""
    if args.sp != 1:
        check_sp(args)
    if args.ray is None and args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    spec, defaults = setup(args)
    if args.sp == 1:
        return render_batch(args, spec, defaults)
    from ..batch.ranks import follow, lead

    with ranks(args) as rank:
        if rank:  # render what rank 0 sends, into a scratch folder; print nothing
            check_device(args.device)
            with contextlib.redirect_stdout(io.StringIO()):
                follow(spec, args.device, offload=not args.no_offload, cpus=args.cpus_per_worker)
            return 0
        return render_batch(args, spec, defaults, lead)


def render_batch(args: argparse.Namespace, spec: Any, defaults: dict[str, Any],
               around: Callable[[], Any] = contextlib.nullcontext) -> int:  # fmt: skip
    """Run the batch here (rank 0 with ``--sp``), inside ``around()``; print the summary; the exit code."""
    from ..batch import BatchError, run_batch

    make_pool = pool_factory(args, spec)
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

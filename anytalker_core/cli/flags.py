"""The command line's shared flags: parsing, checking (each failure names its flag), and the option groups several
commands add (long videos, ``--sp``)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from .. import timeline

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def binding_path(out: Path) -> Path:
    return out.with_name(out.stem + "_binding.png")


def check_outputs(out: Path, overwrite: bool) -> None:
    """Fail before any work when a result would overwrite a file."""
    for path in (out, binding_path(out)):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite or choose another --out")
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out must end in .mp4, got {out.name!r}")


def parse_faces(text: str | None) -> list[list[float]] | None:
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


def parse_size(text: str | None) -> tuple[int, int] | None:
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


def parse_offsets(text: str | None, people: int) -> list[float] | None:
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


def check_device(text: str) -> None:
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


def check_number(value: float | None, flag: str, minimum: float, inclusive: bool = True) -> None:
    if value is None:
        return
    ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
    if not ok:
        raise ValueError(f"{flag} is {value}; expected a number {'>=' if inclusive else '>'} {minimum:g}")


def check_model_file(flag: str, value: str | None, optional: bool = False) -> None:
    from ..weights import file_kind

    if value is None and optional:
        return
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{flag}: not found: {value}")
    kind = file_kind(path) if path.is_file() and path.suffix.lower() != ".json" else None
    if kind is not None:
        raise ValueError(f"{flag}: {value} is {kind}, not a model file")


def check_windows(args: argparse.Namespace) -> None:
    timeline.check_frames(args.window, "--window", minimum=5)
    timeline.check_frames(args.motion_frames, "--motion-frames")
    if args.motion_frames >= args.window:
        raise ValueError(f"--motion-frames ({args.motion_frames}) must be shorter than --window ({args.window})")


def check_out(out: Path, overwrite: bool) -> None:
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out: {parent} is a file, not a folder")
            break
    check_outputs(out, overwrite)


def check_render_flags(args: argparse.Namespace) -> None:
    """The sampling, size and timeline flags ``generate`` and ``batch`` share; each failure names its flag."""
    check_number(args.steps, "--steps", 1)
    check_number(args.shift, "--shift", 0, inclusive=False)
    check_number(args.guidance, "--guidance", 0)
    check_number(args.audio_guidance, "--audio-guidance", 0)
    check_number(args.max_area, "--max-area", 1)
    if args.frames is not None:
        timeline.check_frames(args.frames, "--frames")
    check_windows(args)


def window_options(parser: argparse.ArgumentParser) -> None:
    from ..pipeline.windows import MOTION_FRAMES, WINDOW

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


def device_options(group: Any, device_help: str) -> None:
    """``--device``, ``--dtype`` and ``--no-offload``, as ``generate`` and ``batch`` take them."""
    group.add_argument("--device", default=None, help=device_help)
    group.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                       help="DiT weights dtype (default: bf16 on a GPU, fp32 on the CPU)")  # fmt: skip
    group.add_argument("--no-offload", action="store_true", help="keep every model on the device (more memory)")


def sp_option(parser: Any, more: str = "") -> None:
    parser.add_argument("--sp", type=int, default=1, metavar="N",
                        help="split every model call by latent frames over N processes (GPUs) started with "
                        "torchrun --nproc-per-node N; N must divide the model's heads (1.3B: 2, 3, 4, 6)"
                        + more)  # fmt: skip

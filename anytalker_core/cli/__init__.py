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

The package: :mod:`.render` (``demo``, ``generate``, ``--sp``), :mod:`.batch`, :mod:`.checkpoint` (``inspect``),
:mod:`.evaluate`; :mod:`.flags` and :mod:`.console` are what they share.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ..weights import CheckpointError
from . import batch, checkpoint, evaluate, render
from .checkpoint import inspect_checkpoint
from .render import DEMO_OUT

__all__ = ["DEMO_OUT", "inspect_checkpoint", "main"]


def parser() -> argparse.ArgumentParser:
    """The whole command line: each command's flags come from its module."""
    root = argparse.ArgumentParser(
        prog="python -m anytalker_core", description="AnyTalker: talking videos of several people from one picture."
    )
    commands = root.add_subparsers(dest="command", required=True)
    render.add_parsers(commands)
    batch.add_batch_parser(commands)
    checkpoint.add_parser(commands)
    evaluate.add_evaluate_parser(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.command in ("demo", "generate", "batch"):
            from ..pipeline.memory import lean_heap

            lean_heap()  # our own process: keep long videos at constant memory
        if args.command == "generate" and args.device is None:
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        command = {
            "demo": render.demo_command, "generate": render.generate_command, "batch": batch.batch_command,
            "inspect": checkpoint.inspect_command, "evaluate": evaluate.evaluate_command,
        }[args.command]  # fmt: skip
        from ..people.audio import AudioError
        from ..people.faces import FaceError
        from ..people.routing import RoutingError
        from ..sampling import SamplingCancelled

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

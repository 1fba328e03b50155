"""Long-video benchmark: peak memory and time for 1, 4 and 12 windows, each in a fresh process.

    python benchmarks/bench_long.py [--config tiny|real-blocks] [--windows 1 4 12] [--steps 2]

Prints JSON: per window count the wall time, the peak resident memory of the process, and the ratios against one
window (the long-video issue asks for peak(12) <= 1.25 x peak(1) and time growing linearly).

- ``tiny``: the demo's models (``anytalker_core.demo``), 192x128 video, windows of 81 frames, 5 motion frames.
- ``real-blocks``: a DiT with the 1.3B model's block sizes (dim 1536, 12 heads, ffn 8960; 2 blocks) and the real
  text (4096), image (1280) and audio (12 x 768) widths, fed by the demo's tiny encoders at those widths
  (``demo.tiny_models(dit_config=...)``); 128x224 video, windows of 17 frames (the real blocks at 81 frames take
  hours on a CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def real_block_models():
    """The demo's tiny encoders at the real widths, around a DiT with the 1.3B model's block sizes (2 blocks)."""
    from anytalker_core import AnyTalkerConfig
    from anytalker_core.demo import tiny_models

    return tiny_models(dit_config=AnyTalkerConfig(num_layers=2))


def child(config: str, windows: int, steps: int, out: str) -> None:
    """One measured run: render ``windows`` windows and print JSON (time, peak RSS)."""
    import torch

    from anytalker_core import demo
    from anytalker_core.cli.render import conversation
    from anytalker_core.pipeline import render
    from anytalker_core.pipeline.memory import lean_heap

    lean_heap()  # as the CLI does
    torch.set_num_threads(2)
    if config == "tiny":
        models, window, size = demo.tiny_models(), 81, (128, 192)
    else:
        models, window, size = real_block_models(), 17, (128, 224)
    motion = 5
    frames = window + (windows - 1) * (window - motion)
    audio, _ = conversation(frames / 24 + 0.1)
    start = time.perf_counter()
    result = render(models, demo.IMAGE, audio, demo.PROMPT, out, overwrite=True, window=window, motion_frames=motion,
                    mode="pad", num_frames=frames, size=size, steps=steps, seed=0, device="cpu")  # fmt: skip
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    sys.stdout.write(json.dumps({"windows": result.windows_done, "frames": result.frames, "seconds": round(seconds, 2),
                                 "peak_mib": round(peak, 1)}) + "\n")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=("tiny", "real-blocks"), default="tiny")
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 4, 12])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="/tmp/anytalker_bench_long.mp4")
    args = parser.parse_args()
    if args.child is not None:
        child(args.config, args.child, args.steps, args.out)
        return 0
    runs = []
    for n in args.windows:
        cmd = [sys.executable, __file__, "--config", args.config, "--steps", str(args.steps), "--child", str(n),
               "--out", args.out]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        sys.stderr.write(f"{n} window(s): {runs[-1]}\n")
    base = runs[0]
    report = {
        "config": args.config, "steps": args.steps, "runs": runs,
        "peak_ratio_vs_first": [round(r["peak_mib"] / base["peak_mib"], 3) for r in runs],
        "seconds_per_window": [round(r["seconds"] / r["windows"], 2) for r in runs],
    }  # fmt: skip
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

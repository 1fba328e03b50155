"""Audio memory of a long render: peak resident memory for a 20 s and a 10 min two-person clip, each in a fresh process.

    python benchmarks/bench_audio_memory.py [--seconds 20 600] [--mode pad|concat]

What a long render (``at.render``, ``python -m anytalker_core generate`` past one window) does for the audio, and
nothing else: ``arrange_speakers(..., chunk_frames=CHUNK_FRAMES)`` on two person tracks, then every window's
features fetched in order (windows of 81 frames with 5 motion frames, ``pipeline.windows.plan_windows``). The
encoder: wav2vec2-base's architecture (``transformers.Wav2Vec2Model(Wav2Vec2Config())``) with random weights from
seed 0, 2 CPU threads. The tracks: the demo voices (``anytalker_core/demo_assets/left.wav`` / ``right.wav``,
16 kHz) repeated to ``--seconds``, given as ``(waveform, 16000)``. ``pad`` mode (default): both people talk over
the whole clip, so both tracks are encoded for its whole length (the most work); ``concat``: they take turns.

Prints JSON: per case the clip frames, the seconds spent arranging the speakers and reading the windows, the peak
resident memory (``ru_maxrss``, the process's high-water mark) after loading the model, after arranging and after
the windows, and the ratio of the longest case's peak to the first's (the issue's goal: 10 min within 1.25x of
20 s). As ``benchmarks/bench_long.py``, the process serves large buffers with ``mmap`` (``lean_heap``), as the CLI
does.
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
ASSETS = REPO / "anytalker_core" / "demo_assets"


def _peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB -> MiB on Linux


def child(seconds: float, mode: str) -> None:
    """One measured case: print JSON with its times and peaks."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from anytalker_core.people.audio import load_audio
    from anytalker_core.people.audio_features import CHUNK_FRAMES, load_audio_encoder
    from anytalker_core.people.speakers import arrange_speakers
    from anytalker_core.pipeline.memory import lean_heap
    from anytalker_core.pipeline.windows import MOTION_FRAMES, WINDOW, plan_windows

    lean_heap()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    encoder = load_audio_encoder(Wav2Vec2Model(Wav2Vec2Config()).eval())
    samples = int(seconds * 16000)
    tracks = []
    for name in ("left.wav", "right.wav"):
        voice = load_audio(ASSETS / name)
        tracks.append((voice.repeat(samples // voice.shape[0] + 1)[:samples].clone(), 16000))
    del voice
    loaded = _peak_mib()

    start = time.perf_counter()
    layout = arrange_speakers(tracks, encoder, mode=mode, chunk_frames=CHUNK_FRAMES)
    arranged, arranged_peak = time.perf_counter() - start, _peak_mib()

    start = time.perf_counter()
    plan = plan_windows(layout.num_frames, WINDOW, MOTION_FRAMES)
    checksum = 0.0
    for window in plan:
        if hasattr(layout, "window_features"):
            audio = layout.window_features(window.start, window.length)
        else:  # before issue 14: the whole clip's features, sliced
            audio = [f[window.start : window.start + window.length] for f in layout.features]
        assert all(a.shape[:2] == (window.length, 5) for a in audio)
        checksum += float(sum(a[window.length // 2].double().abs().sum() for a in audio))
        del audio
    windows = time.perf_counter() - start
    sys.stdout.write(json.dumps({
        "seconds": seconds, "frames": layout.num_frames, "windows": len(plan),
        "arrange_s": round(arranged, 1), "windows_s": round(windows, 1),
        "peak_after_model_mib": loaded, "peak_after_arrange_mib": arranged_peak, "peak_mib": _peak_mib(),
        "checksum": round(checksum, 3),
    }) + "\n")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[20.0, 600.0])
    parser.add_argument("--mode", choices=("pad", "concat"), default="pad")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.mode)
        return 0
    runs = []
    for seconds in args.seconds:
        cmd = [sys.executable, __file__, "--mode", args.mode, "--child", str(seconds)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"the {seconds} s case failed (exit {done.returncode})")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        sys.stderr.write(f"{seconds} s: {runs[-1]}\n")
    base = runs[0]["peak_mib"]
    report = {
        "mode": args.mode, "runs": runs,
        "peak_ratio_vs_first": [round(r["peak_mib"] / base, 3) for r in runs],
    }  # fmt: skip
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

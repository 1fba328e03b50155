"""Rendering many clips: one ``generate`` process per clip vs one ``batch`` (models loaded once) vs ``batch
--workers 2`` (two local processes) vs ``batch --ray`` (two actors on a local Ray cluster).

Every run renders the same N jobs (the demo's picture and voices, one seed per job) with the demo's tiny models saved
as model files in the formats users have, so ``generate`` and ``batch`` load exactly the same files. Prints JSON
(wall seconds per way, and ratios to the one-process-per-clip way) and a summary on stderr.

    python benchmarks/bench_batch.py --jobs 4 --steps 4 --frames 17 --rounds 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def save_tiny_models(folder: Path) -> list[str]:
    """The demo's tiny models as files (DiT .pth + config, wav2vec2 folder, umT5 / CLIP / VAE safetensors); the
    model flags of ``generate`` and ``batch``."""
    import sentencepiece
    import torch
    from safetensors.torch import save_file

    from anytalker_core import demo

    models = demo.tiny_models(seed=0)
    cfg = models.dit.config
    torch.save({"model": models.dit.state_dict()}, folder / "anytalker.pth")
    (folder / "config.json").write_text(json.dumps({k: getattr(cfg, k) for k in cfg.__dataclass_fields__}))
    models.audio_encoder.model.save_pretrained(folder / "wav2vec2")
    spiece = io.BytesIO()
    sentences = ["two news anchors report the weather in a studio", "a man and a woman are talking"] * 10
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=spiece, vocab_size=40, minloglevel=2, pad_id=0, eos_id=1,
        unk_id=2, bos_id=-1, hard_vocab_limit=False,
    )  # fmt: skip
    text = {k: v for k, v in models.text_encoder.model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    text["spiece_model"] = torch.frombuffer(bytearray(spiece.getvalue()), dtype=torch.uint8)
    save_file(text, str(folder / "umt5_xxl_fp16.safetensors"))
    (folder / "clip_vision").mkdir()
    tower = {"vision_model." + k: v.contiguous() for k, v in models.image_encoder.model.state_dict().items()}
    save_file(tower, str(folder / "clip_vision" / "clip_vision_h.safetensors"))
    (folder / "clip_vision" / "config.json").write_text(json.dumps({"num_attention_heads": 4}))
    save_file({k: v.contiguous() for k, v in models.vae.model.state_dict().items()}, str(folder / "vae.safetensors"))
    return [
        "--dit", str(folder / "anytalker.pth"), "--dit-config", str(folder / "config.json"),
        "--wav2vec2", str(folder / "wav2vec2"), "--text-encoder", str(folder / "umt5_xxl_fp16.safetensors"),
        "--image-encoder", str(folder / "clip_vision" / "clip_vision_h.safetensors"),
        "--vae", str(folder / "vae.safetensors"),
    ]  # fmt: skip


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "anytalker_core", *argv], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", default="96x64")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are reported)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray run")
    args = parser.parse_args()
    from anytalker_core import demo

    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        model_flags = save_tiny_models(work)
        audio = [str(a) for a in demo.AUDIO]
        jobs = {
            f"clip{i}": {"image_path": str(demo.IMAGE), "caption": demo.PROMPT, "seed": i, "audio_list": audio}
            for i in range(args.jobs)
        }
        (work / "jobs.json").write_text(json.dumps(jobs))
        common = ["--steps", str(args.steps), "--frames", str(args.frames), "--size", args.size, "--device", "cpu",
                  "--mode", "concat", *model_flags]  # fmt: skip
        batch = ["batch", str(work / "jobs.json"), *common]
        voices = [flag for a in demo.AUDIO for flag in ("--audio", str(a))]

        def per_clip(out: Path) -> float:
            total = 0.0
            for i in range(args.jobs):
                clip = ["--prompt", demo.PROMPT, "--seed", str(i), "--out", str(out / f"clip{i}.mp4")]
                total += timed(["generate", "--image", str(demo.IMAGE), *voices, *clip, *common])
            return total

        ways = {
            "generate, one process per clip": per_clip,
            "batch, 1 worker": lambda out: timed([*batch, "--out", str(out)]),
            "batch --workers 2 (local processes)": lambda out: timed([*batch, "--out", str(out), "--workers", "2"]),
            "batch --ray, 2 actors": lambda out: timed([*batch, "--out", str(out), "--ray", "--workers", "2"]),
        }
        if args.no_ray:
            del ways["batch --ray, 2 actors"]
        names = list(ways)
        rounds: list[dict[str, float]] = []
        for r in range(args.rounds):  # interleaved, each round in another order: the machine's speed drifts
            order = names[r % len(names) :] + names[: r % len(names)]
            rounds.append({name: ways[name](work / f"r{r}_{k}") for k, name in enumerate(order)})
            print(f"round {r + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in rounds[-1].items()), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = "generate, one process per clip"
    seconds = {k: statistics.median(r[k] for r in rounds) for k in names}
    ratios = {k: statistics.median(r[k] / r[base] for r in rounds) for k in names}  # paired within a round
    result = {
        "jobs": args.jobs, "steps": args.steps, "frames": args.frames, "size": args.size, "cpus": os.cpu_count(),
        "rounds": args.rounds, "median_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "time_vs_generate_per_clip": {k: round(v, 2) for k, v in ratios.items()},
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    for name in names:
        print(f"{name:40s} {seconds[name]:7.1f} s  ({ratios[name]:.2f} x, median of paired ratios)", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Benchmark the two caches of a sampling run: the DiT's context cache and the host's step caches.

1. **Context cache** (any Python with torch): at ``bench_dit.py``'s mid config (real 1.3B block sizes, 2 blocks,
   latent ``[1,16,6,32,56]``, fp32, 2 threads) for 1, 2 and 3 identities, the time of one forward with the
   conditioning's keys and values computed (every step without the cache) against one reusing them (every step
   after the first with it), in ``--rounds`` interleaved rounds; the saving per step is ``1 - cached / plain``
   (median of the per-round ratios), and the same from the counted FLOPs (machine-independent). Also the
   cache's bytes per conditioning, per block (what 30 blocks of the real model would hold), and the largest
   difference between the two predictions.
2. **Step caches** (only with ``--comfy PATH``, run with that host's Python): one clip sampled by the AnyTalker
   Sampler in the real host at the real 1.3B block sizes (2 blocks, 9 frames at 128x224, 2 identities,
   ``--steps`` steps, guidance 4.5), four ways: no cache at all, the context cache (the default), and EasyCache
   and LazyCache at their nodes' default settings (threshold 0.2, start 0.15, end 0.95) on top. For each: the
   time per clip, the speedup over no cache, the steps skipped, and how far the latent moved from the uncached
   one (``|a - b| / |b|``, L2, and the largest element).

Random weights (normal 0.02): a trained model's step-to-step changes differ, so the steps EasyCache skips and
the drift are this model's, not a trained one's. The script prints JSON on stdout and a summary on stderr.

Usage::

    python benchmarks/bench_cache.py                                   # context cache only
    HOST/venv/bin/python benchmarks/bench_cache.py --comfy HOST/ComfyUI  # both
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(BENCH_DIR), str(REPO_ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import bench_dit  # noqa: E402  (the mid config, its inputs and weights)

REAL_BLOCKS = 30  # blocks of the real 1.3B model, for the cache size it would need
HOST_LATENT = (1, 16, 3, 16, 28)  # 9 video frames at 128x224
HOST_IDS = 2
STEP_CACHE_DEFAULTS = dict(reuse_threshold=0.2, start_percent=0.15, end_percent=0.95, verbose=False)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------------------- 1. context cache


def context_cache(ids: list[int], rounds: int, seed: int) -> dict:
    import anytalker_core as at

    model = at.AnyTalkerDiT(at.AnyTalkerConfig(**bench_dit.MID_CONFIG)).float().eval()
    bench_dit.init_weights(model, seed)
    out = {"config": dict(bench_dit.MID_CONFIG, latent=list(bench_dit.LATENT_SHAPE)), "by_ids": {}}
    for n in ids:
        inputs = bench_dit.make_inputs(n, "faces", seed, "cpu")
        kwargs = dict(text=inputs.text, clip=inputs.clip, y=inputs.y, audio=inputs.audio, faces=inputs.faces,
                      masks=inputs.masks)  # fmt: skip

        def forward():
            with torch.no_grad():
                return model(inputs.x, inputs.t, **kwargs)

        plain_out = forward()
        plain_flops = bench_dit.count_flops(forward)
        with model.context_cache(1 << 40) as cache:
            forward()  # the first step fills it
            cached_out = forward()
            cached_flops = bench_dit.count_flops(forward)
            plain, cached = [], []
            for r in range(rounds):  # alternate which goes first
                first, second = (plain, cached) if r % 2 == 0 else (cached, plain)
                for times in (first, second):
                    if times is plain:
                        previous, model._context_cache = model._context_cache, None
                        times.append(_timed(forward))
                        model._context_cache = previous
                    else:
                        times.append(_timed(forward))
        ratios = [c / p for p, c in zip(plain, cached)]
        per_block = cache.bytes / bench_dit.MID_CONFIG["num_layers"]
        out["by_ids"][str(n)] = {
            "plain_s": [round(t, 3) for t in plain],
            "cached_s": [round(t, 3) for t in cached],
            "cached_over_plain": round(statistics.median(ratios), 3),
            "saving_per_step": round(1 - statistics.median(ratios), 3),
            "gflop_plain": round(plain_flops / 1e9, 1),
            "gflop_cached": round(cached_flops / 1e9, 1),
            "flop_saving_per_step": round(1 - cached_flops / plain_flops, 3),
            "cache_mib": round(cache.bytes / 2**20, 1),
            "cache_mib_per_block": round(per_block / 2**20, 2),
            "cache_mib_at_30_blocks": round(per_block * REAL_BLOCKS / 2**20, 0),
            "max_abs_difference": float((cached_out - plain_out).abs().max()),
        }
        _log(f"context cache, {n} identities: {out['by_ids'][str(n)]}")
    return out


# ------------------------------------------------------------------------------------------ 2. step caches


class _SkipLog(logging.Handler):
    """Keeps the host's "<name> - skipped N/M steps" lines."""

    pattern = re.compile(r"(EasyCache|LazyCache) - skipped (\d+)/(\d+) steps")

    def __init__(self):
        super().__init__()
        self.skipped: list[tuple[int, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = self.pattern.search(record.getMessage())
        if match:
            self.skipped.append((int(match.group(2)), int(match.group(3))))


def _host(comfy_dir: Path):
    """Import the host (CPU) and the pack inside it; returns the pack's ``nodes`` modules."""
    sys.path.insert(0, str(comfy_dir))
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    name = "AnyTalker_bench"
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])  # fmt: skip
    sys.modules[name] = importlib.util.module_from_spec(spec)
    return (importlib.import_module(f"{name}.nodes.{m}") for m in ("model", "sampling", "host"))


def _host_conditioning(host, seed: int):
    batch, _, frames, height, width = HOST_LATENT
    gen = torch.Generator().manual_seed(seed)
    audio = torch.randn(batch, HOST_IDS, 4 * (frames - 1) + 1, 5, 12, 768, generator=gen)
    masks = torch.stack([bench_dit.face_box_mask(i, HOST_IDS, frames, height // 2, width // 2) for i in
                         range(HOST_IDS)], dim=1)  # fmt: skip
    common = {
        "concat_latent_image": torch.randn(batch, 16, frames, height, width, generator=gen),
        "anytalker_y_mask": (torch.rand(batch, 4, frames, height, width, generator=gen) > 0.5).float(),
        "clip_vision_output": host.clip_vision_output(torch.randn(batch, 257, 1280, generator=gen)),
        "anytalker_faces": torch.randn(batch, HOST_IDS, 257, 1280, generator=gen),
        "anytalker_masks": masks,
    }
    text, negative_text = (torch.randn(batch, n, 4096, generator=gen) for n in (30, 12))
    positive = [[text, {**common, "anytalker_audio": audio}]]
    negative = [[negative_text, {**common, "anytalker_audio": torch.zeros_like(audio)}]]
    return positive, negative, {"samples": torch.zeros(HOST_LATENT)}


def step_caches(comfy_dir: Path, steps: int, seed: int) -> dict:
    nodes_model, nodes_sampling, host = _host(comfy_dir)
    import comfy.patcher_extension as ext
    from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode
    from safetensors.torch import save_file

    import anytalker_core as at

    dit = at.AnyTalkerDiT(at.AnyTalkerConfig(**bench_dit.MID_CONFIG)).float()
    bench_dit.init_weights(dit, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "anytalker_bench.safetensors"
        save_file({k: v.contiguous() for k, v in dit.state_dict().items()}, str(path))
        del dit
        patcher = nodes_model.load_model(str(path))
    plain = patcher.clone()
    plain.remove_wrappers_with_key(ext.WrappersMP.OUTER_SAMPLE, "anytalker_context_cache")
    variants = {
        "no cache": plain,
        "context cache": patcher,
        "EasyCache + context cache": EasyCacheNode.execute(patcher, **STEP_CACHE_DEFAULTS).result[0],
        "LazyCache + context cache": LazyCacheNode.execute(patcher, **STEP_CACHE_DEFAULTS).result[0],
    }
    positive, negative, latent = _host_conditioning(host, seed)
    skips = _SkipLog()
    logging.getLogger().addHandler(skips)
    logging.getLogger().setLevel(logging.INFO)

    def sample(model):
        out = nodes_sampling.AnyTalkerSampler.execute(model, positive, negative, latent, seed, steps, 4.5, 0, "unipc")
        return out.result[0]["samples"]

    sample(plain)  # warm-up: the model onto the device, the allocator's first buffers
    results, reference = {}, None
    for name, model in variants.items():
        skips.skipped.clear()
        start = time.perf_counter()
        samples = sample(model)
        seconds = time.perf_counter() - start
        reference = samples if reference is None else reference
        drift = (samples - reference).float()
        results[name] = {
            "seconds_per_clip": round(seconds, 1),
            "steps_skipped": skips.skipped[0][0] if skips.skipped else 0,
            "relative_l2_drift": float(drift.norm() / reference.float().norm()),
            "max_abs_drift": float(drift.abs().max()),
        }
        _log(f"step caches, {name}: {results[name]}")
    base = results["no cache"]["seconds_per_clip"]
    for entry in results.values():
        entry["speedup"] = round(base / entry["seconds_per_clip"], 2)
    return {"latent": list(HOST_LATENT), "identities": HOST_IDS, "steps": steps, "guidance": 4.5,
            "step_cache_settings": STEP_CACHE_DEFAULTS, "by_variant": results}  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", default="1,2,3", help="identity counts of the context-cache part")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds of the context cache")
    parser.add_argument("--comfy", type=Path, help="a ComfyUI checkout: also run the step-cache part in it")
    parser.add_argument("--steps", type=int, default=12, help="sampling steps of the step-cache clip")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-context", action="store_true", help="only the step-cache part")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {"machine": f"CPU, {args.threads} threads, fp32", "torch": torch.__version__}
    if not args.skip_context:
        report["context_cache"] = context_cache([int(n) for n in args.ids.split(",")], args.rounds, args.seed)
    if args.comfy:
        report["step_caches"] = step_caches(args.comfy, args.steps, args.seed)
    print(json.dumps(report, indent=2))
    lines = []
    for n, entry in report.get("context_cache", {}).get("by_ids", {}).items():
        lines.append(f"context cache, {n} identities: cached/plain forward {entry['cached_over_plain']} (saving "
                     f"{entry['saving_per_step']:.1%} per step; FLOPs {entry['flop_saving_per_step']:.1%}), "
                     f"{entry['cache_mib']} MiB for 2 blocks "
                     f"(~{entry['cache_mib_at_30_blocks']:.0f} MiB at 30), "
                     f"max diff {entry['max_abs_difference']:.1e}")  # fmt: skip
    for name, entry in report.get("step_caches", {}).get("by_variant", {}).items():
        lines.append(f"{name}: {entry['seconds_per_clip']} s per clip, speedup {entry['speedup']}x, "
                     f"{entry['steps_skipped']} steps skipped, drift L2 {entry['relative_l2_drift']:.3g}, "
                     f"max {entry['max_abs_drift']:.3g}")  # fmt: skip
    _log("\n".join(lines))


if __name__ == "__main__":
    main()

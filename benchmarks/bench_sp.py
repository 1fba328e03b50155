"""Benchmark sequence parallelism by whole latent frames (``anytalker_core/model/parallel.py``) against one process.

P processes (default 2) join ``torch.distributed``: NCCL with one GPU each when at least P GPUs are present, else
gloo on CPU. Every process builds the same model (the bench_dit "mid config": real 1.3B block sizes, 2 blocks,
random weights) and the same inputs (latent ``--latent``, ``--ids`` people). Then, in ``--runs`` rounds:

- one process: rank 0 runs the whole forward alone, with all P processes' CPU threads (on GPUs: its one GPU)
  while the others wait at a barrier;
- split: every rank runs the frame-split forward (one thread each on CPU, or its own GPU).

Prints JSON: per round both times, the medians, and the ratio split / one process (paired per round; the speed
of a shared machine drifts); the bytes each rank sent per forward (all-to-alls and the final gather, counted by
``FrameSplit.sent_bytes``), as a ratio to the bytes of the whole token stream ``[L, dim]`` float32 and per block;
and the largest difference between the split and the single prediction.

    python benchmarks/bench_sp.py                      # 2 gloo processes on CPU
    python benchmarks/bench_sp.py --ranks 4 --runs 5   # 4 ranks (4 GPUs with NCCL)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (str(BENCH_DIR), str(REPO_ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from bench_dit import MID_CONFIG  # noqa: E402

import anytalker_core as at  # noqa: E402
from anytalker_core.model.parallel import FrameSplit, check_ranks  # noqa: E402


def inputs(cfg: at.AnyTalkerConfig, latent: list[int], people: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    b, c, t, h, w = latent
    masks = [torch.zeros(b, t, h // 2, w // 2) for _ in range(people)]
    for i, m in enumerate(masks):  # side by side faces
        width = (w // 2) // people
        m[:, :, 1 : h // 2 - 1, i * width : (i + 1) * width] = 1.0
    out = dict(
        x=torch.randn(b, c, t, h, w, generator=g), t=torch.full((b,), 637.0),
        text=torch.randn(b, 30, cfg.text_dim, generator=g), clip=torch.randn(b, 257, cfg.clip_dim, generator=g),
        y=torch.randn(b, cfg.in_dim - cfg.out_dim, t, h, w, generator=g),
        audio=[torch.randn(b, 4 * (t - 1) + 1, 5, 12, 768, generator=g) for _ in range(people)],
        faces=[torch.randn(b, 257, cfg.clip_dim, generator=g) for _ in range(people)], masks=masks,
    )  # fmt: skip
    return {k: [v.to(device) for v in vs] if isinstance(vs, list) else vs.to(device) for k, vs in out.items()}


def rank_main(rank: int, ranks: int, port: int, args: argparse.Namespace, out: str) -> None:
    gpus = torch.cuda.is_available() and torch.cuda.device_count() >= ranks
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank) if gpus else torch.device("cpu")
    if gpus:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if gpus else "gloo", rank=rank, world_size=ranks,
                            timeout=datetime.timedelta(seconds=args.timeout))  # fmt: skip
    torch.manual_seed(0)
    cfg = at.AnyTalkerConfig(**MID_CONFIG)
    check_ranks(cfg.num_heads, args.latent[2], ranks)
    model = at.AnyTalkerDiT(cfg).float().eval()
    with torch.no_grad():  # finite random weights, the same on every rank, scaled so that every block matters
        for name, param in model.named_parameters():
            scale = 0.5 if "modulation" in name else param[0].numel() ** -0.5 if param.dim() > 1 else 0.1
            param.copy_(torch.randn_like(param) * scale + (1.0 if "norm" in name else 0.0))
    model.to(device)
    data = inputs(cfg, args.latent, args.ids, device)
    x, t = data.pop("x"), data.pop("t")

    def sync() -> None:
        if gpus:
            torch.cuda.synchronize(device)

    def single() -> tuple[float, torch.Tensor]:
        torch.set_num_threads(args.threads * ranks)
        sync()
        start = time.perf_counter()
        pred = model(x, t, **data)
        sync()
        return time.perf_counter() - start, pred

    def split() -> tuple[float, torch.Tensor, int]:
        torch.set_num_threads(args.threads)
        hooks = FrameSplit(cfg.num_heads, len(model.blocks))
        dist.barrier()
        sync()
        start = time.perf_counter()
        pred = model(x, t, hooks=hooks, **data)
        sync()
        return time.perf_counter() - start, pred, hooks.sent_bytes

    rounds = []
    with torch.no_grad():
        for run in range(args.runs + 1):  # the first round warms up
            one = None
            if rank == 0:
                one, expected = single()
            dist.barrier()
            seconds, pred, sent = split()
            took = torch.tensor([seconds], dtype=torch.float64, device=device)
            dist.all_reduce(took, op=dist.ReduceOp.MAX)  # the split forward is done when its slowest rank is
            if run:
                rounds.append({"one_process_s": one, "split_s": float(took)})
    if rank == 0:
        b, _, frames, h, w = x.shape
        stream = b * frames * (h // 2) * (w // 2) * cfg.dim * 4
        ratios = [r["split_s"] / r["one_process_s"] for r in rounds]
        result = {
            "backend": "nccl" if gpus else "gloo", "ranks": ranks, "device": str(device),
            "threads": {"one_process": args.threads * ranks, "per_rank": args.threads},
            "config": dict(MID_CONFIG, latent=args.latent, people=args.ids), "rounds": rounds,
            "one_process_s_median": statistics.median(r["one_process_s"] for r in rounds),
            "split_s_median": statistics.median(r["split_s"] for r in rounds),
            "time_ratio_split_over_one_median": statistics.median(ratios),
            "bytes_sent_by_rank0_per_forward": sent,
            "bytes_sent_over_stream_bytes": sent / stream,
            "bytes_sent_over_stream_bytes_per_block": sent / stream / cfg.num_layers,
            "max_abs_diff_split_vs_one": float((pred - expected).abs().max()),
        }  # fmt: skip
        Path(out).write_text(json.dumps(result, indent=1))
    dist.destroy_process_group()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (after one warm-up round)")
    parser.add_argument("--latent", type=lambda s: [int(v) for v in s.split(",")], default=[1, 16, 5, 16, 28],
                        help="B,C,T,H,W (default 1,16,5,16,28: 5 latent frames of 8x14 tokens, split 3+2)")  # fmt: skip
    parser.add_argument("--ids", type=int, default=2, help="people")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank (one process gets ranks x)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a hung collective fails")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.json")
        mp.start_processes(rank_main, args=(args.ranks, port, args, out), nprocs=args.ranks, start_method="spawn")
        result = json.loads(Path(out).read_text())
    print(json.dumps(result, indent=1))
    sys.stderr.write(
        f"{result['backend']} x{args.ranks}: split/one time {result['time_ratio_split_over_one_median']:.2f}, "
        f"rank 0 sent {result['bytes_sent_over_stream_bytes']:.2f}x the token stream per forward, "
        f"max diff {result['max_abs_diff_split_vs_one']:.2g}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

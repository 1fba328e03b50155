"""Run a function on P local CPU processes joined by gloo, with a hard timeout (for the sequence-parallel tests).

A hung collective must fail the test, not the CI run: every process gets a deadline, the collectives a gloo
timeout, and a process still alive at the deadline is killed and reported.
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import socket
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, ranks: int, port: int, timeout: float, fn: Callable, args: tuple, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=ranks,
                                timeout=datetime.timedelta(seconds=timeout))  # fmt: skip
        try:
            result = fn(rank, ranks, *args)
        finally:
            dist.destroy_process_group()
        torch.save({"result": result}, out)
    except BaseException:  # the parent reads the traceback
        torch.save({"error": traceback.format_exc()}, out)


def run_ranks(fn: Callable, ranks: int, *args: Any, tmp: Path, timeout: float = 60.0) -> list[Any]:
    """``fn(rank, ranks, *args)`` on ``ranks`` spawned processes; their results in rank order.

    ``fn`` must be importable by name (a module-level function). Raises AssertionError with the rank's traceback
    on an error, or when a process is still running after ``timeout`` seconds (it is killed)."""
    ctx = mp.get_context("spawn")
    port = free_port()
    outs = [str(tmp / f"rank{r}.pt") for r in range(ranks)]
    procs = [
        ctx.Process(target=_rank_main, args=(r, ranks, port, timeout / 2, fn, args, outs[r])) for r in range(ranks)
    ]
    for p in procs:
        p.start()
    hung = []
    for r, p in enumerate(procs):
        p.join(timeout)
        if p.is_alive():
            p.kill()
            p.join()
            hung.append(r)
    assert not hung, f"ranks {hung} still running after {timeout} s (a hung collective?): killed"
    results = []
    for r, out in enumerate(outs):
        assert Path(out).exists(), f"rank {r} died without a result (exit code {procs[r].exitcode})"
        got = torch.load(out, weights_only=False)
        assert "error" not in got, f"rank {r} failed:\n{got.get('error')}"
        results.append(got["result"])
    return results

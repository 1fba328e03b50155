"""Where the workers run: this process (:class:`InProcess`), one local process per device (:class:`Processes`), or
Ray actors (:mod:`.cluster`). Every pool has the same small surface, which :func:`~.run.schedule` drives:

- ``size``: how many workers; ``names[i]``: a name for worker ``i`` in messages;
- ``submit(i, job)``: give worker ``i`` (idle) a job;
- ``wait(timeout)``: ``[(i, JobResult | Crash)]`` for the workers that finished or died; a dead worker is
  replaced (it loads the models again) and its slot takes jobs again;
- ``progress()``: ``[(i, step, total)]`` sampling steps since the last call;
- ``close()``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from typing import Any

from .jobs import BatchJob
from .worker import ModelSpec, one_line, render_job, worker_threads


class BatchError(RuntimeError):
    """The batch cannot go on at all (the models do not load, Ray is missing or unreachable)."""


@dataclass(frozen=True)
class Crash:
    """A worker died while it held a job (killed, out of memory, its machine gone)."""

    reason: str


class InProcess:
    """One worker: this process (``cpus``: torch's CPU threads; default: as they are). The job runs inside
    ``wait``."""

    def __init__(self, spec: ModelSpec, device: str, offload: bool = True, overwrite: bool = False,
                 cpus: int | None = None) -> None:  # fmt: skip
        self.size, self.names = 1, ["main"]
        if cpus is not None:
            worker_threads(cpus)
        self.device, self.offload, self.overwrite = device, offload, overwrite
        self.job: BatchJob | None = None
        self.on_step = None  # the scheduler's display, for live steps while the job runs here
        self.models = self.load(spec, device)

    def load(self, spec: ModelSpec, device: str) -> Any:
        """The worker's models; raises :class:`BatchError` when they do not load."""
        try:
            return spec.load(device)
        except (ValueError, OSError) as err:
            raise BatchError(f"the models did not load: {one_line(err)}") from None

    def submit(self, worker: int, job: BatchJob) -> None:
        self.job = job

    def wait(self, timeout: float) -> list[tuple[int, Any]]:
        if self.job is None:
            return []
        job, self.job = self.job, None

        def step(i: int, total: int) -> None:
            if self.on_step is not None:
                self.on_step(0, i, total)

        result = render_job(self.models, job, device=self.device, offload=self.offload, overwrite=self.overwrite,
                            on_step=step, worker=self.names[0])  # fmt: skip
        return [(0, result)]

    def progress(self) -> list[tuple[int, int, int]]:
        return []

    def close(self) -> None:
        self.models = None


def _process_main(conn: Any, spec: ModelSpec, device: str, cpus: int, offload: bool, overwrite: bool) -> None:
    """A local worker process: load the models, say so, then render each job it is sent until it gets None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    worker_threads(cpus)
    try:
        models = spec.load(device)
    except Exception as err:  # noqa: BLE001 - sent to the parent, which stops the batch with it
        conn.send(("load_failed", one_line(err)))
        return
    conn.send(("ready",))
    name = f"pid {os.getpid()} on {device}"
    while True:
        job = conn.recv()
        if job is None:
            return
        result = render_job(models, job, device=device, offload=offload, overwrite=overwrite, worker=name,
                            on_step=lambda i, total: conn.send(("step", i, total)))  # fmt: skip
        conn.send(("result", result))


class Processes:
    """One local process per device (``cuda:0``, ``cuda:1``, ... or several on the CPU), each loading the models
    once. Processes start with ``spawn``, so CUDA and torch's threads start clean in each."""

    def __init__(self, spec: ModelSpec, devices: list[str], *, cpus: int = 1, offload: bool = True,
                 overwrite: bool = False) -> None:  # fmt: skip
        self.spec, self.devices, self.cpus = spec, devices, cpus
        self.offload, self.overwrite = offload, overwrite
        self.size = len(devices)
        self.context = multiprocessing.get_context("spawn")
        self.procs: list[Any] = [None] * self.size
        self.conns: list[Any] = [None] * self.size
        self.names = [f"worker {i + 1} ({d})" for i, d in enumerate(devices)]
        self.steps: list[tuple[int, int, int]] = []
        for i in range(self.size):
            self._start(i)

    def _start(self, i: int) -> None:
        parent, child = self.context.Pipe()
        proc = self.context.Process(
            target=_process_main, args=(child, self.spec, self.devices[i], self.cpus, self.offload, self.overwrite),
            name=f"anytalker-batch-{i + 1}", daemon=True,
        )  # fmt: skip
        proc.start()
        child.close()
        self.procs[i], self.conns[i] = proc, parent

    def submit(self, worker: int, job: BatchJob) -> None:
        try:
            self.conns[worker].send(job)
        except (BrokenPipeError, EOFError, OSError):
            pass  # the worker is gone; wait() sees its process end and reports the crash

    def _drain(self, i: int) -> list[Any]:
        out = []
        conn = self.conns[i]
        try:
            while conn.poll():
                message = conn.recv()
                if message[0] == "step":
                    self.steps.append((i, message[1], message[2]))
                elif message[0] == "result":
                    out.append(message[1])
                elif message[0] == "load_failed":
                    raise BatchError(f"{self.names[i]} could not load the models: {message[1]}")
        except (EOFError, OSError):
            pass
        return out

    def wait(self, timeout: float) -> list[tuple[int, Any]]:
        ready = set(wait_any([*self.conns, *(p.sentinel for p in self.procs)], timeout))
        finished: list[tuple[int, Any]] = []
        for i in range(self.size):
            if self.conns[i] in ready or self.procs[i].sentinel in ready:
                finished.extend((i, result) for result in self._drain(i))
            if self.procs[i].sentinel in ready and not self.procs[i].is_alive():
                code = self.procs[i].exitcode
                self.conns[i].close()
                finished.append((i, Crash(f"its process ended (exit code {code})")))
                self._start(i)
        return finished

    def progress(self) -> list[tuple[int, int, int]]:
        steps, self.steps = self.steps, []
        return steps

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)

"""The batch on a Ray cluster: one actor per GPU (or per ``cpus`` CPU cores), each loading the models once and
rendering the jobs the scheduler hands it. Ray is optional (``pip install ray``); nothing here imports it until a
:class:`RayPool` is made.

The actors import this package from the driver's copy (Ray's ``py_modules``), so the cluster's machines need the
pack's Python dependencies but not the pack itself; model files and the job's inputs and outputs must be at the
same paths on every machine (a shared folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .jobs import BatchJob
from .pools import BatchError, Crash
from .worker import JobResult, ModelSpec, one_line, render_job, worker_threads

INSTALL = "pip install ray   (the pack's optional 'ray' extra; the same version on every machine of the cluster)"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BatchError(f"--ray needs the Ray package, which is not installed: {INSTALL}") from None
    return ray


class BatchActor:
    """A Ray actor: the models, loaded once, and the step of the job it is rendering (read by ``progress``)."""

    def __init__(self, spec: ModelSpec, device: str, cpus: int, offload: bool, overwrite: bool) -> None:
        import os
        import socket

        worker_threads(cpus)
        self.device, self.offload, self.overwrite = device, offload, overwrite
        self.name = f"{socket.gethostname()} pid {os.getpid()} on {device}"
        self.models = spec.load(device)
        self.step: tuple[int, int] | None = None

    def ready(self) -> str:
        return self.name

    def render(self, job: BatchJob) -> JobResult:
        def on_step(i: int, total: int) -> None:
            self.step = (i, total)

        try:
            return render_job(self.models, job, device=self.device, offload=self.offload, overwrite=self.overwrite,
                              on_step=on_step, worker=self.name)  # fmt: skip
        finally:
            self.step = None

    def progress(self) -> tuple[int, int] | None:
        return self.step


class RayPool:
    """``workers`` actors on the cluster at ``address`` (``None``: a local cluster started here, stopped at
    ``close``; ``"auto"``: the cluster this machine belongs to; ``"host:6379"``). ``gpu``: one GPU per actor
    (``device`` cuda), else ``cpus`` CPU cores each; None: GPUs when the cluster has any."""

    def __init__(self, spec: ModelSpec, *, address: str | None, workers: int | None, gpu: bool | None, cpus: int = 1,
                 offload: bool = True, overwrite: bool = False) -> None:  # fmt: skip
        ray = self.ray = import_ray()
        self.started_here = not ray.is_initialized()
        if self.started_here:
            package = str(Path(__file__).resolve().parents[1])  # anytalker_core/, shipped to every worker
            try:
                ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                         runtime_env={"py_modules": [package]})  # fmt: skip
            except ConnectionError as err:
                raise BatchError(f"--ray {address}: no Ray cluster answered ({one_line(err)}); start one with "
                                 "`ray start --head` (see the README's 'Batch rendering')") from None  # fmt: skip
        resources = ray.cluster_resources()
        if gpu is None:
            gpu = resources.get("GPU", 0) >= 1
        if workers is None:
            workers = int(resources.get("GPU", 0)) if gpu else max(1, int(resources.get("CPU", 1)) // cpus)
        if gpu and resources.get("GPU", 0) < 1:
            raise BatchError("--ray: the cluster has no GPU; pass --device cpu to use its CPUs")
        if workers < 1:
            raise BatchError("--ray: the cluster offers no slot for a worker")
        self.size = workers
        self.device = "cuda" if gpu else "cpu"  # Ray gives each actor its own GPU as cuda:0
        self.options = {"num_gpus": 1, "num_cpus": cpus} if gpu else {"num_cpus": cpus}
        self.args = (spec, self.device, cpus, offload, overwrite)
        self.remote_class = ray.remote(BatchActor)
        self.actors = [self._actor() for _ in range(workers)]
        self.names = [f"actor {i + 1}" for i in range(workers)]
        try:
            names = ray.get([a.ready.remote() for a in self.actors])
        except ray.exceptions.RayError as err:
            self.close()
            raise BatchError(f"a Ray worker could not load the models: {_cause(err)}") from None
        self.names = [f"actor {i + 1} ({name})" for i, name in enumerate(names)]
        self.running: dict[Any, int] = {}

    def _actor(self) -> Any:
        # max_concurrency 2: progress() answers while render() runs
        return self.remote_class.options(max_concurrency=2, **self.options).remote(*self.args)

    def submit(self, worker: int, job: BatchJob) -> None:
        self.running[self.actors[worker].render.remote(job)] = worker

    def wait(self, timeout: float) -> list[tuple[int, Any]]:
        ray = self.ray
        if not self.running:
            return []
        done, _ = ray.wait(list(self.running), num_returns=1, timeout=timeout)
        finished: list[tuple[int, Any]] = []
        for ref in done:
            worker = self.running.pop(ref)
            try:
                finished.append((worker, ray.get(ref)))
            except ray.exceptions.RayActorError as err:
                finished.append((worker, Crash(f"its Ray actor died ({_cause(err)})")))
                ray.kill(self.actors[worker], no_restart=True)
                self.actors[worker] = self._actor()
            except ray.exceptions.RayError as err:
                finished.append((worker, Crash(_cause(err))))
        return finished

    def progress(self) -> list[tuple[int, int, int]]:
        ray = self.ray
        busy = sorted(set(self.running.values()))
        try:
            steps = ray.get([self.actors[i].progress.remote() for i in busy], timeout=2)
        except ray.exceptions.RayError:  # an actor died: its render() call reports it
            return []
        return [(i, *step) for i, step in zip(busy, steps) if step is not None]

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []
        if self.started_here:
            self.ray.shutdown()


def _cause(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line and not line.startswith("File ")]
    return (errors[-1] if errors else lines[0] if lines else type(err).__name__)[:300]

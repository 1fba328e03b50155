"""One batch on the N processes ``torchrun`` started (``batch --sp N``): every clip in turn, its DiT split by whole
latent frames over all N ranks (:class:`~anytalker_core.model.parallel.FrameSplitDiT`).

Rank 0 alone runs the batch (:func:`~.run.run_batch`: it reads the job file, skips the outputs that exist, checks
every job, writes the videos and the report) on a :class:`LeadingPool`, which tells the other ranks, through
``torch.distributed.broadcast_object_list`` from rank 0, what to do next:

- ``"load"`` once, when some job needs rendering: every rank loads the models (at the same time) and splits their
  DiT; a rank that could not is reported by rank 0 and the batch stops;
- each :class:`~.jobs.BatchJob`, just before rank 0 renders it: the other ranks render it with rank 0 (the model
  calls need every rank) into a scratch folder that is thrown away; the job carries its options, its seed
  (a random one included) among them, so every rank samples the same noise;
- ``None`` at the end (:func:`lead`).

Only rank 0 decides, so the checks and the existence tests cannot disagree between ranks, and only rank 0 writes
files or prints. The followers run :func:`follow`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch.distributed as dist

from .jobs import BatchJob
from .pools import BatchError, InProcess
from .worker import JobResult, ModelSpec, one_line, render_job, worker_threads

LOAD = "load"  # the message that has every rank load the models


def split_models(models: Any) -> Any:
    """``Models`` whose DiT runs every call split over the ranks (raises ValueError when the ranks cannot split its
    heads)."""
    from ..model.parallel import FrameSplitDiT

    return dataclasses.replace(models, dit=FrameSplitDiT(models.dit))


def _send(message: BatchJob | str | None) -> None:
    dist.broadcast_object_list([message], src=0)


def _receive() -> BatchJob | str | None:
    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _load(spec: ModelSpec, device: str) -> tuple[Any, str | None]:
    """This rank's split models, or None and why not (one line). Never raises: every rank must reach
    :func:`_loaded_everywhere`, or the others wait there for it."""
    try:
        models = spec.load(device)
    except Exception as err:  # noqa: BLE001 - reported by rank 0 after every rank tried
        return None, f"the models did not load: {one_line(err)}"
    try:
        return split_models(models), None
    except Exception as err:  # noqa: BLE001 - as above
        return None, one_line(err)


def _loaded_everywhere(error: str | None) -> list[str | None]:
    """Every rank's loading error (None: loaded), in rank order, on every rank."""
    errors: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    return errors


class LeadingPool(InProcess):
    """Rank 0's worker for ``batch --sp N``: this process (:class:`~.pools.InProcess`) with its DiT split over the
    ranks. It has every rank load the models with it (raising :class:`~.pools.BatchError` that names the ranks
    whose models did not load), and broadcasts each job before rendering it here."""

    def __init__(self, spec: ModelSpec, device: str, *, offload: bool = True, overwrite: bool = False,
                 cpus: int | None = None) -> None:  # fmt: skip
        super().__init__(spec, device, offload=offload, overwrite=overwrite, cpus=cpus)
        self.names = [f"main (--sp {dist.get_world_size()})"]
        self.refused: JobResult | None = None  # a job failed before the others were told of it

    def load(self, spec: ModelSpec, device: str) -> Any:
        _send(LOAD)
        models, error = _load(spec, device)
        failed: dict[str, list[str]] = {}
        for rank, reason in enumerate(_loaded_everywhere(error)):
            if reason is not None:
                failed.setdefault(reason, []).append(str(rank))
        if failed:
            raise BatchError("; ".join(f"on rank {', '.join(ranks)}: {reason}" for reason, ranks in failed.items()))
        return models

    def submit(self, worker: int, job: BatchJob) -> None:
        try:  # what only this rank does before the model calls: fail here, not with the others inside a call
            job.out.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(job.out.parent, os.W_OK):
                raise PermissionError(f"cannot write to the output folder {job.out.parent}")
        except OSError as err:
            self.refused = JobResult(job.label, "failed", str(job.out), reason=one_line(err), worker=self.names[0])
            return
        _send(job)  # the others start it now; the model calls in wait() need them
        super().submit(worker, job)

    def wait(self, timeout: float) -> list[tuple[int, Any]]:
        if self.refused is not None:
            refused, self.refused = self.refused, None
            return [(0, refused)]
        return super().wait(timeout)


@contextlib.contextmanager
def lead() -> Iterator[None]:
    """Rank 0 runs the batch inside: at the end, or after an error, the other ranks are sent ``None`` and stop. Not
    after Ctrl-C, which torchrun hands to every rank (they stop by themselves; one may be inside a model call)."""
    interrupted = False
    try:
        yield
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if not interrupted:
            _send(None)


def follow(spec: ModelSpec, device: str, *, offload: bool = True, cpus: int | None = None) -> int:
    """A rank > 0 of ``batch --sp N``: load the models when rank 0 does, then render every job rank 0 sends, with it,
    into a scratch folder that is deleted, until ``None``. Writes nothing else and reports nothing (rank 0 does);
    returns how many jobs it rendered."""
    if cpus is not None:
        worker_threads(cpus)
    models, rendered, rank = None, 0, dist.get_rank()
    with tempfile.TemporaryDirectory(prefix="anytalker_sp_") as scratch:
        while True:
            message = _receive()
            if message is None:
                return rendered
            if message == LOAD:
                models, error = _load(spec, device)
                _loaded_everywhere(error)  # when any rank failed, rank 0 stops the batch and sends None
                continue
            if models is None:  # not reached: rank 0 sends no job unless every rank loaded
                continue
            job = dataclasses.replace(message, out=Path(scratch) / message.out.name)
            render_job(models, job, device=device, offload=offload, overwrite=True, worker=f"rank {rank}")
            rendered += 1

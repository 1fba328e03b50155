"""A whole batch: read the job file, skip what is done, check every other job before any model loads, render the
rest on a pool of workers that pull jobs from one queue, and leave a report beside the outputs."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .jobs import REPORT_NAME, BatchJob, read_jobs, validate_job
from .pools import Crash
from .worker import JobResult, relative

TRIES = 2  # a job whose worker dies is queued again once


@dataclass
class Report:
    """What a batch did; ``results`` in the job file's order. ``ok``: nothing failed."""

    job_file: str
    out_dir: str
    results: list[JobResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0

    def summary(self) -> str:
        lines = [f"batch: {self.count('done')} done, {self.count('skipped')} skipped (already there), "
                 f"{self.count('failed')} failed, in {self.seconds:.1f} s"]  # fmt: skip
        lines += [f"  failed {r.label}: {r.reason}" for r in self.results if r.status == "failed"]
        return "\n".join(lines)

    def write(self) -> Path:
        """``batch_report.json`` in the output folder (written atomically, after every finished job)."""
        root = Path(self.out_dir)
        data = {
            "job_file": self.job_file, "out_dir": self.out_dir, "seconds": round(self.seconds, 3),
            "done": self.count("done"), "skipped": self.count("skipped"), "failed": self.count("failed"),
            "warnings": self.warnings,
            "jobs": [{**asdict(r), "output": relative(r.output, root)} for r in self.results],
        }  # fmt: skip
        root.mkdir(parents=True, exist_ok=True)
        path, tmp = root / REPORT_NAME, root / f".{REPORT_NAME}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
        return path


class Display:
    """A bar over the jobs and one over the sampling steps of each worker (tqdm, on stderr)."""

    def __init__(self, jobs: int, names: list[str], enabled: bool = True) -> None:
        from tqdm import tqdm

        kw = dict(file=sys.stderr, dynamic_ncols=True, disable=not enabled, leave=False)
        self.jobs = tqdm(total=jobs, desc="jobs", unit="job", position=0, **kw)
        self.steps = [tqdm(total=0, desc=name, unit="step", position=i + 1, **kw) for i, name in enumerate(names)]
        self.write = tqdm.write

    def start(self, worker: int, job: BatchJob) -> None:
        bar = self.steps[worker]
        bar.reset(total=0)
        bar.set_postfix_str(job.label, refresh=True)

    def step(self, worker: int, step: int, total: int) -> None:
        bar = self.steps[worker]
        if bar.total != total:
            bar.reset(total=total)
        bar.update(step + 1 - bar.n)

    def finish(self, result: JobResult) -> None:
        self.jobs.update(1)
        if result.status == "done":
            self.write(f"done {result.label}: {result.output} ({result.frames} frames, seed {result.seed}, "
                       f"{result.seconds:.1f} s)", file=sys.stderr)  # fmt: skip
        else:
            self.write(f"failed {result.label}: {result.reason}", file=sys.stderr)

    def close(self) -> None:
        for bar in (*self.steps, self.jobs):
            bar.close()


def schedule(jobs: list[BatchJob], pool: Any, display: Display, on_finish: Callable[[BatchJob, JobResult], None],
             on_event: Callable[..., None] | None = None) -> None:  # fmt: skip
    """Hand each idle worker the next job of one queue until all are done; a job whose worker died goes back to
    the front of the queue once (a second death fails it). ``on_event(kind, worker, job, *info)``: ``start``,
    ``step`` (step, total) and ``crash`` (reason), for tests and tools."""
    queue, busy, tries = deque(jobs), {}, {}
    event = on_event or (lambda *_: None)
    if hasattr(pool, "on_step"):

        def live(worker: int, step: int, total: int) -> None:
            display.step(worker, step, total)
            event("step", worker, busy.get(worker), step, total)

        pool.on_step = live
    while queue or busy:
        for worker in range(pool.size):
            if worker not in busy and queue:
                job = busy[worker] = queue.popleft()
                tries[job.label] = tries.get(job.label, 0) + 1
                display.start(worker, job)
                pool.submit(worker, job)
                event("start", worker, job)
        for worker, outcome in pool.wait(0.5):
            job = busy.pop(worker, None)
            if job is None:  # an idle worker died: it was replaced, nothing to redo
                continue
            if isinstance(outcome, Crash):
                event("crash", worker, job, outcome.reason)
                if tries[job.label] < TRIES:
                    display.write(f"{pool.names[worker]} stopped while rendering {job.label}: {outcome.reason}; "
                                  "queued again", file=sys.stderr)  # fmt: skip
                    queue.appendleft(job)
                    continue
                outcome = JobResult(
                    job.label,
                    "failed",
                    str(job.out),
                    worker=pool.names[worker],
                    reason=f"its worker died on each of {TRIES} tries (last: {outcome.reason})",
                )
            outcome = replace(outcome, attempts=tries[job.label])
            display.finish(outcome)
            on_finish(job, outcome)
        for worker, step, total in pool.progress():
            display.step(worker, step, total)
            event("step", worker, busy.get(worker), step, total)


def run_batch(
    job_file: str | Path,
    out_dir: str | Path | None,
    make_pool: Callable[[], Any],
    *,
    defaults: dict[str, Any],
    overwrite: bool = False,
    face_backend: str = "auto",
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    on_event: Callable[..., None] | None = None,
) -> Report:
    """The whole batch (see the module docstring). ``out_dir`` None: beside the job file, in a folder named after
    it (the reference's default). ``make_pool()``: the workers (:mod:`.pools`, :mod:`.cluster`), made only when
    some job needs rendering, after every job was checked. ``defaults``: render() keywords for every job."""
    start = time.perf_counter()
    say = say or (lambda message: sys.stderr.write(message + "\n"))
    job_file = Path(job_file).expanduser()
    out = Path(out_dir).expanduser() if out_dir is not None else job_file.parent / job_file.stem
    jobs, problems, warnings = read_jobs(job_file, out, defaults)
    for warning in warnings:
        say(f"warning: {warning}")
    results: dict[str, JobResult] = {p.label: JobResult(p.label, "failed", reason=p.reason) for p in problems}
    todo = []
    for job in jobs:
        if job.out.exists() and not overwrite:
            results[job.label] = JobResult(job.label, "skipped", str(job.out), reason="the output already exists")
            continue
        try:
            validate_job(job, face_backend)
        except (ValueError, OSError) as err:
            results[job.label] = JobResult(job.label, "failed", str(job.out), reason=" ".join(str(err).split()))
            continue
        todo.append(job)
    order = [p.label for p in problems] + [j.label for j in jobs]
    report = Report(str(job_file), str(out), warnings=warnings)

    def refresh() -> None:
        report.results = [results[label] for label in order if label in results]
        report.seconds = time.perf_counter() - start
        report.write()

    for result in results.values():
        if result.status == "failed":
            say(f"failed {result.label}: {result.reason}")
    say(f"{len(order)} job(s): {len(todo)} to render, {sum(r.status == 'skipped' for r in results.values())} "
        f"already done, {sum(r.status == 'failed' for r in results.values())} failed the checks")  # fmt: skip
    if todo:
        say("loading models")
        pool = make_pool()
        display = Display(len(todo), pool.names, enabled=progress)

        def finished(job: BatchJob, result: JobResult) -> None:
            results[job.label] = result
            refresh()

        try:
            schedule(todo, pool, display, finished, on_event)
        finally:
            display.close()
            pool.close()
            refresh()
    else:
        refresh()
    return report

"""Rendering many clips: the reference's batch job files, resumable, on one process, several local processes or a
Ray cluster (``python -m anytalker_core batch``).

- :mod:`.jobs`: reading a job file, naming outputs, checking each job before any model loads;
- :mod:`.worker`: what a worker does (load the models once, render job after job, atomically);
- :mod:`.pools`: workers in this process or in local processes (one per device); :mod:`.cluster`: Ray actors;
- :mod:`.run`: the queue, the retries, the progress display and the report.
- :mod:`.ranks`: one batch on the processes ``torchrun`` started, each clip split over all of them (``--sp N``).
"""

from .jobs import BatchJob, JobFileError, output_name, read_jobs, validate_job
from .pools import BatchError, InProcess, Processes
from .run import Report, run_batch
from .worker import JobResult, ModelSpec, render_job

__all__ = [
    "BatchError", "BatchJob", "InProcess", "JobFileError", "JobResult", "ModelSpec", "Processes", "Report",
    "output_name", "read_jobs", "render_job", "run_batch", "validate_job",
]  # fmt: skip

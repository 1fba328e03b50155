"""What every batch worker does, wherever it runs (this process, a local process, a Ray actor): load the models
once (:class:`ModelSpec`), then render job after job (:func:`render_job`), each to its final name atomically."""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .jobs import BatchJob

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """How a worker gets its models: the same files as ``generate``'s flags (each path must exist on every
    machine that runs a worker), or the demo's tiny random-weight models when ``demo_seed`` is set."""

    dit: str | None = None
    wav2vec2: str | None = None
    text_encoder: str | None = None
    image_encoder: str | None = None
    vae: str | None = None
    tokenizer: str | None = None
    dit_config: str | None = None
    dtype: str | None = None  # the DiT's weights: None is bf16 for a GPU worker, fp32 for a CPU one
    demo_seed: int | None = None

    def load(self, device: str = "cpu") -> Any:
        """The :class:`~anytalker_core.pipeline.Models` for a worker on ``device``, loaded on the CPU (``render``
        moves each to the device)."""
        if self.demo_seed is not None:
            from ..demo import tiny_models

            return tiny_models(seed=self.demo_seed)
        from ..pipeline import load_models

        return load_models(
            self.dit, self.wav2vec2, self.text_encoder, self.image_encoder, self.vae, tokenizer=self.tokenizer,
            dit_config=self.dit_config, dtype=DTYPES[self.dtype or ("fp32" if device == "cpu" else "bf16")],
        )  # fmt: skip


@dataclass(frozen=True)
class JobResult:
    """What became of one job: ``status`` is ``done``, ``skipped`` or ``failed`` (``reason``: one line)."""

    label: str
    status: str
    output: str | None = None
    reason: str | None = None
    frames: int | None = None
    seed: int | None = None
    seconds: float | None = None
    worker: str | None = None
    attempts: int = 0


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, (ValueError, OSError)) else f"{type(err).__name__}: {text}"


def remove_leftovers(job: BatchJob) -> None:
    """Temporary files of an earlier, interrupted try at this job (the writer's ``.<name>.<id>.tmp.<ext>``)."""
    for name in (job.out, job.binding):
        pattern = f".{glob.escape(name.stem)}.*.tmp{name.suffix}"
        for leftover in name.parent.glob(pattern):
            leftover.unlink(missing_ok=True)


def render_job(
    models: Any,
    job: BatchJob,
    *,
    device: str,
    offload: bool = True,
    overwrite: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    worker: str = "main",
) -> JobResult:
    """Render one job to ``job.out`` (mp4, written to a temporary name and renamed when complete) and its face
    binding beside it. A failure of the job is its :class:`JobResult` (``failed``), not an exception."""
    from ..images import read_image
    from ..people.preview import preview
    from ..pipeline import render
    from ..pipeline.writer import write_png

    start = time.perf_counter()
    callback = (lambda step, total, _x0: on_step(step, total)) if on_step else None
    try:
        job.out.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(job)
        video = render(
            models, job.image, list(job.audio), job.prompt, job.out, overwrite=overwrite, callback=callback,
            device=device, offload=offload, status=lambda _message: None, **job.options,
        )  # fmt: skip
        write_png(job.binding, preview(read_image(job.image), video.routing), overwrite=True)
    except Exception as err:  # noqa: BLE001 - one job's failure is reported and the batch goes on
        return JobResult(job.label, "failed", str(job.out), reason=one_line(err), worker=worker,
                         seconds=time.perf_counter() - start)  # fmt: skip
    return JobResult(job.label, "done", str(video.path), frames=video.frames, seed=video.seed, worker=worker,
                     seconds=time.perf_counter() - start)  # fmt: skip


def worker_threads(cpus: int) -> None:
    """Torch's CPU threads for a worker that was given ``cpus`` cores."""
    torch.set_num_threads(max(1, int(cpus)))


def relative(path: str | Path | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)

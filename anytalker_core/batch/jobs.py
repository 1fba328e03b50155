"""The reference's batch job files: reading them, naming each job's output, and checking each job before any model
loads.

A job file is a JSON object, one entry per job (as the reference's ``--batch_gen_json``,
``input_example/customize_your_input_here.json``)::

    {"2p-0": {"image_path": "images/2p-0.png",
              "caption": "The two people are talking to each other.",
              "enhance_caption": "The two people are talking to each other.",
              "audio_list": ["audios/2p-0-left.wav", "audios/2p-0-right.wav"]}}

Older files give ``audio_left`` / ``audio_right`` instead of ``audio_list``. When ``caption`` and
``enhance_caption`` are both given and differ, the job is rendered twice, into ``caption/`` and
``enhance_caption/`` subfolders; otherwise once, with ``enhance_caption`` (or ``caption`` when that is empty).
Our optional fields override the command line's defaults per job: ``offsets``, ``mode``, ``faces``, ``order``,
``frames``, ``seed``, ``steps``, ``guidance``, ``shift``; ``null`` in ``audio_list`` is a listener.

Paths are relative to the job file's folder; one that is not found there is looked up from the current folder,
which is how the reference's own example file names its inputs (``./input_example/...`` from the repo root).

Output names follow the reference's final file: ``<key>_audio0_<name>_audio1_<name>_cfg_<guidance>.mp4`` (each
audio file's name up to its first dot; listeners are left out), in ``caption/`` / ``enhance_caption/`` when the
captions differ. The face binding goes beside it as ``<name>_binding.png``.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import timeline

# our per-job fields -> the render() keyword each one sets
JOB_OPTIONS = {
    "offsets": "offsets", "mode": "mode", "faces": "faces", "order": "order", "frames": "num_frames",
    "seed": "seed", "steps": "steps", "guidance": "guidance", "shift": "shift",
}  # fmt: skip
REFERENCE_FIELDS = ("image_path", "caption", "enhance_caption", "audio_list", "audio_left", "audio_right")
REPORT_NAME = "batch_report.json"


class JobFileError(ValueError):
    """The job file as a whole cannot be used (not found, not JSON, not an object of jobs)."""


@dataclass(frozen=True)
class BatchJob:
    """One clip to render. ``prompt_type``: ``default``, or ``caption`` / ``enhance_caption`` when the two differ;
    ``audio``: one track per person, ``None`` for a listener; ``options``: :func:`~anytalker_core.pipeline.render`
    keywords (the command line's defaults with the job's own fields on top); ``out``: the mp4 to write."""

    key: str
    prompt_type: str
    prompt: str
    image: Path
    audio: tuple[Path | None, ...]
    out: Path
    options: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def label(self) -> str:
        return self.key if self.prompt_type == "default" else f"{self.key} ({self.prompt_type})"

    @property
    def binding(self) -> Path:
        return self.out.with_name(self.out.stem + "_binding.png")


@dataclass(frozen=True)
class JobProblem:
    """A job that cannot run, and why (one line)."""

    label: str
    reason: str
    out: Path | None = None


def output_name(key: str, audio: tuple[Path | None, ...], guidance: float) -> str:
    """The reference's final file name: ``<key>_audio0_<name>_..._cfg_<guidance>.mp4``."""
    names = [p.name.split(".")[0] for p in audio if p is not None]
    if not names:
        return f"{key}.mp4"
    suffix = "_".join(f"audio{i}_{name}" for i, name in enumerate(names))
    return f"{key}_{suffix}_cfg_{float(guidance)}.mp4"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise JobFileError(f"job {key!r} appears twice; every job needs its own key (its output is named by it)")
        seen[key] = value
    return seen


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise JobFileError(f"job file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise JobFileError(f"{path} is not a text file; a job file is JSON") from None
    except json.JSONDecodeError as err:
        raise JobFileError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    if not isinstance(data, dict):
        raise JobFileError(f"{path}: expected a JSON object of jobs {{\"name\": {{\"image_path\": ...}}}}, got "
                           f"a {type(data).__name__}")  # fmt: skip
    if not data:
        raise JobFileError(f"{path} holds no jobs")
    return data


def _resolve(value: Any, where: str, folder: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a file path, got {value!r}")
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    beside = folder / path
    if beside.exists() or not path.exists():
        return beside  # a missing file is reported (by validate_job) under the job file's folder
    return path.resolve()


def _audio_tracks(entry: dict[str, Any], where: str, folder: Path) -> tuple[Path | None, ...]:
    if entry.get("audio_list"):
        tracks = entry["audio_list"]
        if not isinstance(tracks, list):
            raise ValueError(f"{where}: audio_list must be a list of audio files, got {type(tracks).__name__}")
        names = [f"audio_list[{i}]" for i in range(len(tracks))]
    else:  # the reference's older layout
        names = [k for k in ("audio_left", "audio_right") if entry.get(k)]
        tracks = [entry[k] for k in names]
    if not tracks:
        raise ValueError(f"{where}: no audio; give audio_list (one file per person, left to right) or "
                         "audio_left / audio_right")  # fmt: skip
    return tuple(None if t is None else _resolve(t, f"{where}: {n}", folder) for t, n in zip(tracks, names))


def _number(value: Any, where: str, minimum: float, *, integer: bool = False, inclusive: bool = True) -> Any:
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = is_number and (value >= minimum if inclusive else value > minimum)
    if integer and ok and value != int(value):
        ok = False
    if not ok:
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"{where} is {value!r}; expected {kind} {'>=' if inclusive else '>'} {minimum:g}")
    return int(value) if integer else float(value)


def _job_options(entry: dict[str, Any], where: str, people: int) -> dict[str, Any]:
    """Our optional per-job fields, checked; render() keyword -> value."""
    from ..people.speakers import MODES

    options: dict[str, Any] = {}
    for name, keyword in JOB_OPTIONS.items():
        if entry.get(name) is None:
            continue
        value, at = entry[name], f"{where}: {name}"
        if name == "offsets":
            if not isinstance(value, list) or len(value) != people:
                raise ValueError(f"{at} must be a list of {people} start times in seconds (one per person)")
            value = [_number(v, f"{at}[{i}]", 0) for i, v in enumerate(value)]
        elif name == "mode" and value not in MODES:
            raise ValueError(f"{at} is {value!r}; expected one of {', '.join(MODES)}")
        elif name == "faces":
            boxes = value if isinstance(value, list) else []
            if len(boxes) < people or any(not isinstance(b, list) or len(b) != 4 for b in boxes):
                raise ValueError(f"{at} must be a list of at least {people} boxes [x0, y0, x1, y1] (pixels, or "
                                 "fractions of the picture)")  # fmt: skip
            value = [[_number(v, f"{at}[{i}]", 0) for v in box] for i, box in enumerate(boxes)]
        elif name == "frames":
            value = timeline.check_frames(value, at)
        elif name in ("seed", "steps"):
            value = _number(value, at, 0 if name == "seed" else 1, integer=True)
        elif name == "guidance":
            value = _number(value, at, 0)
        elif name == "shift":
            value = _number(value, at, 0, inclusive=False)
        options[keyword] = value
    return options


def read_jobs(
    job_file: str | Path, out_dir: str | Path, defaults: dict[str, Any]
) -> tuple[list[BatchJob], list[JobProblem], list[str]]:
    """The jobs of ``job_file`` -> (jobs, jobs that cannot run, warnings). ``defaults``: render() keywords from the
    command line (``guidance`` among them, for the output name). A problem with the file as a whole raises
    :class:`JobFileError`; a problem with one job is that job's :class:`JobProblem`."""
    from ..sampling.defaults import GUIDANCE

    path = Path(job_file).expanduser()
    data, folder, out_dir = _load(path), path.parent, Path(out_dir).expanduser()
    jobs: list[BatchJob] = []
    problems: list[JobProblem] = []
    warnings: list[str] = []
    for key, entry in data.items():
        where = f"job {key!r}"
        try:
            if not key or key in (".", "..") or any(c in key for c in "/\\\0"):
                raise ValueError(f"{where}: the key names the output file, so it cannot be empty or hold / or \\")
            if isinstance(entry, str):
                raise ValueError(f"{where} is a bare prompt (the reference's oldest format): give an object with "
                                 "image_path, caption and audio_list")  # fmt: skip
            if not isinstance(entry, dict):
                raise ValueError(f"{where} must be an object with image_path, caption and audio_list")
            unknown = sorted(set(entry) - set(REFERENCE_FIELDS) - set(JOB_OPTIONS))
            if unknown:
                known = ", ".join((*REFERENCE_FIELDS, *JOB_OPTIONS))
                warnings.append(f"{where}: ignoring unknown field(s) {', '.join(unknown)} (known: {known})")
            if not entry.get("image_path"):
                raise ValueError(f"{where}: image_path is missing")
            image = _resolve(entry["image_path"], f"{where}: image_path", folder)
            audio = _audio_tracks(entry, where, folder)
            options = {**defaults, **_job_options(entry, where, len(audio))}
            caption, enhanced = entry.get("caption") or "", entry.get("enhance_caption") or ""
            if not isinstance(caption, str) or not isinstance(enhanced, str):
                raise ValueError(f"{where}: caption and enhance_caption must be text")
        except ValueError as err:
            problems.append(JobProblem(where.removeprefix("job ").strip("'"), str(err)))
            continue
        # as the reference: twice into subfolders when the captions differ, else once with enhance_caption
        if caption and enhanced and caption != enhanced:
            prompts = [("caption", caption), ("enhance_caption", enhanced)]
        else:
            prompts = [("default", enhanced or caption)]
        name = output_name(key, audio, options.get("guidance", GUIDANCE))
        for prompt_type, prompt in prompts:
            out = out_dir / name if prompt_type == "default" else out_dir / prompt_type / name
            jobs.append(BatchJob(key, prompt_type, prompt, image, audio, out, options))
    return jobs, problems, warnings


def validate_job(job: BatchJob, face_backend: str = "auto") -> None:
    """Everything about one job that can be checked without the models (files exist, pictures and audio decode,
    enough faces, a valid order); raises ``ValueError`` (or a subclass) with one line naming the job and field."""

    where = f"job {job.key!r}"
    try:
        _validate(job, where, face_backend)
    except (ValueError, OSError) as err:
        if str(err).startswith(where):
            raise
        raise ValueError(f"{where}: {err}") from None


def _validate(job: BatchJob, where: str, face_backend: str) -> None:
    from ..images import read_image
    from ..people.audio import load_audio
    from ..people.faces import detect_faces
    from ..people.routing import parse_order

    if not job.image.is_file():
        raise FileNotFoundError(f"{where}: image_path: file not found: {job.image}")
    picture = read_image(job.image, name=f"{where}: image_path ({job.image})")
    for i, track in enumerate(job.audio):
        if track is None:
            continue
        if not track.is_file():
            raise FileNotFoundError(f"{where}: audio {i + 1}: file not found: {track}")
        load_audio(track, speaker=f"{where}: audio {i + 1} ({track})")
    if all(track is None for track in job.audio):
        raise ValueError(f"{where}: every person is a listener; give at least one audio file")
    parse_order(job.options.get("order"), len(job.audio))
    if job.options.get("faces") is None:
        detect_faces(picture, n=len(job.audio), backend=face_backend)

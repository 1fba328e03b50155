"""Batch rendering (``python -m anytalker_core batch``) on the demo's tiny models: the reference's job file format,
the same frames as ``generate``, resuming, one bad job failing alone, checks before any model loads, local worker
processes and a local Ray cluster, each surviving a killed worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import av
import numpy as np
import pytest

from anytalker_core import demo
from anytalker_core.batch import InProcess, JobFileError, ModelSpec, Processes, output_name, read_jobs, run_batch
from anytalker_core.cli import main
from anytalker_core.pipeline import generate

DEFAULTS = {"size": (64, 96), "num_frames": 9, "steps": 2, "seed": 3, "mode": "pad", "guidance": 4.5}
SPEC = ModelSpec(demo_seed=0)
FLAGS = ["--demo-models", "--device", "cpu", "--size", "96x64", "--frames", "9", "--steps", "2", "--seed", "3"]
A = "a_audio0_left_audio1_right_cfg_4.5.mp4"  # the reference's naming rule
B = "b_audio0_anchor-left_audio1_anchor-right_cfg_4.5.mp4"


def job_folder(root: Path) -> Path:
    """A job file in the reference's format (both audio layouts, differing captions), paths relative to it, plus
    a job that fails at render time (a face box too small to route) and one with a missing audio file."""
    (root / "images").mkdir(parents=True)
    (root / "audios").mkdir()
    shutil.copy(demo.IMAGE, root / "images" / "anchors.jpg")
    shutil.copy(demo.AUDIO[0], root / "audios" / "left.wav")
    shutil.copy(demo.AUDIO[1], root / "audios" / "right.wav")
    shutil.copy(demo.AUDIO[0], root / "audios" / "anchor-left.v2.wav")
    shutil.copy(demo.AUDIO[1], root / "audios" / "anchor-right.wav")
    jobs = {
        "a": {"image_path": "images/anchors.jpg", "caption": "Two news anchors.",
              "enhance_caption": "Two news anchors.", "audio_list": ["audios/left.wav", "audios/right.wav"]},
        "b": {"image_path": "./images/anchors.jpg", "caption": "Two anchors.",
              "enhance_caption": "Two news anchors in a studio, reporting the weather.",
              "audio_left": "audios/anchor-left.v2.wav", "audio_right": "audios/anchor-right.wav",
              "seed": 7, "mode": "concat"},
        "tiny-face": {"image_path": "images/anchors.jpg", "caption": "x", "audio_list": ["audios/left.wav"],
                      "faces": [[0, 0, 2, 2]]},
        "typo": {"image_path": "images/anchors.jpg", "caption": "x", "audio_list": ["audios/lefft.wav"]},
    }  # fmt: skip
    (root / "jobs.json").write_text(json.dumps(jobs, indent=1))
    return root / "jobs.json"


def frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def same_video(a: np.ndarray, b: np.ndarray) -> bool:
    """The same frames, through H.264: libx264 does not always give identical files for identical frames (here the
    first encode in a process differed from later ones on a few pixels, mean 0.03 of 255), so a small mean
    difference is allowed; another seed or prompt differs by tens on average."""
    return a.shape == b.shape and float(np.abs(a.astype(np.int16) - b).mean()) < 0.5


def outputs(out: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(out)): frames(p) for p in sorted(out.rglob("*.mp4"))}


def by_label(report) -> dict:
    return {r.label: r for r in report.results}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The job file rendered in this process, one job after the other: (job file, output folder, report)."""
    root = tmp_path_factory.mktemp("batch")
    job_file = job_folder(root)
    report = run_batch(job_file, root / "out", lambda: InProcess(SPEC, "cpu"), defaults=DEFAULTS, progress=False)
    return job_file, root / "out", report


def test_reads_the_reference_job_file_format(tmp_path):
    job_file = job_folder(tmp_path)
    jobs, problems, warnings = read_jobs(job_file, tmp_path / "out", DEFAULTS)
    assert [(j.label, j.out.relative_to(tmp_path / "out").as_posix()) for j in jobs] == [
        ("a", A), ("b (caption)", f"caption/{B}"), ("b (enhance_caption)", f"enhance_caption/{B}"),
        ("tiny-face", "tiny-face_audio0_left_cfg_4.5.mp4"), ("typo", "typo_audio0_lefft_cfg_4.5.mp4"),
    ]  # fmt: skip
    a, b_caption, b_enhanced = jobs[:3]
    assert a.prompt == "Two news anchors." and a.audio == (tmp_path / "audios/left.wav", tmp_path / "audios/right.wav")
    assert b_caption.prompt == "Two anchors." and b_enhanced.prompt.startswith("Two news anchors in a studio")
    assert b_caption.audio[0] == tmp_path / "audios/anchor-left.v2.wav"
    assert b_caption.options["seed"] == 7 and b_caption.options["mode"] == "concat" and a.options["seed"] == 3
    assert problems == [] and warnings == []
    # the reference's own example names its inputs from the repo root, not from the job file's folder
    nested = tmp_path / "input_example"
    nested.mkdir()
    (nested / "jobs.json").write_text(json.dumps({"k": {"image_path": "./images/anchors.jpg", "caption": "c",
                                                        "audio_list": ["./audios/left.wav"]}}))  # fmt: skip
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        (job,), _, _ = read_jobs(nested / "jobs.json", tmp_path / "out", {"guidance": 5})
    finally:
        os.chdir(cwd)
    assert job.image == (tmp_path / "images/anchors.jpg").resolve() and job.out.name == "k_audio0_left_cfg_5.0.mp4"
    assert output_name("k", (Path("x/a.b.wav"), None, Path("c.mp3")), 4.5) == "k_audio0_a_audio1_c_cfg_4.5.mp4"


def test_bad_entries_and_bad_files_are_named(tmp_path):
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps({
        "prompt-only": "a bare prompt",
        "no-audio": {"image_path": "x.png", "caption": "c"},
        "bad-seed": {"image_path": "x.png", "audio_list": ["a.wav"], "seed": -1},
        "bad-frames": {"image_path": "x.png", "audio_list": ["a.wav"], "frames": 10},
        "bad-offsets": {"image_path": "x.png", "audio_list": ["a.wav", "b.wav"], "offsets": [0]},
        "typo-field": {"image_path": "x.png", "audio_list": ["a.wav"], "sed": 3},
    }))  # fmt: skip
    jobs, problems, warnings = read_jobs(path, tmp_path, DEFAULTS)
    reasons = {p.label: p.reason for p in problems}
    assert "bare prompt" in reasons["prompt-only"] and "no audio" in reasons["no-audio"]
    assert "seed is -1" in reasons["bad-seed"] and "use 9" in reasons["bad-frames"]
    assert "2 start times" in reasons["bad-offsets"]
    assert [j.key for j in jobs] == ["typo-field"] and "sed" in warnings[0]
    path.write_text('{"a": {}, "a": {}}')
    with pytest.raises(JobFileError, match="appears twice"):
        read_jobs(path, tmp_path, DEFAULTS)
    path.write_text('{"a": ')
    with pytest.raises(JobFileError, match="not valid JSON"):
        read_jobs(path, tmp_path, DEFAULTS)


def test_every_job_is_checked_before_any_model_loads(tmp_path, capsys):
    job_file = job_folder(tmp_path)
    jobs = json.loads(job_file.read_text())
    jobs["a"]["audio_list"][1] = "audios/missing.wav"
    jobs["b"]["audio_left"] = "audios/garbage.wav"
    (tmp_path / "audios" / "garbage.wav").write_bytes(b"not audio at all" * 100)
    jobs = {k: jobs[k] for k in ("a", "b", "typo")}
    job_file.write_text(json.dumps(jobs))
    loaded = []
    report = run_batch(job_file, tmp_path / "out", lambda: loaded.append(1), defaults=DEFAULTS, progress=False)
    assert loaded == []  # nothing to render: the models never load
    reasons = {r.label: r.reason for r in report.results}
    assert "job 'a': audio 2: file not found" in reasons["a"] and "missing.wav" in reasons["a"]
    assert reasons["b (caption)"].startswith("job 'b': audio 1") and "garbage.wav" in reasons["b (caption)"]
    # the command line: one line per failed job, a summary, the report, exit 1
    assert main(["batch", str(job_file), "--out", str(tmp_path / "cli"), *FLAGS]) == 1
    printed = capsys.readouterr()
    assert "loading models" not in printed.err and "4 failed" in printed.out
    assert "failed typo: job 'typo': audio 1: file not found" in printed.out
    saved = json.loads((tmp_path / "cli" / "batch_report.json").read_text())
    assert saved["failed"] == 4 and saved["jobs"][0]["status"] == "failed"
    assert main(["batch", str(tmp_path / "nope.json"), *FLAGS]) == 2
    assert "job file not found" in capsys.readouterr().err


def test_batch_renders_each_job_as_generate_does_and_a_bad_job_fails_alone(sequential):
    job_file, out, report = sequential
    results = by_label(report)
    assert {k: r.status for k, r in results.items()} == {
        "a": "done", "b (caption)": "done", "b (enhance_caption)": "done", "tiny-face": "failed", "typo": "failed",
    }  # fmt: skip
    assert "too small" in results["tiny-face"].reason and "lefft.wav" in results["typo"].reason
    assert results["b (caption)"].seed == 7 and results["a"].seed == 3
    assert sorted(outputs(out)) == [A, f"caption/{B}", f"enhance_caption/{B}"]
    assert (out / f"caption/{B}").with_name(Path(B).stem + "_binding.png").stat().st_size > 1000
    saved = json.loads((out / "batch_report.json").read_text())
    assert (saved["done"], saved["failed"], saved["jobs"][1]["output"]) == (3, 2, f"caption/{B}")
    # generate, one clip at a time with the same seeds, gives the same frames
    models, root = SPEC.load("cpu"), job_file.parent
    clips = {
        A: (["audios/left.wav", "audios/right.wav"], "Two news anchors.", {}),
        f"caption/{B}": (["audios/anchor-left.v2.wav", "audios/anchor-right.wav"], "Two anchors.", {"seed": 7}),
        f"enhance_caption/{B}": (
            ["audios/anchor-left.v2.wav", "audios/anchor-right.wav"],
            "Two news anchors in a studio, reporting the weather.",
            {"seed": 7},
        ),
    }
    for name, (audio, prompt, options) in clips.items():
        mode = {"mode": "concat"} if name != A else {}
        video = generate(models, root / "images/anchors.jpg", [root / a for a in audio], prompt, device="cpu",
                         **{**DEFAULTS, **options, **mode})  # fmt: skip
        alone = video.save(root / "alone" / name)
        assert same_video(frames(alone), frames(out / name)), name
    assert not same_video(frames(out / f"caption/{B}"), frames(out / f"enhance_caption/{B}"))


def test_a_stopped_batch_resumes(sequential, tmp_path):
    job_file, out, _ = sequential
    resumed = tmp_path / "out"
    shutil.copytree(out, resumed)
    before = frames(resumed / A)
    (resumed / A).unlink()  # as if the batch had stopped while rendering "a": only a temporary file was left
    (resumed / f".{Path(A).stem}.0123456789ab.tmp.mp4").write_bytes(b"half a video")
    loads = []

    def pool():
        loads.append(1)
        return InProcess(SPEC, "cpu")

    report = run_batch(job_file, resumed, pool, defaults=DEFAULTS, progress=False)
    results = by_label(report)
    assert results["a"].status == "done" and results["b (caption)"].status == "skipped"
    assert results["b (enhance_caption)"].status == "skipped" and loads == [1]
    assert same_video(frames(resumed / A), before)
    assert not list(resumed.glob(".*.tmp.mp4"))  # the leftover of the stopped run is gone


def kill_on_first_step(pids, killed):
    def on_event(kind, worker, job, *info):
        if kind == "step" and not killed and job is not None and job.key == "b":
            killed.append(job.label)
            os.kill(pids()[worker], signal.SIGKILL)

    return on_event


@pytest.mark.timeout(300)
def test_local_worker_processes_survive_a_killed_worker(sequential, tmp_path):
    job_file, out, _ = sequential
    pools, killed = [], []

    def make_pool():
        pools.append(Processes(SPEC, ["cpu", "cpu"], cpus=1))
        return pools[0]

    on_event = kill_on_first_step(lambda: [p.pid for p in pools[0].procs], killed)
    report = run_batch(job_file, tmp_path / "out", make_pool, defaults=DEFAULTS, progress=False, on_event=on_event)
    results = by_label(report)
    assert killed and results[killed[0]].status == "done" and results[killed[0]].attempts == 2
    assert outputs(tmp_path / "out").keys() == outputs(out).keys()
    for name, video in outputs(tmp_path / "out").items():
        assert same_video(video, frames(out / name)), name
    assert not list((tmp_path / "out").rglob(".*.tmp.mp4"))


@pytest.fixture
def ray_cluster():
    """Ray is optional: skipped without it. The batch starts and stops its own local cluster; this makes sure it
    is stopped even when the test fails half-way."""
    ray = pytest.importorskip("ray")
    yield ray
    if ray.is_initialized():
        ray.shutdown()


@pytest.mark.timeout(300)
def test_a_ray_cluster_renders_the_same_and_reruns_a_killed_actors_job(sequential, tmp_path, ray_cluster):
    from anytalker_core.batch.cluster import RayPool

    job_file, out, _ = sequential
    pools, killed = [], []

    def make_pool():
        pools.append(RayPool(SPEC, address=None, workers=2, gpu=False, cpus=1))
        return pools[0]

    def on_event(kind, worker, job, *info):
        if kind == "start" and job.key == "b" and not killed:
            killed.append(job.label)
            ray_cluster.kill(pools[0].actors[worker], no_restart=True)

    report = run_batch(job_file, tmp_path / "out", make_pool, defaults=DEFAULTS, progress=False, on_event=on_event)
    results = by_label(report)
    assert len({results[k].worker for k in ("a", "b (caption)", "b (enhance_caption)")}) >= 2
    assert killed and results[killed[0]].status == "done" and results[killed[0]].attempts == 2
    for name, video in outputs(out).items():
        assert same_video(video, frames(tmp_path / "out" / name)), name
    assert not ray_cluster.is_initialized()  # the batch stopped the cluster it started


def test_ray_missing_says_how_to_install(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    job_file = job_folder(tmp_path)
    assert main(["batch", str(job_file), "--ray", *FLAGS]) == 2
    err = capsys.readouterr().err
    assert "--ray needs the Ray package" in err and "pip install ray" in err

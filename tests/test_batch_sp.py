"""``batch --sp N`` (``anytalker_core/batch/ranks.py``): 2 gloo processes render a job file clip by clip, each clip's
model calls split over both, and write what one process writes; only rank 0 writes; flags that choose other
workers are refused before anything is written."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from anytalker_core import demo
from anytalker_core.cli import main
from parallel_ranks import run_ranks

TIMEOUT = 180.0  # seconds for all ranks of one run together (spawned ranks import torch, load, render, encode)
FLAGS = ["--demo-models", "--device", "cpu", "--size", "96x64", "--frames", "5", "--steps", "1"]
A, B = "a_audio0_left_audio1_right_cfg_4.5.mp4", "b_audio0_right_cfg_4.5.mp4"
DONE = "done_audio0_left_cfg_4.5.mp4"  # already rendered: skipped


def job_folder(root: Path) -> Path:
    """Two jobs to render (two people; one) and one whose output exists, paths relative to the job file."""
    root.mkdir(parents=True)
    shutil.copy(demo.IMAGE, root / "anchors.jpg")
    shutil.copy(demo.AUDIO[0], root / "left.wav")
    shutil.copy(demo.AUDIO[1], root / "right.wav")
    jobs = {
        "a": {"image_path": "anchors.jpg", "caption": "Two news anchors.", "audio_list": ["left.wav", "right.wav"]},
        "done": {"image_path": "anchors.jpg", "caption": "x", "audio_list": ["left.wav"]},
        "b": {"image_path": "anchors.jpg", "caption": "One anchor.", "audio_list": ["right.wav"], "mode": "concat"},
    }  # fmt: skip
    (root / "jobs.json").write_text(json.dumps(jobs))
    return root / "jobs.json"


def captured_batch(rank: int, ranks: int, argv: list[str], kept: str) -> dict:
    """One process of a batch, alone or one rank of ``batch --sp N`` (the process group already joined, as torchrun's
    workers would join it). The uint8 frames handed to the mp4 writer go to ``kept/rank<r>/<video name>.npy``
    (the encoder's own rounding is not what is tested). Returns the exit code, what it printed on stdout, every
    file its writers wrote and how many model calls ran split."""
    from anytalker_core.model import parallel
    from anytalker_core.pipeline import standalone, writer

    calls, written = [], []
    split, write, png = parallel.sequence_parallel_forward, standalone.write_video, writer.write_png
    parallel.sequence_parallel_forward = lambda *a, **kw: calls.append(1) or split(*a, **kw)

    def write_and_keep(path, frames, *args, **kwargs):
        chunks = []

        def keep(chunks_in):
            for chunk in chunks_in:
                chunks.append(np.asarray(chunk))
                yield chunk

        written.append(str(path))
        done = write(path, keep(frames), *args, **kwargs)
        (Path(kept) / f"rank{rank}").mkdir(parents=True, exist_ok=True)
        np.save(Path(kept) / f"rank{rank}" / f"{Path(path).name}.npy", np.concatenate(chunks))
        return done

    def write_png(path, *args, **kwargs):
        written.append(str(path))
        return png(path, *args, **kwargs)

    standalone.write_video, writer.write_png = write_and_keep, write_png
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(argv)
    return {"code": code, "stdout": out.getvalue(), "written": written, "split_calls": len(calls)}


def files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def report_of(out: Path) -> dict:
    """The report without what differs from run to run (times, the output folder)."""
    saved = json.loads((out / "batch_report.json").read_text())
    jobs = [{k: v for k, v in job.items() if k != "seconds"} for job in saved["jobs"]]
    return {"counts": (saved["done"], saved["skipped"], saved["failed"]), "jobs": jobs}


@pytest.mark.timeout(2 * TIMEOUT + 60)
def test_batch_with_sp_2_writes_what_one_process_writes_and_only_rank_0_writes(tmp_path):
    job_file = job_folder(tmp_path / "inputs")
    split, alone = tmp_path / "split", tmp_path / "alone"
    for out in (split, alone):  # the job "done" was rendered by an earlier run
        out.mkdir()
        (out / DONE).write_bytes(b"an earlier run's video")
    # no --seed: rank 0 draws one; it travels in the jobs, so rank 1 samples the same noise
    ranks = run_ranks(captured_batch, 2, ["batch", str(job_file), "--out", str(split), *FLAGS, "--sp", "2"],
                      str(tmp_path / "kept_split"), tmp=tmp_path, timeout=TIMEOUT)  # fmt: skip
    seeds = {job["seed"] for job in report_of(split)["jobs"] if job["status"] == "done"}
    assert len(seeds) == 1, seeds
    # one process, one thread (as each rank), the seed rank 0 drew
    (one,) = run_ranks(captured_batch, 1, ["batch", str(job_file), "--out", str(alone), *FLAGS, "--seed",
                       str(seeds.pop())], str(tmp_path / "kept_alone"), tmp=tmp_path, timeout=TIMEOUT)  # fmt: skip

    assert [r["code"] for r in ranks] == [0, 0] and one["code"] == 0
    assert "batch: 2 done, 1 skipped" in ranks[0]["stdout"] and ranks[1]["stdout"] == ""
    # each rank ran every model call of both jobs split (one step, guidance: the same count on both)
    assert ranks[0]["split_calls"] == ranks[1]["split_calls"] > 0 and one["split_calls"] == 0
    # the same files and the same report; the skipped job is untouched
    assert files(split) == files(alone) == sorted([A, B, DONE, A[:-4] + "_binding.png", B[:-4] + "_binding.png",
                                                   "batch_report.json"])  # fmt: skip
    assert (split / DONE).read_bytes() == b"an earlier run's video"
    got, expected = report_of(split), report_of(alone)
    assert got["counts"] == expected["counts"] == (2, 1, 0)
    assert [job.pop("worker") for job in got["jobs"]] == ["main (--sp 2)", None, "main (--sp 2)"]
    assert [job.pop("worker") for job in expected["jobs"]] == ["main", None, "main"]
    assert got["jobs"] == expected["jobs"]
    # rank 1 wrote only into its scratch folder, which is gone; rank 0 wrote only into --out
    assert ranks[1]["written"] and all(Path(p).parent != split and not Path(p).exists() for p in ranks[1]["written"])
    assert all(Path(p).parent == split for p in ranks[0]["written"])
    for name in (A, B):
        got = np.load(tmp_path / "kept_split" / "rank0" / f"{name}.npy").astype(int)
        expected = np.load(tmp_path / "kept_alone" / "rank0" / f"{name}.npy").astype(int)
        # the same prediction up to float rounding, which may move a pixel by one level on a rounding edge
        assert got.shape == expected.shape == (5, 64, 96, 3), name
        assert np.abs(got - expected).max() <= 1 and (got != expected).mean() < 0.01, name
        # every rank decodes the same gathered prediction
        assert np.array_equal(got, np.load(tmp_path / "kept_split" / "rank1" / f"{name}.npy")), name


def test_an_output_folder_only_rank_0_cannot_write_stops_every_rank_without_a_hang(tmp_path):
    job_file = job_folder(tmp_path / "inputs")
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "out"  # rank 0 cannot make it; the others render into their scratch folders
    codes = run_ranks(captured_batch, 2, ["batch", str(job_file), "--out", str(out), *FLAGS, "--sp", "2"],
                      str(tmp_path / "kept"), tmp=tmp_path, timeout=TIMEOUT)  # fmt: skip
    assert [(r["code"], r["split_calls"], r["written"]) for r in codes] == [(2, 0, []), (0, 0, [])]


def load_fails_on_rank_1(rank: int, ranks: int) -> str | int:
    """Rank 0 leads with the demo's models; rank 1's model files are missing."""
    from anytalker_core.batch import BatchError, ModelSpec
    from anytalker_core.batch.ranks import LeadingPool, follow, lead

    if rank:
        return follow(ModelSpec(dit="/nowhere/dit.safetensors", vae="/nowhere/vae.safetensors"), "cpu")
    try:
        with lead():
            LeadingPool(ModelSpec(demo_seed=0), "cpu")
    except BatchError as err:
        return str(err)
    return "no error"


def test_a_rank_whose_models_do_not_load_stops_the_batch_on_every_rank_without_a_hang(tmp_path):
    message, rendered = run_ranks(load_fails_on_rank_1, 2, tmp=tmp_path, timeout=TIMEOUT)
    assert message.startswith("on rank 1: the models did not load:") and "nowhere" in message
    assert rendered == 0


def test_sp_without_torchrun_says_how_to_start_it_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    job_file = job_folder(tmp_path / "inputs")
    assert main(["batch", str(job_file), "--out", str(tmp_path / "out"), *FLAGS, "--sp", "2"]) == 2
    err = capsys.readouterr().err
    assert "torchrun --nproc-per-node 2 -m anytalker_core batch ... --sp 2" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--ray"], "--sp 2 renders each clip on the 2 processes torchrun started, --ray spreads whole clips"),
        (["--devices", "0,1"], "drop --devices"),
        (["--workers", "2"], "--workers 2 renders several clips at once, but with --sp 2"),
        (["--sp", "0"], "--sp is 0; expected a number of processes >= 1"),
    ],
)
def test_sp_with_flags_that_choose_other_workers_is_refused_up_front(tmp_path, capsys, flags, says):
    job_file = job_folder(tmp_path / "inputs")
    assert main(["batch", str(job_file), "--out", str(tmp_path / "out"), *FLAGS, "--sp", "2", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()

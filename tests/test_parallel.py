"""Sequence parallelism by whole latent frames (``anytalker_core/model/parallel.py``): 2 and 3 gloo processes
on CPU give the single process's prediction, both variants, 1-3 people, uneven frame counts."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from anytalker_core.cli import main
from anytalker_core.model.parallel import check_ranks, frame_shares, sequence_parallel_forward
from micro import micro_inputs, micro_model, run
from parallel_ranks import run_ranks

TIMEOUT = 60.0  # seconds for all ranks together; a hung collective fails the test


def split_forward(rank: int, ranks: int, variant: str, people: int, frames: int) -> torch.Tensor:
    """One rank: the micro model (the same seed everywhere) on the same inputs, frames split over the ranks."""
    model = micro_model(variant, num_heads=6, dim=48, ffn_dim=48)
    inputs = micro_inputs(model.config, frames=frames, identities=people)
    with torch.no_grad():
        return sequence_parallel_forward(model, inputs.pop("x"), inputs.pop("t"), **inputs)


@pytest.mark.parametrize(
    "variant, people, frames, ranks",
    [("af", 2, 5, 2), ("legacy", 2, 5, 2), ("af", 1, 4, 3), ("legacy", 3, 5, 3), ("af", 3, 7, 3)],
)
def test_frame_split_forward_equals_one_process(tmp_path, variant, people, frames, ranks):
    model = micro_model(variant, num_heads=6, dim=48, ffn_dim=48)
    inputs = micro_inputs(model.config, frames=frames, identities=people)
    expected = run(model, inputs)
    outs = run_ranks(split_forward, ranks, variant, people, frames, tmp=tmp_path, timeout=TIMEOUT)
    for rank, out in enumerate(outs):
        assert out.shape == expected.shape
        assert (out - expected).abs().max() <= 1e-5, f"rank {rank} of {ranks}"


def test_frame_shares_are_whole_contiguous_frames_as_even_as_possible():
    assert frame_shares(21, 2) == [(0, 11), (11, 21)]
    assert frame_shares(21, 4) == [(0, 6), (6, 11), (11, 16), (16, 21)]
    assert frame_shares(3, 3) == [(0, 1), (1, 2), (2, 3)]


def test_ranks_that_do_not_divide_the_heads_are_refused_with_both_numbers():
    with pytest.raises(ValueError, match=r"divisible by 5.*has 12 heads.*2, 3, 4, 6, 12"):
        check_ranks(12, 21, 5)
    with pytest.raises(ValueError, match=r"2 latent frames for 3 ranks"):
        check_ranks(12, 2, 3)
    check_ranks(40, 21, 8)


def captured_demo(rank: int, ranks: int, out: str, sp: bool) -> tuple[int, int]:
    """One process of the demo, alone (``sp`` False) or one rank of ``demo --sp N`` (the process group is already
    joined, as torchrun's workers would join it). The uint8 frames handed to the mp4 writer are kept next to the
    video as ``.npy`` (the encoder's own rounding is not what is tested). Returns the exit code and how many model
    calls ran split."""
    from anytalker_core.model import parallel
    from anytalker_core.pipeline import standalone

    calls, split, write = [], parallel.sequence_parallel_forward, standalone.write_video
    parallel.sequence_parallel_forward = lambda *a, **kw: calls.append(1) or split(*a, **kw)
    kept: list[np.ndarray] = []

    def keep(chunks):
        for chunk in chunks:
            kept.append(np.asarray(chunk))
            yield chunk

    def write_and_keep(path, frames, *args, **kwargs):
        written = write(path, keep(frames), *args, **kwargs)
        np.save(f"{path}.npy", np.concatenate(kept))
        return written

    standalone.write_video = write_and_keep
    flags = ["--sp", str(ranks)] if sp else []
    code = main(["demo", "--steps", "1", "--seconds", "0.4", "--out", out, *flags])
    return code, len(calls)


def frames(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_the_demo_with_sp_2_renders_the_same_video_and_only_rank_0_writes(tmp_path):
    alone, split = tmp_path / "alone.mp4", tmp_path / "split.mp4"
    # both runs in spawned one-thread processes, so the only difference left is the split itself
    assert run_ranks(captured_demo, 1, str(alone), False, tmp=tmp_path, timeout=3 * TIMEOUT) == [(0, 0)]
    # a whole demo per rank (spawned processes import torch and encode a video): more time than one forward
    assert run_ranks(captured_demo, 2, str(split), True, tmp=tmp_path, timeout=3 * TIMEOUT) == [(0, 1), (0, 1)]
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["alone.mp4", "split.mp4"]
    got, expected = np.load(f"{split}.npy").astype(int), np.load(f"{alone}.npy").astype(int)
    # the same prediction up to float rounding, which may move a pixel by one level where it sits on a rounding edge
    assert got.shape == expected.shape == (13, 128, 192, 3)
    assert np.abs(got - expected).max() <= 1 and (got != expected).mean() < 0.01
    assert len(frames(split)) == 13


def test_sp_without_torchrun_says_how_to_start_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["demo", "--steps", "1", "--out", str(tmp_path / "x.mp4"), "--sp", "2"]) == 2
    assert "torchrun --nproc-per-node 2 -m anytalker_core demo" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()

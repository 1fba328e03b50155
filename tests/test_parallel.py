"""Sequence parallelism by whole latent frames (``anytalker_core/model/parallel.py``): 2 and 3 gloo processes
on CPU give the single process's prediction, both variants, 1-3 people, uneven frame counts."""

from __future__ import annotations

import pytest
import torch

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

"""The flow-matching noise schedule: the sigmas the solvers step through and the model's timesteps.

:func:`flow_sigmas` is the schedule of the reference's ``FlowUniPCMultistepScheduler`` (Wan2.1's
``wan/utils/fm_solvers_unipc.py``) as the reference builds it: ``FlowUniPCMultistepScheduler(
num_train_timesteps=1000, shift=5, use_dynamic_shifting=False)``, then ``set_timesteps(steps, shift=sample_shift)``
(``wan/audio2video_multiID.py``). The constructor's shift (always 5 there) sets the end points, the sample shift
the spacing between them; see ``docs/model.md``, "Guidance and sampling".
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .defaults import SCHEDULER_SHIFT

__all__ = ["NUM_TRAIN_TIMESTEPS", "check_schedule_args", "flow_sigmas", "timestep_lookup"]

NUM_TRAIN_TIMESTEPS = 1000
"""The reference's training timesteps: the model's timestep is ``int(sigma * 1000)``."""


def check_schedule_args(steps: Any, shift: Any) -> None:
    """Raise TypeError/ValueError unless ``steps`` is an int >= 1 and ``shift`` a finite number > 0."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if isinstance(shift, bool) or not isinstance(shift, (int, float, np.floating, np.integer)):
        raise TypeError(f"shift must be a number, got {type(shift).__name__}")
    if not np.isfinite(shift) or shift <= 0:
        raise ValueError(f"shift must be a finite number > 0, got {shift}")


def flow_sigmas(
    steps: int,
    shift: float = 5.0,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
    *,
    scheduler_shift: float = SCHEDULER_SHIFT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference schedule: ``(sigmas float32 [steps + 1] ending in 0, timesteps int64 [steps])``.

    As the reference scheduler computes it: the training sigmas ``1 - linspace(1, 1/N, N)[::-1]`` are shifted
    once by ``scheduler_shift`` (the constructor's, 5 in the reference; in float32) and give sigma_max and
    sigma_min; ``steps`` sigmas are spaced linearly from sigma_max towards sigma_min in float64 (the last point
    dropped) and shifted by ``shift`` (the sample shift); ``timesteps = int64(sigmas * N)``; the sigmas are
    stored in float32 with a final 0. With ``shift == scheduler_shift`` both shifts are the same.
    """
    check_schedule_args(steps, shift)
    check_schedule_args(1, scheduler_shift)
    if not isinstance(num_train_timesteps, (int, np.integer)) or num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be an int >= 2, got {num_train_timesteps}")
    n = int(num_train_timesteps)
    alphas = np.linspace(1, 1 / n, n)[::-1].copy()
    train = torch.from_numpy(1.0 - alphas).to(torch.float32)
    train = scheduler_shift * train / (1 + (scheduler_shift - 1) * train)  # float32, as the constructor does
    sigma_max, sigma_min = train[0].item(), train[-1].item()

    sig = np.linspace(sigma_max, sigma_min, steps + 1).copy()[:-1]  # float64
    sig = shift * sig / (1 + (shift - 1) * sig)
    timesteps = torch.from_numpy(sig * n).to(torch.int64)
    sigmas = torch.from_numpy(np.concatenate([sig, [0]]).astype(np.float32))
    return sigmas, timesteps


def timestep_lookup(
    sigmas: torch.Tensor, timesteps: torch.Tensor, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> Callable[[float], int]:
    """``timestep(sigma) -> int``: the schedule's own timestep for each of its sigmas (as the reference passes
    them, computed in float64 before the float32 sigmas), ``int(sigma * N)`` for any other sigma."""
    known = {float(s): int(t) for s, t in zip(sigmas[:-1].tolist(), timesteps.tolist())}
    n = int(num_train_timesteps)

    def timestep(sigma: float) -> int:
        return known[sigma] if sigma in known else int(sigma * n)

    return timestep

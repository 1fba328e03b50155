"""The reference's sampling settings, in one place; every entry point (``at.sample``, the pipeline, the command
line, the nodes) reads them from here.

From the reference's documented commands (its README, HKUST-C4G/AnyTalker) and ``generate_a2v_batch_multiID.py``:

- ``--sample_guide_scale 4.5``: one guidance scale for text and audio together (:data:`GUIDANCE`);
- ``--sample_steps 40`` for the 1.3B checkpoint (variant ``af``), ``20`` for the 14B (``legacy``) (:data:`STEPS`);
- ``sample_shift``: 3.0 for a2v at ``--size 832*480`` or ``480*832``, 5.0 otherwise (:func:`default_shift`);
- the scheduler itself is built with ``FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=5)``
  before ``set_timesteps(steps, shift=sample_shift)``: its end points come from shift 5 whatever the sample shift
  (:data:`SCHEDULER_SHIFT`, used by :func:`~.schedule.flow_sigmas`).
"""

from __future__ import annotations

from ..sizes import PIXELS_PER_LATENT, is_480p

GUIDANCE = 4.5
STEPS = {"af": 40, "legacy": 20}
SHIFT_480P = 3.0
SHIFT_OTHER = 5.0
SCHEDULER_SHIFT = 5.0


def default_steps(variant: str | None) -> int:
    """The reference's steps for a checkpoint variant (40 for ``af``, 20 for ``legacy``; 40 when unknown)."""
    return STEPS.get(variant or "af", STEPS["af"])


def default_shift(height: int, width: int) -> float:
    """The reference's sample shift for a ``height`` x ``width`` video: 3 for a 480p clip
    (:func:`~anytalker_core.sizes.is_480p`), else 5."""
    return SHIFT_480P if is_480p(int(height), int(width)) else SHIFT_OTHER


def default_shift_for_latent(latent_hw: tuple[int, int]) -> float:
    """:func:`default_shift` for a latent of ``(H/8, W/8)`` cells."""
    return default_shift(latent_hw[0] * PIXELS_PER_LATENT, latent_hw[1] * PIXELS_PER_LATENT)

"""From noise to a latent: the noise schedule, the solvers and classifier-free guidance.

- :mod:`.defaults`: the reference's settings (guidance 4.5; 40 / 20 steps; shift 3 at 480p, else 5);
- :mod:`.schedule`: :func:`~.schedule.flow_sigmas`, the reference's flow-matching sigmas and timesteps;
- :mod:`.solvers`: the k-diffusion-style solvers (the reference's flow UniPC, Euler, DPM++ 2M) and their names;
- :mod:`.guidance`: :func:`~.guidance.sample`, guidance over the model's conditioning (text and audio).
"""

from .defaults import GUIDANCE, default_shift, default_steps
from .guidance import negative_cond, null_audio, sample
from .schedule import flow_sigmas
from .solvers import SOLVER_NAMES, SOLVERS, SamplingCancelled, get_solver

__all__ = [
    "GUIDANCE",
    "SOLVERS",
    "SOLVER_NAMES",
    "SamplingCancelled",
    "default_shift",
    "default_steps",
    "flow_sigmas",
    "get_solver",
    "negative_cond",
    "null_audio",
    "sample",
]

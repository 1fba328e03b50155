"""The k-diffusion-style solvers: the reference's flow UniPC (exact, step for step), Euler and DPM++ 2M.

A solver steps a denoiser ``denoise(x, sigma) -> x0`` through the sigmas of :func:`~.schedule.flow_sigmas`;
``sigma`` is a ``[B]`` tensor holding ``sigmas[i]`` (as k-diffusion and ComfyUI pass ``sigmas[i] * s_in``),
so a host's sampler machinery can wrap them. In flow matching ``x_sigma = (1 - sigma) * x0 + sigma * noise``
and the model predicts the velocity ``v = noise - x0``, so ``x0 = x - sigma * v``; alpha = 1 - sigma.

- :func:`sample_unipc`: the reference's UniPC (``FlowUniPCMultistepScheduler.step`` in Wan2.1's
  ``wan/utils/fm_solvers_unipc.py``: bh2, order 2, predict_x0, lower_order_final, corrector on every step).
- :func:`sample_euler`: the flow ODE's Euler step ``x += (sigma_next - sigma) * v``.
- :func:`sample_dpmpp_2m`: DPM-Solver++(2M) in data prediction with alpha = 1 - sigma (first order on the
  first step and on the step to sigma 0).

The loop is shared (:func:`_drive`): each solver only gives its update rule. Every solver calls
``should_stop()`` before each model evaluation (True raises :class:`SamplingCancelled`, carrying the number
of steps completed) and ``callback(step, total, x0)`` after each step (``step`` is the 0-based index of the
step just taken, ``total`` the number of steps, ``x0`` the denoised estimate of that step).
:data:`SOLVERS` maps each name of :data:`SOLVER_NAMES` to its function.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = [
    "SOLVERS",
    "SOLVER_NAMES",
    "SamplingCancelled",
    "get_solver",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_unipc",
]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor], Any]
ShouldStop = Callable[[], bool]
Step = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
"""``step(i, x, x0) -> x``: a solver's update rule, from the sample at ``sigmas[i]`` and its denoised estimate
``x0`` to the sample at ``sigmas[i + 1]``."""


class SamplingCancelled(Exception):
    """Raised by a solver when its ``should_stop`` hook returns True; ``steps_done`` steps were completed."""

    def __init__(self, steps_done: int, total: int):
        super().__init__(f"sampling cancelled after {steps_done} of {total} steps")
        self.steps_done = steps_done
        self.total = total


# ---------------------------------------------------------------------------------------------------------
# the loop every solver shares


def _check_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    if not isinstance(sigmas, torch.Tensor):
        sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    if sigmas.dim() != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D tensor of at least 2 values, got shape {tuple(sigmas.shape)}")
    return sigmas.detach().to("cpu")


@torch.no_grad()
def _drive(
    make_step: Callable[[torch.Tensor], Step],
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback | None,
    should_stop: ShouldStop | None,
) -> torch.Tensor:
    """Step ``x`` through ``sigmas`` with the update rule ``make_step(sigmas)`` (a fresh one per run, so it may
    keep state): per step, ``should_stop``, the denoiser at ``sigmas[i]``, the update, then ``callback``."""
    sigmas = _check_sigmas(sigmas)
    total = sigmas.numel() - 1
    step = make_step(sigmas)
    for i in range(total):
        if should_stop is not None and should_stop():
            raise SamplingCancelled(i, total)
        sigma_in = sigmas[i].to(device=x.device, dtype=torch.float32).expand(x.shape[0]).clone()
        x0 = denoise(x, sigma_in).to(x.dtype)
        x = step(i, x, x0)
        if callback is not None:
            callback(i, total, x0)
    return x


def _lambda(sigma: torch.Tensor) -> torch.Tensor:
    """log(alpha / sigma) with alpha = 1 - sigma, as float32 scalars like the reference."""
    return torch.log(1 - sigma) - torch.log(sigma)


# ---------------------------------------------------------------------------------------------------------
# UniPC


def sample_unipc(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback | None = None,
    should_stop: ShouldStop | None = None,
) -> torch.Tensor:
    """UniPC as the reference's ``FlowUniPCMultistepScheduler.step`` (bh2, solver_order 2, predict_x0,
    lower_order_final, no step without corrector, final sigma 0).

    Per step i: x0 = denoise(x, sigmas[i]); the UniC corrector refines x with this new x0 (every step but the
    first, at the order of the previous predictor); the UniP predictor then moves to sigmas[i + 1] at order
    min(2, steps - i, i + 1) (order 1 to warm up, and on the last step).
    """
    return _drive(_unipc_step, denoise, x, sigmas, callback, should_stop)


def _unipc_step(sigmas: torch.Tensor) -> Step:
    total = sigmas.numel() - 1
    outputs: list[torch.Tensor] = []  # x0 of the previous steps, newest last (at most 2)
    last_sample: torch.Tensor | None = None
    prev_order = 0

    def step(i: int, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        nonlocal outputs, last_sample, prev_order
        if i > 0 and last_sample is not None:  # UniC with the new model output
            x = _unic(x0, outputs, last_sample, sigmas, i, prev_order)
        outputs = (outputs + [x0])[-2:]
        order = min(2, total - i, i + 1)  # lower_order_final, then warm-up
        last_sample = x
        prev_order = order
        return _unip(x, outputs, sigmas, i, order)

    return step


def _bh2_coefficients(h: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """hh = -h (predict_x0), h*phi_1 = expm1(hh), B(h) = expm1(hh) (bh2) and the b_i of the reference."""
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = torch.expm1(hh)
    factorial_i = 1
    b = []
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial_i / b_h)
        factorial_i *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial_i
    return h_phi_1, b_h, b


def _unip(x: torch.Tensor, outputs: list[torch.Tensor], sigmas: torch.Tensor, i: int, order: int) -> torch.Tensor:
    """UniP-bh2 predictor from sigmas[i] to sigmas[i + 1] (``multistep_uni_p_bh_update``)."""
    m0 = outputs[-1]
    sigma_t, sigma_s0 = sigmas[i + 1], sigmas[i]
    alpha_t = 1 - sigma_t
    if sigma_t == 0:
        # lambda_t = +inf: h*phi_1 = B(h) = -1 and the first-order step lands on x0 exactly (as the
        # reference computes it with infinities; order is 1 on the last step with lower_order_final).
        if order != 1:
            raise AssertionError("the step to sigma 0 is first order")
        return m0.to(x.dtype)
    h = _lambda(sigma_t) - _lambda(sigma_s0)
    h_phi_1, b_h, _ = _bh2_coefficients(h, order)
    x_t = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
    if order == 2:
        lambda_s1 = _lambda(sigmas[i - 1])
        rk = (lambda_s1 - _lambda(sigma_s0)) / h
        d1 = (outputs[-2] - m0) / rk
        rho_p = torch.tensor(0.5, dtype=x.dtype)  # the reference's simplified order-2 rho
        x_t = x_t - alpha_t * b_h * (rho_p * d1)
    elif order != 1:
        raise NotImplementedError("UniPC here is solver_order 2")
    return x_t.to(x.dtype)


def _unic(
    model_t: torch.Tensor,
    outputs: list[torch.Tensor],
    last_sample: torch.Tensor,
    sigmas: torch.Tensor,
    i: int,
    order: int,
) -> torch.Tensor:
    """UniC-bh2 corrector of the sample at sigmas[i] (``multistep_uni_c_bh_update``); ``outputs`` are the
    x0 before this step's (newest last), ``model_t`` is this step's x0."""
    m0 = outputs[-1]
    x = last_sample
    sigma_t, sigma_s0 = sigmas[i], sigmas[i - 1]
    alpha_t = 1 - sigma_t
    lambda_s0 = _lambda(sigma_s0)
    h = _lambda(sigma_t) - lambda_s0
    h_phi_1, b_h, b = _bh2_coefficients(h, order)
    x_t = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
    d1_t = model_t - m0
    if order == 1:
        rhos_c = torch.tensor([0.5], dtype=x.dtype)
        corr = rhos_c[-1] * d1_t
    elif order == 2:
        rk = (_lambda(sigmas[i - 2]) - lambda_s0) / h
        d1 = (outputs[-2] - m0) / rk
        rks = torch.stack([rk, torch.ones((), dtype=rk.dtype)])
        r = torch.stack([torch.ones_like(rks), rks])
        rhos_c = torch.linalg.solve(r, torch.stack(b)).to(x.dtype)
        corr = rhos_c[0] * d1 + rhos_c[-1] * d1_t
    else:
        raise NotImplementedError("UniPC here is solver_order 2")
    return (x_t - alpha_t * b_h * corr).to(x.dtype)


# ---------------------------------------------------------------------------------------------------------
# Euler and DPM++ 2M


def sample_euler(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback | None = None,
    should_stop: ShouldStop | None = None,
) -> torch.Tensor:
    """Euler on the flow ODE: v = (x - x0) / sigma, x <- x + (sigma_next - sigma) * v."""
    return _drive(_euler_step, denoise, x, sigmas, callback, should_stop)


def _euler_step(sigmas: torch.Tensor) -> Step:
    def step(i: int, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if sigma_next == 0:
            return x0
        v = (x - x0) / sigma
        return (x + (sigma_next - sigma) * v).to(x.dtype)

    return step


def sample_dpmpp_2m(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback | None = None,
    should_stop: ShouldStop | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), data prediction, with alpha = 1 - sigma and lambda = log(alpha / sigma):
    x <- (sigma_next / sigma) x - alpha_next expm1(-h) D, D = x0 on the first step and (1 + 1/2r) x0 - 1/2r x0_prev
    after it (r = h_prev / h); the step to sigma 0 returns x0."""
    return _drive(_dpmpp_2m_step, denoise, x, sigmas, callback, should_stop)


def _dpmpp_2m_step(sigmas: torch.Tensor) -> Step:
    old_x0: torch.Tensor | None = None
    h_last: torch.Tensor | None = None

    def step(i: int, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        nonlocal old_x0, h_last
        sigma, sigma_next = sigmas[i].double(), sigmas[i + 1].double()
        if sigma_next == 0:
            x = x0
        else:
            h = _lambda(sigma_next) - _lambda(sigma)
            if old_x0 is None or h_last is None:
                d = x0
            else:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old_x0
            x = ((sigma_next / sigma) * x - (1 - sigma_next) * torch.expm1(-h) * d).to(x.dtype)
            h_last = h
        old_x0 = x0
        return x

    return step


# ---------------------------------------------------------------------------------------------------------
# the table


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {
    "unipc": sample_unipc,
    "euler": sample_euler,
    "dpmpp_2m": sample_dpmpp_2m,
}

SOLVER_NAMES: tuple[str, ...] = tuple(SOLVERS)
"""The solvers' names, the reference's first: ``("unipc", "euler", "dpmpp_2m")``."""


def get_solver(name: str) -> Callable[..., torch.Tensor]:
    """The solver called ``name`` (one of :data:`SOLVER_NAMES`); ValueError naming the valid ones otherwise."""
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; expected one of {', '.join(SOLVER_NAMES)}")
    return SOLVERS[name]

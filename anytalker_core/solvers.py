"""The flow-matching schedule and three solvers (UniPC exact to the reference, Euler, DPM++ 2M).

- :func:`flow_sigmas` is the schedule of the reference's ``FlowUniPCMultistepScheduler`` (built with
  ``num_train_timesteps=1000, shift=shift, use_dynamic_shifting=False``, then ``set_timesteps(steps,
  shift=shift)``): float32 sigmas ending in 0 and the int64 model timesteps.
- The solvers work in the k-diffusion style on a denoiser ``denoise(x, sigma) -> x0`` where ``sigma`` is a
  ``[B]`` tensor holding ``sigmas[i]`` (as k-diffusion and ComfyUI pass ``sigmas[i] * s_in``), so a host's
  sampler machinery can wrap them. In flow matching ``x_sigma = (1 - sigma) * x0 + sigma * noise`` and the
  model predicts the velocity ``v = noise - x0``, so ``x0 = x - sigma * v``; alpha = 1 - sigma.

  * :func:`sample_unipc`: the reference's UniPC (bh2, order 2, predict_x0, lower_order_final, corrector on
    every step), step for step as its ``step()``.
  * :func:`sample_euler`: the flow ODE's Euler step ``x += (sigma_next - sigma) * v``.
  * :func:`sample_dpmpp_2m`: DPM-Solver++(2M) in data prediction with alpha = 1 - sigma (first order on the
    first step and on the step to sigma 0).

  Each solver calls ``callback(step, total, x0)`` after every step (``step`` is the 0-based index of the step
  just taken, ``total`` the number of steps, ``x0`` the denoised estimate of that step) and calls
  ``should_stop()`` before every model evaluation; when it returns True, :class:`SamplingCancelled` is
  raised, carrying the number of steps completed.
- :func:`anytalker_core.sampling.sample` drives an AnyTalker model with guidance.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

__all__ = ["SOLVERS", "SamplingCancelled", "flow_sigmas", "sample_dpmpp_2m", "sample_euler", "sample_unipc"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor], Any]
ShouldStop = Callable[[], bool]


class SamplingCancelled(Exception):
    """Raised by a solver when its ``should_stop`` hook returns True; ``steps_done`` steps were completed."""

    def __init__(self, steps_done: int, total: int):
        super().__init__(f"sampling cancelled after {steps_done} of {total} steps")
        self.steps_done = steps_done
        self.total = total


# ---------------------------------------------------------------------------------------------------------
# schedule


def check_schedule_args(steps: Any, shift: Any) -> None:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if isinstance(shift, bool) or not isinstance(shift, (int, float, np.floating, np.integer)):
        raise TypeError(f"shift must be a number, got {type(shift).__name__}")
    if not np.isfinite(shift) or shift <= 0:
        raise ValueError(f"shift must be a finite number > 0, got {shift}")


def flow_sigmas(steps: int, shift: float = 5.0, num_train_timesteps: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference schedule: ``(sigmas float32 [steps + 1] ending in 0, timesteps int64 [steps])``.

    As the reference scheduler computes it: the training sigmas ``1 - linspace(1, 1/N, N)[::-1]`` are
    shifted once (in float32) and give sigma_max and sigma_min; ``steps`` sigmas are spaced linearly from
    sigma_max towards sigma_min in float64 (the last point dropped), shifted again, and
    ``timesteps = int64(sigmas * N)``; the sigmas are stored in float32 with a final 0.
    """
    check_schedule_args(steps, shift)
    if not isinstance(num_train_timesteps, (int, np.integer)) or num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be an int >= 2, got {num_train_timesteps}")
    n = int(num_train_timesteps)
    alphas = np.linspace(1, 1 / n, n)[::-1].copy()
    train = torch.from_numpy(1.0 - alphas).to(torch.float32)
    train = shift * train / (1 + (shift - 1) * train)  # float32, as the constructor does
    sigma_max, sigma_min = train[0].item(), train[-1].item()

    sig = np.linspace(sigma_max, sigma_min, steps + 1).copy()[:-1]  # float64
    sig = shift * sig / (1 + (shift - 1) * sig)
    timesteps = torch.from_numpy(sig * n).to(torch.int64)
    sigmas = torch.from_numpy(np.concatenate([sig, [0]]).astype(np.float32))
    return sigmas, timesteps


# ---------------------------------------------------------------------------------------------------------
# solvers


def _check_sigmas(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    if not isinstance(sigmas, torch.Tensor):
        sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    if sigmas.dim() != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D tensor of at least 2 values, got shape {tuple(sigmas.shape)}")
    return sigmas.detach().to("cpu")


def _sigma_in(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return sigma.to(device=x.device, dtype=torch.float32).expand(x.shape[0]).clone()


def _stop(should_stop: ShouldStop | None, done: int, total: int) -> None:
    if should_stop is not None and should_stop():
        raise SamplingCancelled(done, total)


def _lambda(sigma: torch.Tensor) -> torch.Tensor:
    """log(alpha / sigma) with alpha = 1 - sigma, as float32 scalars like the reference."""
    return torch.log(1 - sigma) - torch.log(sigma)


@torch.no_grad()
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
    sigmas = _check_sigmas(x, sigmas)
    total = sigmas.numel() - 1
    outputs: list[torch.Tensor] = []  # x0 of the previous steps, newest last (at most 2)
    last_sample: torch.Tensor | None = None
    prev_order = 0
    for i in range(total):
        _stop(should_stop, i, total)
        x0 = denoise(x, _sigma_in(x, sigmas[i])).to(x.dtype)

        if i > 0 and last_sample is not None:  # UniC with the new model output
            x = _unic(x0, outputs, last_sample, sigmas, i, prev_order)
        outputs = (outputs + [x0])[-2:]

        order = min(2, total - i, i + 1)  # lower_order_final, then warm-up
        last_sample = x
        x = _unip(x, outputs, sigmas, i, order)
        prev_order = order
        if callback is not None:
            callback(i, total, x0)
    return x


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


@torch.no_grad()
def sample_euler(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: Callback | None = None,
    should_stop: ShouldStop | None = None,
) -> torch.Tensor:
    """Euler on the flow ODE: v = (x - x0) / sigma, x <- x + (sigma_next - sigma) * v."""
    sigmas = _check_sigmas(x, sigmas)
    total = sigmas.numel() - 1
    for i in range(total):
        _stop(should_stop, i, total)
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = denoise(x, _sigma_in(x, sigma)).to(x.dtype)
        if sigma_next == 0:
            x = x0
        else:
            v = (x - x0) / sigma
            x = (x + (sigma_next - sigma) * v).to(x.dtype)
        if callback is not None:
            callback(i, total, x0)
    return x


@torch.no_grad()
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
    sigmas = _check_sigmas(x, sigmas)
    total = sigmas.numel() - 1
    old_x0: torch.Tensor | None = None
    h_last: torch.Tensor | None = None
    for i in range(total):
        _stop(should_stop, i, total)
        sigma, sigma_next = sigmas[i].double(), sigmas[i + 1].double()
        x0 = denoise(x, _sigma_in(x, sigmas[i])).to(x.dtype)
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
        if callback is not None:
            callback(i, total, x0)
    return x


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {
    "unipc": sample_unipc,
    "euler": sample_euler,
    "dpmpp_2m": sample_dpmpp_2m,
}

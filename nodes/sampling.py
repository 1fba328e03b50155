"""AnyTalker's solvers inside the host's sampling: a one-node sampler, a SAMPLER and the reference's SIGMAS."""

from __future__ import annotations

from typing import Any, Callable

import torch
from comfy_api.latest import io

from ..anytalker_core.sampling import SOLVER_NAMES, flow_sigmas, get_solver
from .schema import EXPERT, sampling_inputs


def ksampler_function(solver: str) -> Callable[..., torch.Tensor]:
    """Our solver in the k-diffusion signature the host's ``KSAMPLER`` drives (``model(x, sigma) -> x0``)."""
    solve = get_solver(solver)

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **_: Any) -> torch.Tensor:
        import comfy.model_management as mm

        extra_args = extra_args or {}
        s_in = x.new_ones([x.shape[0]])

        def denoise(xt: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return model(xt, sigma * s_in, **extra_args)

        def report(i: int, total: int, x0: torch.Tensor) -> None:
            if callback is not None:
                callback({"x": x0, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0})

        def should_stop() -> bool:
            mm.throw_exception_if_processing_interrupted()  # the host's own interrupt, between steps
            return False

        return solve(denoise, x, sigmas, callback=report, should_stop=should_stop)

    return sample


def host_sampler(solver: str) -> Any:
    import comfy.samplers

    return comfy.samplers.KSAMPLER(ksampler_function(solver))


class AnyTalkerSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerSampler",
            display_name="AnyTalker Sampler",
            category="AnyTalker/sampling",
            description="Sample with the reference's defaults: flow UniPC, 40 steps, guidance 4.5, shift 5.",
            inputs=[
                io.Model.Input("model", tooltip="From AnyTalker Model Loader (LoRAs may be applied in between)."),
                io.Conditioning.Input("positive", tooltip="From AnyTalker Image To Video."),
                io.Conditioning.Input("negative", tooltip="From AnyTalker Image To Video."),
                io.Latent.Input("latent", tooltip="From AnyTalker Image To Video."),
                *sampling_inputs(),
            ],
            outputs=[io.Latent.Output(tooltip="Decode with VAEDecode.")],
        )  # fmt: skip

    @classmethod
    def execute(cls, model, positive, negative, latent, seed, steps, cfg, shift, solver) -> io.NodeOutput:
        import comfy.sample
        import comfy.utils
        import latent_preview

        sigmas, _ = flow_sigmas(steps, shift)
        latent_image = latent["samples"]
        noise = comfy.sample.prepare_noise(latent_image, seed)
        callback = latent_preview.prepare_callback(model, steps)
        samples = comfy.sample.sample_custom(
            model, noise, cfg, host_sampler(solver), sigmas, positive, negative, latent_image, callback=callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
        )  # fmt: skip
        return io.NodeOutput({**latent, "samples": samples})


class AnyTalkerSamplerSelect(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerSamplerSelect",
            display_name="AnyTalker Solver",
            category="AnyTalker/sampling",
            description="AnyTalker's solvers as a SAMPLER for SamplerCustom / SamplerCustomAdvanced.",
            inputs=[io.Combo.Input("solver", options=list(SOLVER_NAMES), default="unipc",
                                   tooltip="unipc: the reference's flow UniPC (bh2, order 2).")],
            outputs=[io.Sampler.Output(tooltip="For SamplerCustom's sampler input.")],
        )  # fmt: skip

    @classmethod
    def execute(cls, solver) -> io.NodeOutput:
        return io.NodeOutput(host_sampler(solver))


class AnyTalkerScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerScheduler",
            display_name="AnyTalker Scheduler",
            category="AnyTalker/sampling",
            description="The reference's flow-matching sigmas (1000 training steps, shifted) for SamplerCustom.",
            inputs=[
                io.Int.Input("steps", default=40, min=1, max=200, tooltip="Sampling steps."),
                io.Float.Input("shift", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01, **EXPERT,
                               tooltip="Schedule shift (5 by default, 3 advised for 480p)."),
            ],
            outputs=[io.Sigmas.Output(tooltip="For SamplerCustom's sigmas input.")],
        )  # fmt: skip

    @classmethod
    def execute(cls, steps, shift) -> io.NodeOutput:
        return io.NodeOutput(flow_sigmas(steps, shift)[0])

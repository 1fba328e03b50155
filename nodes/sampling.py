"""AnyTalker's solvers inside the host's sampling: a one-node sampler, a SAMPLER and the reference's SIGMAS.

The AnyTalker Sampler (and Long Video) sample exactly as the reference does: its schedule (:func:`flow_sigmas`),
the model called with the schedule's int64 timesteps (the host would pass ``sigma * 1000`` floats) and the run
started from the noise itself (the host starts flow models from ``sigma_max * noise + (1 - sigma_max) * latent``).
KSampler, and our SAMPLER in SamplerCustom, keep the host's conventions.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from comfy_api.latest import io

from ..anytalker_core.sampling import SOLVER_NAMES, flow_sigmas, get_solver
from ..anytalker_core.sampling.defaults import SHIFT_480P, SHIFT_OTHER, STEPS, default_shift_for_latent, default_steps
from .schema import EXPERT, sampling_inputs


def ksampler_function(solver: str, timesteps: torch.Tensor | None = None) -> Callable[..., torch.Tensor]:
    """Our solver in the k-diffusion signature the host's ``KSAMPLER`` drives (``model(x, sigma) -> x0``).

    ``timesteps``: the schedule's int64 timesteps (from :func:`flow_sigmas`, for the sigmas the host passes): then
    the run starts from the noise itself and step i hands the model ``timesteps[i]`` (through
    ``transformer_options["anytalker_timestep"]``, which :class:`~.model.HostDiT` reads), as the reference does.
    """
    solve = get_solver(solver)

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **_: Any) -> torch.Tensor:
        import comfy.model_management as mm

        extra_args = extra_args or {}
        s_in = x.new_ones([x.shape[0]])
        exact = timesteps is not None and len(timesteps) == len(sigmas) - 1
        if exact and getattr(model, "noise", None) is not None:
            x = model.noise.to(x)  # the reference's start: latents = noise
        step_of = {float(s): i for i, s in enumerate(sigmas[:-1].tolist())}

        def denoise(xt: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            args = extra_args
            i = step_of.get(float(sigma)) if exact else None
            if i is not None:
                options = dict(args.get("model_options", {}))
                options["transformer_options"] = {**options.get("transformer_options", {}),
                                                  "anytalker_timestep": int(timesteps[i])}  # fmt: skip
                args = {**args, "model_options": options}
            return model(xt, sigma * s_in, **args)

        def report(i: int, total: int, x0: torch.Tensor) -> None:
            if callback is not None:
                callback({"x": x0, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0})

        def should_stop() -> bool:
            mm.throw_exception_if_processing_interrupted()  # the host's own interrupt, between steps
            return False

        return solve(denoise, x, sigmas, callback=report, should_stop=should_stop)

    return sample


def host_sampler(solver: str, timesteps: torch.Tensor | None = None) -> Any:
    """A host ``SAMPLER`` running our solver; with ``timesteps``, the reference's exact run (see above)."""
    import comfy.samplers

    return comfy.samplers.KSAMPLER(ksampler_function(solver, timesteps))


def reference_schedule(model, steps: int, shift: float, latent_hw: tuple[int, int]):
    """``(steps, shift, sigmas, timesteps)``: 0 steps / 0 shift mean the reference's for this model and size
    (:mod:`anytalker_core.sampling.defaults`)."""
    if not steps:
        dit = getattr(getattr(model, "model", None), "diffusion_model", None)
        steps = default_steps(getattr(getattr(dit, "config", None), "variant", None))
    if not shift:
        shift = default_shift_for_latent(latent_hw)
    sigmas, timesteps = flow_sigmas(steps, shift)
    return steps, shift, sigmas, timesteps


class AnyTalkerSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="AnyTalkerSampler",
            display_name="AnyTalker Sampler",
            category="AnyTalker/sampling",
            description="Sample exactly as the reference does: its flow UniPC, schedule, timesteps and defaults.",
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

        latent_image = latent["samples"]
        steps, shift, sigmas, timesteps = reference_schedule(model, steps, shift, tuple(latent_image.shape[-2:]))
        noise = comfy.sample.prepare_noise(latent_image, seed)
        callback = latent_preview.prepare_callback(model, steps)
        samples = comfy.sample.sample_custom(
            model, noise, cfg, host_sampler(solver, timesteps), sigmas, positive, negative, latent_image,
            callback=callback,
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
                io.Int.Input("steps", default=STEPS["af"], min=1, max=200,
                             tooltip=f"Sampling steps (the reference: {STEPS['af']} for 1.3B, {STEPS['legacy']} for "
                             "14B)."),
                io.Float.Input("shift", default=SHIFT_480P, min=0.01, max=100.0, step=0.1, round=0.01, **EXPERT,
                               tooltip=f"Schedule shift (the reference: {SHIFT_480P:g} for 480p clips, the usual "
                               f"832x480 area; {SHIFT_OTHER:g} otherwise)."),
            ],
            outputs=[io.Sigmas.Output(tooltip="For SamplerCustom's sigmas input.")],
        )  # fmt: skip

    @classmethod
    def execute(cls, steps, shift) -> io.NodeOutput:
        return io.NodeOutput(flow_sigmas(steps, shift)[0])

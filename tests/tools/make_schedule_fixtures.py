"""Make ``tests/fixtures/schedule/`` from the reference's own scheduler class.

    python tests/tools/make_schedule_fixtures.py --reference /path/to/AnyTalker

The reference (a checkout of HKUST-C4G/AnyTalker) is imported at run time: only its
``wan/utils/fm_solvers_unipc.py`` module file is loaded (it needs ``diffusers``); none of its code is copied
here. The scheduler is built exactly as the reference's generate builds it (``wan/audio2video_multiID.py``):
``FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=5, use_dynamic_shifting=False)``, then
``set_timesteps(steps, shift=sample_shift)``. Written:

- ``schedule.json``: for every sample shift in {1, 3, 5, 7.5} and steps in {4, 6, 20, 40}, the scheduler's
  ``sigmas`` (float32, as stored) and ``timesteps`` (int64);
- ``run.safetensors`` + ``run.json``: a whole sampling run with shift 3 and 6 steps, the scheduler driven step
  by step (``step(model_output, t, sample)``) with a small deterministic velocity model whose weights are stored
  (``model.weight`` [4, 4], ``model.bias`` [4]): ``v(x, t) = tanh(W x + b * t / 1000) + x / 2`` over channels.
  Stored: ``in.noise``, ``model.*``, ``timesteps`` (what the model was called with) and ``out.latent``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "schedule"
SHIFTS = (1.0, 3.0, 5.0, 7.5)
STEPS = (4, 6, 20, 40)
RUN = {"shift": 3.0, "steps": 6, "seed": 1234, "shape": [1, 4, 3, 4, 4]}


def velocity(x: torch.Tensor, t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The fixture's model: ``tanh(W x + b * t / 1000) + x / 2`` mixing channels (dim 1); ``t`` a scalar."""
    mixed = torch.einsum("oc,bcthw->bothw", weight, x)
    return torch.tanh(mixed + bias.view(1, -1, 1, 1, 1) * (t.to(torch.float32) / 1000)) + x / 2


def reference_scheduler(reference: Path):
    path = reference / "wan" / "utils" / "fm_solvers_unipc.py"
    spec = importlib.util.spec_from_file_location("reference_fm_solvers_unipc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def build(steps: int, shift: float):
        scheduler = module.FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=5, use_dynamic_shifting=False)
        scheduler.set_timesteps(steps, device="cpu", shift=shift)
        return scheduler

    return build


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of HKUST-C4G/AnyTalker")
    args = parser.parse_args()
    build = reference_scheduler(args.reference)
    OUT.mkdir(parents=True, exist_ok=True)

    grid = []
    for shift in SHIFTS:
        for steps in STEPS:
            scheduler = build(steps, shift)
            grid.append({
                "shift": shift, "steps": steps, "sigmas": [float(s) for s in scheduler.sigmas.tolist()],
                "timesteps": [int(t) for t in scheduler.timesteps.tolist()],
            })  # fmt: skip
    note = "FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=5) + set_timesteps(steps, shift=shift)"
    (OUT / "schedule.json").write_text(json.dumps({"scheduler": note, "cases": grid}, indent=1) + "\n")

    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(RUN["seed"])
    weight = torch.randn(4, 4, generator=g) * 0.5
    bias = torch.randn(4, generator=g)
    noise = torch.randn(*RUN["shape"], generator=g)
    scheduler = build(RUN["steps"], RUN["shift"])
    x = noise.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(velocity(x, t, weight, bias), t, x, return_dict=False)[0]
    tensors = {"in.noise": noise, "model.weight": weight, "model.bias": bias,
               "timesteps": scheduler.timesteps.clone(), "out.latent": x.contiguous()}  # fmt: skip
    save_file(tensors, str(OUT / "run.safetensors"))
    (OUT / "run.json").write_text(json.dumps({**RUN, "scheduler": note, "model": velocity.__doc__}, indent=1) + "\n")
    sys.stdout.write(f"wrote {len(grid)} schedules and a {RUN['steps']}-step run to {OUT}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

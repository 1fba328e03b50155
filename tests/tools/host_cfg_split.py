"""Dev script: the host's multi-GPU CFG split on an AnyTalker model, in the host's own Python, no server.

    HOST_PYTHON tests/tools/host_cfg_split.py --comfy PATH/TO/ComfyUI

Loads the smoke DiT with the pack's loader, makes a second "device" with ``deepclone_multigpu`` (a fresh model from
the loader's ``cached_patcher_init``; on a CPU-only machine the stand-in device is ``cpu:0``, a different key from
``cpu`` for the host's scheduler), encodes a positive and a negative whose AnyTalker conditioning differs (the
negative's voices are zero, as AnyTalker Image To Video makes them) through the model's ``extra_conds``, and runs
the host's ``calc_cond_batch`` once with ``multigpu_clones`` (the CFG split: cond on one device, uncond on the
other, its ``MultiGPUThreadPool``) and once without. Checks: each device's model saw exactly one conditioning, its
own (the voices it got are the ones encoded for that cond), and both predictions equal the single-device run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfy", type=Path, required=True)
    comfy_dir = parser.parse_args().comfy
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from host_seams import load_smoke_model, smoke_conds

    patcher = load_smoke_model(comfy_dir, "AnyTalker_cfg")
    import comfy.multigpu
    import comfy.samplers
    import torch

    other = torch.device("cpu", 0)
    clone = patcher.deepclone_multigpu(new_load_device=other)
    conds, x, audio = smoke_conds(patcher)

    seen = {}  # device -> the voices' sums the model got there

    def watch(p, device):
        dit = p.model.diffusion_model
        original = dit._forward

        def forward(*args, anytalker_audio=None, **kwargs):
            seen.setdefault(str(device), []).append(float(anytalker_audio.abs().sum()))
            return original(*args, anytalker_audio=anytalker_audio, **kwargs)

        dit._forward = forward

    for p in (patcher, clone):  # what the host's sampling sets up (CFGGuider.outer_sample)
        p.model.current_patcher = p
    watch(patcher, "cpu")
    watch(clone, other)
    sigma = torch.tensor([0.6])
    options = {"transformer_options": {"sample_sigmas": torch.tensor([1.0, 0.6, 0.0])}}
    with torch.inference_mode():
        single = comfy.samplers.calc_cond_batch(patcher.model, conds, x, sigma, dict(options))
        one_device = dict(seen)
        seen.clear()
        pool = comfy.multigpu.MultiGPUThreadPool([torch.device("cpu"), other])  # as CFGGuider makes it
        try:
            split_options = dict(options, multigpu_clones={torch.device("cpu"): patcher, other: clone},
                                 multigpu_thread_pool=pool)  # fmt: skip
            split = comfy.samplers.calc_cond_batch(patcher.model, conds, x, sigma, split_options)
        finally:
            pool.shutdown()
    problems = []
    voices = float(audio.abs().sum())
    sys.stdout.write(f"one device: calls {one_device}\nsplit: calls {seen}\n")
    if sorted(len(v) for v in seen.values()) != [1, 1] or len(seen) != 2:
        problems.append(f"the split did not put one conditioning on each device: {seen}")
    if sorted(v[0] for v in seen.values()) != [0.0, voices]:
        problems.append("the devices did not get the positive's voices and the negative's zero voices")
    for name, a, b in (("cond", single[0], split[0]), ("uncond", single[1], split[1])):
        diff = float((a - b).abs().max())
        sys.stdout.write(f"{name}: max |split - one device| = {diff:.3g}\n")
        problems += [] if diff <= 1e-5 else [f"{name} differs by {diff}"]
    if float((single[0] - single[1]).abs().max()) == 0:
        problems.append("cond and uncond predict the same: the check could not tell them apart")
    for problem in problems:
        sys.stdout.write(f"FAIL {problem}\n")
    sys.stdout.write("the CFG split keeps each conditioning's AnyTalker inputs\n" if not problems else "")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

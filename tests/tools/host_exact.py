"""Dev script: inside a real ComfyUI, the AnyTalker Sampler node's latent against ``at.sample`` on the same inputs.

    # after ``host_smoke.py prepare`` (the random smoke models in the host's folders), with the host's Python:
    HOST_PYTHON tests/tools/host_exact.py --comfy PATH/TO/ComfyUI [--steps 6 --shift 3]

It loads the host as a library (its own node loading, our pack included), runs the smoke chain node by node
(the host's loaders and CLIPTextEncode, AnyTalker Face Detect, Voice, Identity, Image To Video and Sampler) on CPU
in float32, then samples the same conditioning, noise and settings with ``at.sample`` and the same checkpoint
loaded by ``at.load_dit``, and prints the largest difference between the two latents (in the model's normalised
latent space). Exit code 1 when it is above ``--tolerance`` (1e-4). For comparison it also prints how far the same
solver and schedule land through SamplerCustom, which keeps the host's conventions (``sigma * 1000`` float
timesteps, the run started from ``sigma_max * noise``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfy", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--cfg", type=float, default=4.5)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    sys.path.insert(0, str(args.comfy))
    sys.path.insert(1, str(REPO))
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.sample
    import torch

    import anytalker_core as at
    import nodes
    from anytalker_core.encoders.vae import normalize_latent

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))

    def call(name: str, **inputs):
        cls = nodes.NODE_CLASS_MAPPINGS[name]
        if hasattr(cls, "define_schema"):  # V3
            return tuple(cls.execute(**inputs).args)
        out = getattr(cls(), cls.FUNCTION)(**inputs)
        return tuple(out["result"] if isinstance(out, dict) else out)

    with torch.no_grad():
        model = call("AnyTalkerModelLoader", model_name="anytalker_smoke.safetensors", weight_dtype="default")[0]
        clip = call("CLIPLoader", clip_name="clip_l_smoke.safetensors", type="stable_diffusion")[0]
        positive = call("CLIPTextEncode", text="two news anchors", clip=clip)[0]
        negative = call("CLIPTextEncode", text="blurry", clip=clip)[0]
        vae = call("VAELoader", vae_name="wan_vae_smoke.safetensors")[0]
        vision = call("CLIPVisionLoader", clip_name="clip_vision_smoke.safetensors")[0]
        encoder = call("AudioEncoderLoader", audio_encoder_name="wav2vec2_smoke.safetensors")[0]
        image = call("LoadImage", image="2p-1.png")[0]
        masks = call("AnyTalkerFaceDetect", image=image, people=2, backend="auto")[0]
        chain = None
        for k, track in enumerate(("2p-1-left.wav", "2p-1-right.wav")):
            voice = call("AnyTalkerVoice", audio=call("LoadAudio", audio=track)[0])[0]
            chain = call("AnyTalkerIdentity", face_mask=masks, face=k + 1, voice=voice, identities=chain)[0]
        positive, negative, latent = call(
            "AnyTalkerImageToVideo", positive=positive, negative=negative, vae=vae, clip_vision=vision,
            audio_encoder=encoder, start_image=image, identities=chain, width=96, height=64, length=9, mode="pad",
        )[:3]  # fmt: skip
        seed = 1
        node = call("AnyTalkerSampler", model=model, positive=positive, negative=negative, latent=latent, seed=seed,
                    steps=args.steps, cfg=args.cfg, shift=args.shift, solver="unipc")[0]  # fmt: skip

        def model_inputs(conditioning) -> dict:
            text, extras = conditioning[0]
            y = torch.cat([extras["anytalker_y_mask"], normalize_latent(extras["concat_latent_image"])], dim=1)
            return {
                "text": text, "clip": extras["clip_vision_output"].penultimate_hidden_states, "y": y,
                "audio": list(extras["anytalker_audio"].unbind(1)), "faces": list(extras["anytalker_faces"].unbind(1)),
                "masks": list(extras["anytalker_masks"].unbind(1)),
            }  # fmt: skip

        dit = at.load_dit(args.comfy / "models" / "anytalker" / "anytalker_smoke.safetensors")
        noise = comfy.sample.prepare_noise(latent["samples"], seed)
        ours = at.sample(dit, noise, steps=args.steps, shift=args.shift, guidance=args.cfg,
                         cond=model_inputs(positive), uncond=model_inputs(negative))  # fmt: skip
        theirs = normalize_latent(node["samples"].float())
        # for comparison: our solver and schedule through SamplerCustom, with the host's conventions
        sampler = call("AnyTalkerSamplerSelect", solver="unipc")[0]
        sigmas = call("AnyTalkerScheduler", steps=args.steps, shift=args.shift)[0]
        custom = call("SamplerCustom", model=model, add_noise=True, noise_seed=seed, cfg=args.cfg, positive=positive,
                      negative=negative, sampler=sampler, sigmas=sigmas, latent_image=latent)[0]  # fmt: skip
        host_conventions = float((ours - normalize_latent(custom["samples"].float())).abs().max())
    difference = float((ours - theirs).abs().max())
    scale = float(ours.abs().max())
    report = {"comfyui": getattr(__import__("comfyui_version"), "__version__", "?"), "steps": args.steps,
              "shift": args.shift, "cfg": args.cfg, "latent": list(ours.shape), "max_abs_difference": difference,
              "max_abs_latent": scale, "tolerance": args.tolerance,
              "samplercustom_host_conventions_max_abs_difference": host_conventions}  # fmt: skip
    sys.stdout.write(json.dumps(report) + "\n")
    return 0 if difference <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())

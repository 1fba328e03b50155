"""Dev script: run the pack inside a real, headless ComfyUI on random-weight models (no downloads).

    # 1. with the host's Python, write the models into its folders (once, a few GB):
    HOST_PYTHON tests/tools/host_smoke.py prepare --comfy PATH/TO/ComfyUI
    # 2. start the host (python main.py --cpu --port 8188), then queue the graph and wait for it:
    python tests/tools/host_smoke.py run --url http://127.0.0.1:8188
    # 3. or run a shipped workflow with the smoke models swapped in:
    python tests/tools/host_smoke.py run --workflow workflows/anytalker_three_people.json

The graph uses every AnyTalker node and the host's own loaders: AudioEncoderLoader (a random wav2vec2-base),
CLIPVisionLoader (a random ViT-L/14: the smallest tower the host recognises), VAELoader (a random Wan 2.1 VAE
built from the host's own class), and, standing in for the 11 GB umT5-XXL, a random CLIP-L text encoder
(CLIPLoader type stable_diffusion): the DiT is built with the matching widths (text 768, image 1024). It samples
twice, with the AnyTalker Sampler and with the host's KSampler, and saves an mp4 with the mixed voices.
Random weights make noise; the check is that every node runs, the host's loaders, memory manager, progress and
video saving accept our types, and the outputs have the right frame count.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO.parent / "shared" / "examples"


def _seeded(module, seed: int) -> None:
    import zlib

    import torch

    with torch.no_grad():
        for name, param in module.named_parameters():
            g = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
            n = torch.randn(param.shape, generator=g)
            vector = param.numel() == param.shape[0]
            if vector and ("norm" in name or "gamma" in name):
                param.copy_(1 + 0.1 * n)
            elif vector:
                param.copy_(0.02 * n)
            else:
                param.copy_(n / math.sqrt(max(1, param[0].numel())))


def prepare(comfy_dir: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModel,
        Wav2Vec2Config,
        Wav2Vec2Model,
    )

    sys.path.insert(0, str(comfy_dir))
    sys.path.insert(0, str(REPO))
    sys.argv = [sys.argv[0], "--cpu"]  # the host reads its command line on import, when told to
    import comfy.options

    comfy.options.enable_args_parsing()
    from comfy.ldm.wan.vae import WanVAE

    from anytalker_core import AnyTalkerConfig, AnyTalkerDiT

    models = comfy_dir / "models"

    def save(module, path: Path, prefix: str = "", dtype=torch.float16) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {prefix + k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(path))
        sys.stdout.write(f"wrote {path} ({sum(v.numel() for v in state.values()) / 1e6:.0f} M)\n")

    dit = AnyTalkerDiT(AnyTalkerConfig(dim=256, ffn_dim=256, num_heads=2, num_layers=1, text_dim=768, clip_dim=1024))
    _seeded(dit, 0)
    save(dit, models / "anytalker" / "anytalker_smoke.safetensors", dtype=torch.float32)
    lora = {}  # a Wan-style LoRA on every self-attention projection, to check that LoraLoaderModelOnly applies
    for name, param in dit.named_parameters():
        if ".self_attn." in name and name.endswith(".weight") and param.dim() == 2:
            base = "diffusion_model." + name.removesuffix(".weight")
            lora[f"{base}.lora_down.weight"] = torch.randn(4, param.shape[1]) * 0.01
            lora[f"{base}.lora_up.weight"] = torch.randn(param.shape[0], 4) * 0.01
    (models / "loras").mkdir(parents=True, exist_ok=True)
    save_file(lora, str(models / "loras" / "anytalker_smoke_lora.safetensors"))
    wav2vec2 = Wav2Vec2Model(Wav2Vec2Config())
    _seeded(wav2vec2, 1)
    save(wav2vec2, models / "audio_encoders" / "wav2vec2_smoke.safetensors", "wav2vec2.")
    tower = CLIPVisionModel(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                             num_attention_heads=16, patch_size=14, projection_dim=768))  # fmt: skip
    _seeded(tower, 2)
    keys = tower.state_dict()
    prefix = "" if next(iter(keys)).startswith("vision_model.") else "vision_model."
    save(tower, models / "clip_vision" / "clip_vision_smoke.safetensors", prefix)
    # with its projection, as the host's CLIP-L files have it (else the host warns "clip missing: text_projection")
    text = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                      num_attention_heads=12, max_position_embeddings=77,
                                                      projection_dim=768))  # fmt: skip
    _seeded(text, 3)
    keys = text.state_dict()
    prefix = "" if "text_model." in next(iter(keys)) else "text_model."
    save(text, models / "text_encoders" / "clip_l_smoke.safetensors", prefix)
    # the layout the host's own VAELoader builds for a Wan 2.1 VAE (comfy/sd.py): its time downsampling is
    # [False, True, True], not the class default, or the host runs with 4 tensors left uninitialised
    vae = WanVAE(dim=96, z_dim=16, temperal_downsample=[False, True, True])
    _seeded(vae, 4)
    save(vae, models / "vae" / "wan_vae_smoke.safetensors")
    inputs = comfy_dir / "input"
    for name in ("1p-0.png", "2p-0.png", "2p-1.png", "2p-1-left.wav", "2p-1-right.wav"):
        shutil.copy(EXAMPLES / name, inputs / name)
    # three people for the three-person workflow: the two anchors and the left person of 2p-0, side by side
    import numpy as np

    from anytalker_core.images import read_image
    from anytalker_core.pipeline.writer import write_png

    anchors, pair = read_image(EXAMPLES / "2p-1.png"), read_image(EXAMPLES / "2p-0.png")
    left = torch.from_numpy(np.ascontiguousarray(pair[:, :426])).permute(2, 0, 1)[None].float()
    left = torch.nn.functional.interpolate(left, size=(1024, 908), mode="bicubic")[0].permute(1, 2, 0)
    three = np.concatenate([anchors, left.clamp(0, 255).round().byte().numpy()], axis=1)
    write_png(inputs / "three_people.png", three, overwrite=True)


def prompt() -> dict:
    def node(kind, **inputs):
        return {"class_type": kind, "inputs": inputs}

    graph = {
        "1": node("AnyTalkerModelLoader", model_name="anytalker_smoke.safetensors", weight_dtype="default"),
        "2": node("CLIPLoader", clip_name="clip_l_smoke.safetensors", type="stable_diffusion"),
        "3": node("CLIPTextEncode", text="two news anchors", clip=["2", 0]),
        "4": node("CLIPTextEncode", text="blurry", clip=["2", 0]),
        "5": node("VAELoader", vae_name="wan_vae_smoke.safetensors"),
        "6": node("CLIPVisionLoader", clip_name="clip_vision_smoke.safetensors"),
        "7": node("AudioEncoderLoader", audio_encoder_name="wav2vec2_smoke.safetensors"),
        "8": node("LoadImage", image="2p-1.png"),
        "9": node("AnyTalkerFaceDetect", image=["8", 0], people=2, backend="auto"),
        "10": node("LoadAudio", audio="2p-1-left.wav"),
        "11": node("LoadAudio", audio="2p-1-right.wav"),
        "12": node("AnyTalkerVoice", audio=["10", 0]),
        "13": node("AnyTalkerVoice", audio=["11", 0]),
        "14": node("AnyTalkerIdentity", face_mask=["9", 0], face=1, voice=["12", 0], offset=0.0),
        "15": node("AnyTalkerIdentity", face_mask=["9", 0], face=2, voice=["13", 0], identities=["14", 0],
                   offset=0.0),
        "16": node("AnyTalkerImageToVideo", positive=["3", 0], negative=["4", 0], vae=["5", 0],
                   clip_vision=["6", 0], audio_encoder=["7", 0], start_image=["8", 0], identities=["15", 0],
                   width=96, height=64, length=9, mode="pad"),
        "17": node("AnyTalkerSampler", model=["1", 0], positive=["16", 0], negative=["16", 1], latent=["16", 2],
                   seed=1, steps=2, cfg=4.5, shift=5.0, solver="unipc"),
        "18": node("VAEDecode", samples=["17", 0], vae=["5", 0]),
        "19": node("CreateVideo", images=["18", 0], fps=24.0, audio=["16", 3]),
        "20": node("SaveVideo", video=["19", 0], filename_prefix="anytalker_smoke/video", format="auto",
                   codec="auto"),
        "30": node("LoraLoaderModelOnly", model=["1", 0], lora_name="anytalker_smoke_lora.safetensors",
                   strength_model=1.0),
        "21": node("KSampler", model=["30", 0], seed=1, steps=2, cfg=4.5, sampler_name="uni_pc", scheduler="simple",
                   positive=["16", 0], negative=["16", 1], latent_image=["16", 2], denoise=1.0),
        "22": node("VAEDecode", samples=["21", 0], vae=["5", 0]),
        "23": node("SaveImage", images=["22", 0], filename_prefix="anytalker_smoke/ksampler"),
        "24": node("SaveImage", images=["16", 4], filename_prefix="anytalker_smoke/binding"),
        "25": node("AnyTalkerScheduler", steps=2, shift=5.0),
        "26": node("AnyTalkerSamplerSelect", solver="euler"),
        "27": node("SamplerCustom", model=["1", 0], add_noise=True, noise_seed=1, cfg=4.5, positive=["16", 0],
                   negative=["16", 1], sampler=["26", 0], sigmas=["25", 0], latent_image=["16", 2]),
        "28": node("VAEDecode", samples=["27", 0], vae=["5", 0]),
        "29": node("SaveImage", images=["28", 0], filename_prefix="anytalker_smoke/samplercustom"),
        # a moving mask: one mask per video frame (here the picture itself, repeated) through the Identity node
        "31": node("RepeatImageBatch", image=["8", 0], amount=9),
        "32": node("ImageToMask", image=["31", 0], channel="red"),
        "33": node("AnyTalkerIdentity", moving_mask=["32", 0], face=1, voice=["12", 0], offset=0.0),
        "34": node("AnyTalkerImageToVideo", positive=["3", 0], negative=["4", 0], vae=["5", 0],
                   clip_vision=["6", 0], audio_encoder=["7", 0], start_image=["8", 0], identities=["33", 0],
                   width=96, height=64, length=9, mode="pad"),
        "35": node("SaveImage", images=["34", 4], filename_prefix="anytalker_smoke/moving_binding"),
    }  # fmt: skip
    return graph


SMOKE_FILES = {
    "model_name": "anytalker_smoke.safetensors", "clip_name@CLIPLoader": "clip_l_smoke.safetensors",
    "type@CLIPLoader": "stable_diffusion", "vae_name": "wan_vae_smoke.safetensors",
    "clip_name@CLIPVisionLoader": "clip_vision_smoke.safetensors", "audio_encoder_name": "wav2vec2_smoke.safetensors",
    "width": 256, "height": 160, "length": 9, "steps": 2, "length@AnyTalkerLongVideo": 17,
    "window@AnyTalkerLongVideo": 9, "duration": "length",
}  # fmt: skip


def from_workflow(path: Path, url: str) -> dict:
    """A shipped UI workflow -> an API prompt, with the smoke models, inputs and a tiny size swapped in."""
    with urllib.request.urlopen(f"{url}/object_info") as response:
        info = json.load(response)
    graph = json.loads(path.read_text())
    links = {link[0]: link for link in graph["links"]}
    tracks = iter(["2p-1-left.wav", "2p-1-right.wav"] * 2)
    api = {}
    for node in graph["nodes"]:
        spec = info[node["type"]]
        order = spec.get("input_order") or {k: list(v) for k, v in spec["input"].items()}
        values = iter(node.get("widgets_values", []))
        inputs = {}
        for section in ("required", "optional"):
            for name in order.get(section, []):
                kind, options = spec["input"][section][name][0], (spec["input"][section][name] + [{}])[1]
                if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO") or \
                        "COMBO" in str(kind):  # fmt: skip
                    inputs[name] = next(values)
                    if options.get("control_after_generate") or name in ("seed", "noise_seed"):
                        next(values)
                    if options.get("image_upload"):
                        next(values)
                    if options.get("audio_upload"):
                        next(values), next(values)
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                _, src, slot, *_ = links[entry["link"]]
                inputs[entry["name"]] = [str(src), slot]
        for name in list(inputs):
            for key in (f"{name}@{node['type']}", name):
                if key in SMOKE_FILES and not isinstance(inputs[name], list):
                    inputs[name] = SMOKE_FILES[key]
                    break
        if node["type"] == "LoadAudio":
            inputs["audio"] = next(tracks)
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def run(url: str, workflow: Path | None = None) -> int:
    client = uuid.uuid4().hex
    graph = prompt() if workflow is None else from_workflow(workflow, url)
    body = json.dumps({"prompt": graph, "client_id": client}).encode()
    request = urllib.request.Request(f"{url}/prompt", body, {"Content-Type": "application/json"})
    since = max((t for t, _ in _host_log(url)), default="")
    try:
        with urllib.request.urlopen(request) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as err:
        sys.stdout.write(err.read().decode() + "\n")
        return 1
    if answer.get("node_errors"):  # 0.33 queues the rest of a prompt in which a node was refused
        sys.stdout.write("refused nodes: " + json.dumps(answer["node_errors"])[:3000] + "\n")
        return 1
    prompt_id = answer["prompt_id"]
    sys.stdout.write(f"queued {prompt_id}\n")
    for _ in range(600):
        time.sleep(2)
        with urllib.request.urlopen(f"{url}/history/{prompt_id}") as response:
            history = json.load(response)
        if prompt_id in history:
            entry = history[prompt_id]
            status = entry.get("status", {})
            sys.stdout.write(json.dumps({"status": status.get("status_str"), "outputs": entry.get("outputs")})[:3000])
            for message in status.get("messages", []):
                if message[0] == "execution_error":
                    sys.stdout.write("\n" + json.dumps(message[1])[:3000])
            sys.stdout.write("\n")
            warnings = [line for t, line in _host_log(url) if t > since and LOAD_WARNING.search(line)]
            for line in warnings:
                sys.stdout.write(f"host warning: {line.strip()}\n")
            return 0 if status.get("status_str") == "success" and not warnings else 1
    return 1


# What the host logs when a file's layout is not the one its loader expects (keys left out or left over).
LOAD_WARNING = re.compile(r"[Mm]issing .*keys|clip missing|unexpected|left over keys", re.IGNORECASE)


def _host_log(url: str) -> list[tuple[str, str]]:
    """The host's recent log lines as (time, message) (its /internal/logs/raw buffer)."""
    with urllib.request.urlopen(f"{url}/internal/logs/raw") as response:
        return [(str(e.get("t", "")), str(e.get("m", ""))) for e in json.load(response).get("entries", [])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare").add_argument("--comfy", type=Path, required=True)
    runner = sub.add_parser("run")
    runner.add_argument("--url", default="http://127.0.0.1:8188")
    runner.add_argument("--workflow", type=Path, help="run a shipped UI workflow instead of the built-in graph")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.comfy)
        return 0
    return run(args.url, args.workflow)


if __name__ == "__main__":
    sys.exit(main())

"""Dev script: the host's speed and patch tools on an AnyTalker graph, in a real headless ComfyUI.

    # 1. once per host (then restart it): a dev-only probe node, written into the host's custom_nodes
    python tests/tools/host_seams.py install --comfy PATH/TO/ComfyUI
    # 2. with the host running on the smoke models (tests/tools/host_smoke.py prepare):
    python tests/tools/host_seams.py run --url http://127.0.0.1:8188 [--skip-compile]

Checks, each on the smoke graph of ``host_smoke.py`` (two people, 9 frames):

- EasyCache (high threshold) in front of AnyTalker Sampler, KSampler and SamplerCustom, and LazyCache in front
  of AnyTalker Sampler, log skipped steps ("... - skipped N/M steps");
- the probe node (``AnyTalkerSeamProbe``) puts a ``patches_replace["dit"]`` entry on every block, the four
  attention patches, an ``optimized_attention_override`` and a ``DIFFUSION_MODEL`` wrapper on the model and logs
  what each saw per model call: every block replaced once, every attention (self, text, picture and both
  people's identity attention, by their key lengths) seen with its ``block_index``;
- TorchCompileModel (inductor) in front of AnyTalker Sampler runs the graph.

    # 3. in the host's Python, no server: what a multi-GPU work unit does to the model, and compile's graph breaks
    HOST_PYTHON tests/tools/host_seams.py inproc --comfy PATH/TO/ComfyUI

``inproc`` loads the smoke DiT with the pack's loader, then checks that ``clone()``, ``clone(disable_dynamic=True)``
and ``deepclone_multigpu`` onto a second CPU device stand-in (a fresh model from ``cached_patcher_init``) predict
the same as the original for the same conditioning moved with ``.to()``, and counts ``torch._dynamo.explain``'s
graph breaks of the host's forward (HostDiT with the host's layers and attention), with where each one is.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import host_smoke  # noqa: E402  (the smoke graph and the host's log)

PROBE = '''"""Dev-only probe written by the AnyTalker pack's tests/tools/host_seams.py; delete it when done."""
import collections, json, logging
import comfy.patcher_extension as ext


class AnyTalkerSeamProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "_dev"

    def patch(self, model):
        m = model.clone()
        seen = {}

        def replace(args, extra):
            o = args["transformer_options"]
            seen["replace"].append([o["block_index"], o["total_blocks"], list(o["grid_sizes"]), sorted(args)])
            return extra["original_block"](args)

        for i in range(len(m.model.diffusion_model.blocks)):
            m.set_model_patch_replace(replace, "dit", "double_block", i)

        def override(func, *args, **kwargs):
            seen["attention"].append((kwargs["transformer_options"].get("block_index"), args[1].shape[1]))
            return func(*args, **kwargs)

        m.model_options["transformer_options"]["optimized_attention_override"] = override
        for name in ("attn1_patch", "attn2_patch"):
            m.set_model_patch(lambda args, name=name: seen["patches"].update([name]) or args["x"], name)
        for name in ("attn1_output_patch", "attn2_output_patch"):
            m.set_model_patch(lambda out, extra, name=name: seen["patches"].update([name]) or out, name)

        def count(executor, *args, **kwargs):
            seen["calls"] += 1
            return executor(*args, **kwargs)

        def report(executor, *args, **kwargs):
            seen.update(calls=0, replace=[], attention=[], patches=collections.Counter())
            out = executor(*args, **kwargs)
            keys = collections.Counter(n for _, n in seen["attention"])
            summary = dict(calls=seen["calls"], replace=seen["replace"], attention_calls=len(seen["attention"]),
                           attention_blocks=sorted({b for b, _ in seen["attention"]}, key=str),
                           key_lengths=dict(keys), patches=dict(seen["patches"]))
            logging.info("AnyTalker seam probe: " + json.dumps(summary))
            return out

        m.add_wrapper_with_key(ext.WrappersMP.DIFFUSION_MODEL, "seam_probe", count)
        m.add_wrapper_with_key(ext.WrappersMP.OUTER_SAMPLE, "seam_probe", report)
        return (m,)


NODE_CLASS_MAPPINGS = {"AnyTalkerSeamProbe": AnyTalkerSeamProbe}
'''

SKIPPED = re.compile(r"(EasyCache|LazyCache) - skipped (\d+)/(\d+) steps")
STEPS = 8  # enough steps for a step cache to find some to skip


def install(comfy_dir: Path) -> None:
    path = comfy_dir / "custom_nodes" / "anytalker_seam_probe.py"
    path.write_text(PROBE)
    sys.stdout.write(f"wrote {path}; restart the host\n")


def graph(compile_model: bool) -> dict:
    """The smoke graph's loaders and conditioning (nodes 1-16), then one sampler per check."""
    base = {k: v for k, v in host_smoke.prompt().items() if int(k) <= 16}

    def node(kind, **inputs):
        return {"class_type": kind, "inputs": inputs}

    cond = dict(positive=["16", 0], negative=["16", 1])
    seed = int(time.time())  # a new seed each run: the host would answer an unchanged branch from its cache
    anytalker = dict(**cond, latent=["16", 2], seed=seed, steps=STEPS, cfg=4.5, shift=5.0, solver="unipc")
    cache = dict(reuse_threshold=3.0, start_percent=0.0, end_percent=0.95, verbose=False)
    extra = {
        "40": node("EasyCache", model=["1", 0], **cache),
        "41": node("AnyTalkerSampler", model=["40", 0], **anytalker),
        "42": node("KSampler", model=["40", 0], seed=seed, steps=STEPS, cfg=4.5, sampler_name="euler",
                   scheduler="simple", latent_image=["16", 2], denoise=1.0, **cond),
        "43": node("AnyTalkerScheduler", steps=STEPS, shift=5.0),
        "44": node("AnyTalkerSamplerSelect", solver="euler"),
        "45": node("SamplerCustom", model=["40", 0], add_noise=True, noise_seed=seed, cfg=4.5, sampler=["44", 0],
                   sigmas=["43", 0], latent_image=["16", 2], **cond),
        "46": node("LazyCache", model=["1", 0], **cache),
        "47": node("AnyTalkerSampler", model=["46", 0], **anytalker),
        "48": node("AnyTalkerSeamProbe", model=["1", 0]),
        "49": node("AnyTalkerSampler", model=["48", 0], **dict(anytalker, steps=2)),
    }  # fmt: skip
    outputs = {"41": 0, "42": 0, "45": 0, "47": 0, "49": 0}
    if compile_model:
        extra["50"] = node("TorchCompileModel", model=["1", 0], backend="inductor")
        extra["51"] = node("AnyTalkerSampler", model=["50", 0], **dict(anytalker, steps=2))
        outputs["51"] = 0
    for i, (source, slot) in enumerate(outputs.items()):  # a VAE decode and a preview keep every branch alive
        extra[f"6{i}"] = node("VAEDecode", samples=[source, slot], vae=["5", 0])
        extra[f"7{i}"] = node("PreviewImage", images=[f"6{i}", 0])
    return {**base, **extra}


def queue(url: str, prompt: dict) -> tuple[bool, list[str]]:
    """Queue ``prompt`` and wait; (success, the host's log lines since it was queued)."""
    since = max((t for t, _ in host_smoke._host_log(url)), default="")
    body = json.dumps({"prompt": prompt, "client_id": uuid.uuid4().hex}).encode()
    request = urllib.request.Request(f"{url}/prompt", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        answer = json.load(response)
    if answer.get("node_errors"):
        sys.stdout.write("refused nodes: " + json.dumps(answer["node_errors"])[:3000] + "\n")
        return False, []
    prompt_id = answer["prompt_id"]
    for _ in range(1800):
        time.sleep(2)
        with urllib.request.urlopen(f"{url}/history/{prompt_id}") as response:
            history = json.load(response)
        if prompt_id in history:
            status = history[prompt_id].get("status", {})
            for message in status.get("messages", []):
                if message[0] == "execution_error":
                    sys.stdout.write(json.dumps(message[1])[:3000] + "\n")
            lines = [line for t, line in host_smoke._host_log(url) if t > since]
            return status.get("status_str") == "success", lines
    return False, []


def check(lines: list[str], compiled: bool) -> list[str]:
    """What failed, judged from the host's log (empty: every check passed)."""
    problems = []
    skips = [(m.group(1), int(m.group(2)), int(m.group(3))) for m in map(SKIPPED.search, lines) if m]
    sys.stdout.write(f"step caches: {skips}\n")
    if sorted(name for name, _, _ in skips) != ["EasyCache"] * 3 + ["LazyCache"]:
        problems.append(f"expected 3 EasyCache and 1 LazyCache reports, got {skips}")
    problems += [f"{name} skipped no step of {total}" for name, skipped, total in skips if skipped == 0]
    probes = [json.loads(line.split("AnyTalker seam probe: ", 1)[1]) for line in lines if "seam probe: " in line]
    if len(probes) != 1:
        return problems + [f"expected one seam probe report, got {len(probes)}"]
    probe = probes[0]
    sys.stdout.write(f"probe: {json.dumps({k: v for k, v in probe.items() if k != 'replace'})}\n")
    calls, replaced = probe["calls"], probe["replace"]
    blocks = replaced[0][1] if replaced else 0
    if not calls or [r[0] for r in replaced] != list(range(blocks)) * calls:
        problems.append(f"block replacements {[r[0] for r in replaced]} for {calls} model calls of {blocks} blocks")
    if replaced and replaced[0][3] != ["img", "pe", "transformer_options", "txt", "vec"]:
        problems.append(f"block replacement arguments {replaced[0][3]}")
    frames, people, clip_tokens, audio_tokens = 3, 2, 257, 32  # the smoke graph: 9 video frames, two people
    identity = {str(clip_tokens + (4 * (frames - 1) + 1) * audio_tokens), str(clip_tokens + 4 * audio_tokens)}
    per_call = {n: probe["key_lengths"].get(n, 0) / (calls * blocks) for n in identity} if calls and blocks else {}
    if per_call != {n: people for n in identity}:
        problems.append(f"identity attention calls per block and model call: {per_call} (expected {people} each)")
    if probe["attention_blocks"] != list(range(blocks)):
        problems.append(f"attention block indices {probe['attention_blocks']}")
    if probe["patches"] != {n: calls * blocks for n in ("attn1_patch", "attn2_patch", "attn1_output_patch",
                                                        "attn2_output_patch")}:  # fmt: skip
        problems.append(f"attention patches {probe['patches']} for {calls} calls x {blocks} blocks")
    return problems


def run(url: str, compile_model: bool) -> int:
    start = time.perf_counter()
    ok, lines = queue(url, graph(compile_model))
    sys.stdout.write(f"graph {'ran' if ok else 'FAILED'} in {time.perf_counter() - start:.0f} s\n")
    for line in lines:
        if "context cache" in line or "TorchCompile" in line or "compile" in line.lower():
            sys.stdout.write(f"host: {line.strip()}\n")
    problems = check(lines, compile_model) if ok else ["the graph failed"]
    for problem in problems:
        sys.stdout.write(f"FAIL {problem}\n")
    sys.stdout.write("all seam checks passed\n" if not problems else "")
    return 1 if problems else 0


def load_smoke_model(comfy_dir: Path, alias: str):
    """In this process: the host's ``comfy`` on the CPU, the pack imported as ``alias`` (as the host loads a
    custom node folder), and the smoke checkpoint through our Model Loader; returns the ModelPatcher."""
    import importlib
    import importlib.util

    sys.path.insert(0, str(comfy_dir))
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    repo = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(alias, repo / "__init__.py",
                                                  submodule_search_locations=[str(repo)])  # fmt: skip
    sys.modules[alias] = importlib.util.module_from_spec(spec)
    nodes_model = importlib.import_module(f"{alias}.nodes.model")
    return nodes_model.load_model(str(comfy_dir / "models" / "anytalker" / "anytalker_smoke.safetensors"))


def smoke_conds(patcher, frames: int = 3, height: int = 8, width: int = 12, people: int = 2) -> tuple:
    """A positive and a negative for the smoke DiT as the host's sampler holds them (encoded through the model's
    ``extra_conds``), two people whose AnyTalker conditioning differs only in the voices (the negative's are zero,
    as AnyTalker Image To Video makes them). Returns (conds, a latent [1, 16, frames, height, width], the voices)."""
    import types

    import comfy.sampler_helpers
    import comfy.samplers
    import torch

    cfg = patcher.model.diffusion_model.config
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(1, people, frames, height // 2, width // 2)
    masks[:, 0, :, 1:3, 0:2], masks[:, 1, :, 1:3, 3:5] = 1.0, 1.0
    audio = torch.randn(1, people, 4 * (frames - 1) + 1, 5, 12, 768, generator=g)
    picture = types.SimpleNamespace(penultimate_hidden_states=torch.randn(1, 257, cfg.clip_dim, generator=g))
    shared = dict(
        clip_vision_output=picture, concat_latent_image=torch.randn(1, 16, frames, height, width, generator=g),
        anytalker_y_mask=torch.ones(1, 4, frames, height, width),
        anytalker_faces=torch.randn(1, people, 257, cfg.clip_dim, generator=g), anytalker_masks=masks,
    )  # fmt: skip
    voices = {"positive": audio, "negative": torch.zeros_like(audio)}
    latent = torch.randn(1, 16, frames, height, width, generator=g)
    conds = []
    for kind, voice in voices.items():
        cond = [[torch.randn(1, 20, cfg.text_dim, generator=g), dict(shared, anytalker_audio=voice)]]
        converted = comfy.sampler_helpers.convert_cond(cond)
        conds.append(comfy.samplers.encode_model_conds(patcher.model.extra_conds, converted, latent, "cpu", kind))
    return conds, latent, audio


def inproc(comfy_dir: Path) -> int:

    import torch
    import torch._dynamo as dynamo

    patcher = load_smoke_model(comfy_dir, "AnyTalker_seams")
    cfg = patcher.model.diffusion_model.config
    g = torch.Generator().manual_seed(0)
    frames, h, w, people = 3, 8, 12, 2
    masks = torch.zeros(1, people, frames, h // 2, w // 2)
    masks[:, 0, :, 1:3, 0:2], masks[:, 1, :, 1:3, 3:5] = 1.0, 1.0
    inputs = dict(
        x=torch.randn(1, 36, frames, h, w, generator=g), timestep=torch.tensor([500.0]),
        context=torch.randn(1, 20, cfg.text_dim, generator=g), clip_fea=torch.randn(1, 257, cfg.clip_dim, generator=g),
        anytalker_audio=torch.randn(1, people, 4 * (frames - 1) + 1, 5, 12, 768, generator=g),
        anytalker_faces=torch.randn(1, people, 257, cfg.clip_dim, generator=g), anytalker_masks=masks,
    )  # fmt: skip

    def predict(p, device="cpu"):
        moved = {k: v.to(device) for k, v in inputs.items()}
        with torch.inference_mode():
            return p.model.diffusion_model(**moved, transformer_options={}).cpu()

    problems = []
    expected = predict(patcher)
    copies = {"clone()": patcher.clone(), "clone(disable_dynamic=True)": patcher.clone(disable_dynamic=True),
              "deepclone_multigpu(cpu)": patcher.deepclone_multigpu(new_load_device=torch.device("cpu"))}  # fmt: skip
    for name, copy in copies.items():
        fresh = copy.model.diffusion_model is not patcher.model.diffusion_model
        same = torch.equal(predict(copy), expected)
        sys.stdout.write(f"{name}: {'a fresh model' if fresh else 'the same model'}, same prediction: {same}\n")
        problems += [] if same else [f"{name} predicts differently"]
    dit = patcher.model.diffusion_model
    with torch.inference_mode():
        explained = dynamo.explain(dit)(**inputs, transformer_options={})
    sys.stdout.write(f"torch._dynamo.explain of the host's forward: {explained.graph_count} graphs, "
                     f"{explained.graph_break_count} breaks\n")  # fmt: skip
    for reason in explained.break_reasons:
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(reason.user_stack[-3:]))
        sys.stdout.write(f"  break: {reason.reason.splitlines()[0][:140]} at {where}\n")
    for problem in problems:
        sys.stdout.write(f"FAIL {problem}\n")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install").add_argument("--comfy", type=Path, required=True)
    runner = sub.add_parser("run")
    runner.add_argument("--url", default="http://127.0.0.1:8188")
    runner.add_argument("--skip-compile", action="store_true", help="leave out TorchCompileModel (inductor, slow)")
    sub.add_parser("inproc").add_argument("--comfy", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "install":
        install(args.comfy)
        return 0
    if args.command == "inproc":
        return inproc(args.comfy)
    return run(args.url, not args.skip_compile)


if __name__ == "__main__":
    sys.exit(main())

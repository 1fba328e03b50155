"""Dev script: read node schemas from a running ComfyUI (``/object_info``) for the workflow tests.

    python tests/tools/snapshot_core_nodes.py --url http://127.0.0.1:8188 [--check-ours]

Writes ``tests/fixtures/core_node_schemas.json``: the core nodes the shipped workflows use, in the same form as
``tests/hoststub.schema_dict``. With ``--check-ours`` it also compares the host's view of our nodes with the
committed ``node_schemas.json`` (made with the test stand-in), which proves the stand-in reads schemas like the
real host. File-name combos (models, inputs) are left empty: they depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CORE_NODES = (
    "LoadImage", "LoadAudio", "AudioEncoderLoader", "CLIPLoader", "CLIPTextEncode", "CLIPVisionLoader",
    "CLIPVisionEncode", "VAELoader", "VAEDecode", "CreateVideo", "SaveVideo", "KSampler", "LoraLoaderModelOnly",
    "PreviewImage",
)  # fmt: skip
FILE_INPUTS = {"image", "audio", "clip_name", "vae_name", "audio_encoder_name", "unet_name", "lora_name",
               "model_name"}  # fmt: skip
KEYS = ("default", "min", "max", "step", "control_after_generate", "advanced")


def convert(name: str, info: dict) -> dict:
    """One ``/object_info`` entry -> the ``schema_dict`` form."""
    inputs = []
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    for section in ("required", "optional"):
        for input_id in order.get(section, []):
            spec = info["input"][section][input_id]
            kind, options = spec[0], spec[1] if len(spec) > 1 else {}
            entry = {"id": input_id, "type": "COMBO" if isinstance(kind, list) else kind,
                     "optional": section == "optional", "tooltip": options.get("tooltip")}  # fmt: skip
            choices = kind if isinstance(kind, list) else options.get("options")
            if choices is not None:
                entry["options"] = [] if input_id in FILE_INPUTS else list(choices)
            for key in KEYS:
                if options.get(key) is not None:
                    entry[key] = options[key]
            for flag in ("image_upload", "audio_upload"):
                if options.get(flag):
                    entry[flag] = True
            inputs.append(entry)
    tips = info.get("output_tooltips") or [None] * len(info["output"])
    outputs = [{"type": t, "name": n, "tooltip": tip} for t, n, tip in zip(info["output"], info["output_name"], tips)]
    return {"node_id": name, "display_name": info.get("display_name"), "category": info.get("category"),
            "description": info.get("description"), "inputs": inputs, "outputs": outputs}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--check-ours", action="store_true")
    args = parser.parse_args()
    with urllib.request.urlopen(f"{args.url}/object_info") as response:
        info = json.load(response)
    core = {name: convert(name, info[name]) for name in CORE_NODES if name in info}
    missing = sorted(set(CORE_NODES) - set(core))
    (FIXTURES / "core_node_schemas.json").write_text(json.dumps(core, indent=1) + "\n")
    sys.stdout.write(f"wrote {len(core)} core node schemas; missing in this host: {missing or 'none'}\n")
    if args.check_ours:
        ours = json.loads((FIXTURES / "node_schemas.json").read_text())
        # hosts before 0.33 have no "advanced" inputs: our nodes then declare none (nodes/schema.py EXPERT)
        host_has_advanced = "advanced" in json.dumps([info[name] for name in ours if name in info])
        problems = []
        for name, expected in ours.items():
            if name not in info:
                problems.append(f"{name}: not registered in the host")
                continue
            got = convert(name, info[name])
            for item in got["inputs"] + expected["inputs"]:
                if item["id"] in FILE_INPUTS:
                    item.pop("options", None)
                if not host_has_advanced:
                    item.pop("advanced", None)
            if got != expected:
                problems.append(f"{name}: host {json.dumps(got)}\n   snapshot {json.dumps(expected)}")
        sys.stdout.write("\n".join(problems) + "\n" if problems else "our nodes: the host agrees with the snapshot\n")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Dev check: the AnyTalker Evaluate node under a real ComfyUI's ``comfy_api`` (no server, CPU).

    <host venv>/bin/python tests/tools/host_evaluate_check.py /path/to/ComfyUI

Loads the pack as the host would (its ``comfy_api.latest.io``, ``comfy.utils.ProgressBar`` and
``comfy.model_management``), prints the node's ``/object_info`` entry (input order, output node), then runs the
node on the real two-person clip of the tests (``tests/fixtures/judge/``) with its two voices as AUDIO inputs and
prints what the node returns: the plot's shape and the table shown on the node.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

PACK = Path(__file__).resolve().parents[2]
FIXTURE = PACK / "tests" / "fixtures" / "judge"


def main() -> None:
    host = sys.argv[1]
    sys.argv = [sys.argv[0], "--cpu"]  # the host's own argument parser reads this
    sys.path.insert(0, host)
    import comfy.options

    comfy.options.enable_args_parsing()
    import numpy as np
    import torch

    spec = importlib.util.spec_from_file_location(
        "AT_pack", PACK / "__init__.py", submodule_search_locations=[str(PACK)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["AT_pack"] = module
    spec.loader.exec_module(module)
    nodes = importlib.import_module("AT_pack.nodes")
    video = importlib.import_module("AT_pack.anytalker_core.judge.video")
    audio = importlib.import_module("AT_pack.anytalker_core.people.audio")

    info = nodes.AnyTalkerEvaluate.GET_NODE_INFO_V1()
    sys.stdout.write(json.dumps({k: info[k] for k in ("input_order", "output", "output_name", "output_node")}) + "\n")
    frames = torch.from_numpy(np.stack(list(video.open_video(FIXTURE / "conversation.mp4")))).float() / 255
    voices = [{"waveform": audio.load_audio(FIXTURE / f)[None, None], "sample_rate": 16000}
              for f in ("left.flac", "right.flac")]  # fmt: skip
    out = nodes.AnyTalkerEvaluate.execute(frames, 24.0, audio_1=voices[0], audio_2=voices[1])
    sys.stdout.write(f"{type(out).__name__}: plot {tuple(out.args[0].shape)} {out.args[0].dtype}\n")
    sys.stdout.write(out.ui["text"][0] + "\n")


if __name__ == "__main__":
    main()

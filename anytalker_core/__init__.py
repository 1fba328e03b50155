"""AnyTalker for ComfyUI: the host-free core. Never imports ComfyUI: the node pack in ``nodes/`` adapts it.

Layers, each a subpackage that imports only the ones above it (``docs/architecture.md``):

- :mod:`.timeline`, :mod:`.sizes`, :mod:`.images`, :mod:`.weights`: frame counts, video sizes, pictures, safe
  weight files;
- :mod:`.model`: the AnyTalker DiT and its loader;
- :mod:`.people`: audio features, speaker timing, face detection, routing voices to faces;
- :mod:`.encoders`: the standalone text, image and VAE encoders;
- :mod:`.sampling`: the noise schedule, the solvers, guidance;
- :mod:`.pipeline`: conditioning, the window engine, ``generate`` / ``render``, the mp4 writer;
- :mod:`.judge`: ``evaluate``, judging a finished video (who talks to which voice, listener motion);
- :mod:`.cli` and :mod:`.demo`: the command line and its built-in tiny models.

The public names below load on first use (``at.load_dit`` imports the model layer then), so importing the
package is instant and ``python -m anytalker_core`` can answer Ctrl-C while torch is still loading.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "clip_input": ".encoders.image",
    "VideoVAE": ".encoders.vae",
    "PRESETS": ".model",
    "AnyTalkerConfig": ".model",
    "AnyTalkerDiT": ".model",
    "load_dit": ".model",
    "read_state_dict": ".model",
    "sdpa_attention": ".model",
    "AudioEncoder": ".people.audio_features",
    "AudioError": ".people.audio",
    "encode_audio": ".people.audio_features",
    "load_audio": ".people.audio",
    "load_audio_encoder": ".people.audio_features",
    "FaceError": ".people.faces",
    "detect_faces": ".people.faces",
    "find_faces": ".people.faces",
    "preview": ".people.preview",
    "Routing": ".people.routing",
    "RoutingError": ".people.routing",
    "route_faces": ".people.routing",
    "route_from_boxes": ".people.routing",
    "route_from_masks": ".people.routing",
    "Speaker": ".people.speakers",
    "SpeakerLayout": ".people.speakers",
    "arrange_speakers": ".people.speakers",
    "JudgeError": ".judge",
    "evaluate": ".judge",
    "Models": ".pipeline",
    "Scene": ".pipeline",
    "generate": ".pipeline",
    "load_models": ".pipeline",
    "render": ".pipeline",
    "build_y": ".pipeline.condition",
    "prepare_image": ".pipeline.condition",
    "target_size": ".pipeline.condition",
    "write_png": ".pipeline.writer",
    "write_video": ".pipeline.writer",
    "SamplingCancelled": ".sampling",
    "flow_sigmas": ".sampling",
    "sample": ".sampling",
    "CheckpointError": ".weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Load a public name (or a subpackage, e.g. ``at.model``) on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

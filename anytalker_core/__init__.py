"""AnyTalker for ComfyUI: the host-free core. Never imports ComfyUI: the node pack in ``nodes/`` adapts it.

Layers, each a subpackage that imports only the ones above it (``docs/architecture.md``):

- :mod:`.timeline`, :mod:`.sizes`, :mod:`.images`, :mod:`.weights`: frame counts, video sizes, pictures, safe
  weight files;
- :mod:`.model`: the AnyTalker DiT and its loader;
- :mod:`.people`: audio features, speaker timing, face detection, routing voices to faces;
- :mod:`.encoders`: the standalone text, image and VAE encoders;
- :mod:`.sampling`: the noise schedule, the solvers, guidance;
- :mod:`.pipeline`: conditioning, the window engine, ``generate`` / ``render``, the mp4 writer;
- :mod:`.cli` and :mod:`.demo`: the command line and its built-in tiny models.
"""

from .encoders.image import clip_input
from .encoders.vae import VideoVAE
from .model import PRESETS, AnyTalkerConfig, AnyTalkerDiT, load_dit, read_state_dict, sdpa_attention
from .people.audio import AudioEncoder, AudioError, encode_audio, load_audio, load_audio_encoder
from .people.faces import FaceError, detect_faces, find_faces
from .people.preview import preview
from .people.routing import Routing, RoutingError, route_faces, route_from_boxes, route_from_masks
from .people.speakers import Speaker, SpeakerLayout, arrange_speakers
from .pipeline import Models, Scene, generate, load_models, render
from .pipeline.condition import build_y, prepare_image, target_size
from .pipeline.writer import write_png, write_video
from .sampling import SamplingCancelled, flow_sigmas, sample
from .weights import CheckpointError

__all__ = [
    "PRESETS",
    "AnyTalkerConfig",
    "AnyTalkerDiT",
    "AudioEncoder",
    "AudioError",
    "CheckpointError",
    "FaceError",
    "Models",
    "Routing",
    "RoutingError",
    "SamplingCancelled",
    "Scene",
    "Speaker",
    "SpeakerLayout",
    "VideoVAE",
    "arrange_speakers",
    "build_y",
    "clip_input",
    "detect_faces",
    "encode_audio",
    "find_faces",
    "flow_sigmas",
    "generate",
    "load_audio",
    "load_audio_encoder",
    "load_dit",
    "load_models",
    "prepare_image",
    "preview",
    "read_state_dict",
    "render",
    "route_faces",
    "route_from_boxes",
    "route_from_masks",
    "sample",
    "sdpa_attention",
    "target_size",
    "write_png",
    "write_video",
]

"""AnyTalker for ComfyUI: the host-free core (model, loading, audio features, face routing, sampling).

Never imports ComfyUI: the node pack in ``nodes/`` adapts this package to the host.
"""

from .attention import sdpa_attention
from .audio import AudioEncoder, AudioError, encode_audio, load_audio, load_audio_encoder
from .condition import VideoVAE, build_y, clip_input, prepare_image, target_size
from .config import PRESETS, AnyTalkerConfig
from .faces import FaceError, detect_faces, find_faces
from .identities import Routing, RoutingError, route_faces, route_from_boxes, route_from_masks
from .loader import CheckpointError, load_dit, read_state_dict
from .model import AnyTalkerDiT
from .preview import preview
from .sampling import SamplingCancelled, flow_sigmas, sample
from .speakers import Speaker, SpeakerLayout, arrange_speakers
from .video import write_png, write_video

__all__ = [
    "PRESETS",
    "AnyTalkerConfig",
    "AnyTalkerDiT",
    "AudioEncoder",
    "AudioError",
    "CheckpointError",
    "FaceError",
    "Routing",
    "RoutingError",
    "SamplingCancelled",
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
    "load_audio",
    "load_audio_encoder",
    "load_dit",
    "prepare_image",
    "preview",
    "read_state_dict",
    "route_faces",
    "route_from_boxes",
    "route_from_masks",
    "sample",
    "sdpa_attention",
    "target_size",
    "write_png",
    "write_video",
]

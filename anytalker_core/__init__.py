"""AnyTalker for ComfyUI: the host-free core (model, loading, audio features; faces and sampling to come).

Never imports ComfyUI: the node pack in ``nodes/`` adapts this package to the host.
"""

from .attention import sdpa_attention
from .audio import AudioEncoder, AudioError, encode_audio, load_audio, load_audio_encoder
from .config import PRESETS, AnyTalkerConfig
from .loader import CheckpointError, load_dit, read_state_dict
from .model import AnyTalkerDiT
from .speakers import Speaker, SpeakerLayout, arrange_speakers

__all__ = [
    "PRESETS",
    "AnyTalkerConfig",
    "AnyTalkerDiT",
    "AudioEncoder",
    "AudioError",
    "CheckpointError",
    "Speaker",
    "SpeakerLayout",
    "arrange_speakers",
    "encode_audio",
    "load_audio",
    "load_audio_encoder",
    "load_dit",
    "read_state_dict",
    "sdpa_attention",
]

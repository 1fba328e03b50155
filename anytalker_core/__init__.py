"""AnyTalker for ComfyUI: the host-free core (model, loading; audio, faces and sampling to come).

Never imports ComfyUI: the node pack in ``nodes/`` adapts this package to the host.
"""

from .attention import sdpa_attention
from .config import PRESETS, AnyTalkerConfig
from .loader import CheckpointError, load_dit, read_state_dict
from .model import AnyTalkerDiT

__all__ = [
    "PRESETS",
    "AnyTalkerConfig",
    "AnyTalkerDiT",
    "CheckpointError",
    "load_dit",
    "read_state_dict",
    "sdpa_attention",
]

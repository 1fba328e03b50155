"""The AnyTalker DiT: Wan2.1 image-to-video plus identity-aware audio+face attention, and its loader.

- :mod:`.config`: the configuration (presets, the reference's constructor kwargs);
- :mod:`.layers`: norms, the picture/face MLP, timestep and rotary embeddings;
- :mod:`.attention`: the one attention function every attention goes through (a host can swap it);
- :mod:`.audio_projection`: each person's wav2vec2 window -> audio tokens;
- :mod:`.identity_attention`: the per-person audio+face attention, frame-blocked and masked to the face;
- :mod:`.cross_attention`: attention to text, picture and people, one class per variant;
- :mod:`.context`: what every block of one forward reads (text, picture, people, grid, rotary);
- :mod:`.dit`: blocks, head, the per-variant parts (``VARIANT_PARTS``) and :class:`AnyTalkerDiT`;
- :mod:`.checks`: the forward's input checks; :mod:`.loader`: :func:`load_dit` from the files users have.
"""

from .attention import sdpa_attention
from .config import PRESETS, AnyTalkerConfig
from .dit import AnyTalkerDiT
from .loader import load_dit, read_state_dict

__all__ = ["PRESETS", "AnyTalkerConfig", "AnyTalkerDiT", "load_dit", "read_state_dict", "sdpa_attention"]

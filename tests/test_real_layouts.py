"""The published checkpoints' layouts (shared/reference/real_checkpoint_layouts.md) load into our presets.

No real weights are read: a state dict of meta tensors with every real key and shape goes through the
loader's configuration inference and key check, so the 1.3B and 14B files are known to fit.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

import anytalker_core as at
from anytalker_core.model.loader import check_keys, resolve_config
from golden import REFERENCE, requires_shared

pytestmark = requires_shared
SECTIONS = {"1.3B": "## 1.3B", "14B": "## 14B"}


def real_layout(preset: str) -> tuple[dict[str, list[int]], int]:
    """Every key of the published file (block patterns expanded) with its shape, and the stated total."""
    text = (REFERENCE / "real_checkpoint_layouts.md").read_text()
    section = text.split(SECTIONS[preset], 1)[1].split("\n## ", 1)[0]
    total = int(re.search(r"total parameters: ([\d,]+)", section).group(1).replace(",", ""))
    layers = at.PRESETS[preset].num_layers
    keys = {}
    for pattern, shape in re.findall(r"^\| `([^`]+)` \| (\[[\d, ]+\]) \|", section, flags=re.M):
        for i in range(layers) if "{i}" in pattern else [None]:
            keys[pattern.replace("{i}", str(i))] = json.loads(shape)
    return keys, total


@pytest.mark.parametrize("preset", ["1.3B", "14B"])
def test_published_layout_fits_the_preset(preset):
    keys, total = real_layout(preset)
    state = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    cfg = resolve_config(state, None, f"{preset} layout")  # variant and sizes from shapes, heads from 128
    assert cfg == at.PRESETS[preset]
    with torch.device("meta"):
        model = at.AnyTalkerDiT(cfg)
    check_keys({k: v.shape for k, v in model.state_dict().items()}, state, f"{preset} layout")
    assert sum(p.numel() for p in model.parameters()) == total

"""The golden fixtures of ``shared/reference/``: where they are, and the rules that regenerate
their weights and audio inputs (see ``shared/reference/README.md``)."""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from functools import lru_cache

import numpy as np
import torch

from conftest import SHARED, requires_shared  # noqa: F401 (re-exported for the test modules)

REFERENCE = SHARED / "reference"
FORWARD = REFERENCE / "forward"


def rule_weight(key: str, shape: list[int], dim: int) -> np.ndarray:
    """One weight tensor by the fixtures' rule (float64 steps where the README says so)."""
    w = np.random.RandomState(zlib.crc32(key.encode("utf-8"))).standard_normal(shape).astype(np.float32)
    if key.endswith("weight") and len(shape) == 1 and "norm" in key:
        return np.float32(1) + np.float32(0.1) * w
    if len(shape) == 1:
        return np.float32(0.02) * w
    if key.endswith("modulation"):
        return (w.astype(np.float64) / np.sqrt(np.float64(dim))).astype(np.float32)
    return (w.astype(np.float64) * (1 / np.sqrt(np.float64(math.prod(shape[1:]))))).astype(np.float32)


@lru_cache(maxsize=None)
def rule_state_dict(variant: str) -> dict[str, torch.Tensor]:
    keys = json.loads((FORWARD / f"{variant}.keys.json").read_text())
    dim = keys["patch_embedding.weight"][0]
    return {k: torch.from_numpy(rule_weight(k, shape, dim)) for k, shape in keys.items()}


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode("utf-8"))
        digest.update(state[key].detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.to(torch.float32).contiguous().numpy().tobytes()).hexdigest()


def normal(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).standard_normal(shape).astype(np.float32))


def rule_audio(seed: int, identity: int, latent_frames: int) -> torch.Tensor:
    """Audio features [1, F, 5, 12, 768] of one identity, F = 4(T-1)+1 video frames."""
    return normal(seed + 10 + identity, (1, 4 * (latent_frames - 1) + 1, 5, 12, 768))


def summary() -> dict:
    return json.loads((FORWARD / "summary.json").read_text())

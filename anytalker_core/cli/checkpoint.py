"""``inspect CHECKPOINT``: what an AnyTalker checkpoint holds and whether it loads."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from ..model.dit import AnyTalkerDiT
from ..model.loader import check_keys, read_state_dict, resolve_config
from ..weights import CheckpointError


def add_parser(commands: Any) -> None:
    """The ``inspect`` command."""
    inspect = commands.add_parser("inspect", help="show what an AnyTalker checkpoint holds and whether it loads")
    inspect.add_argument("checkpoint", help=".pth, .safetensors or a folder of shards")
    inspect.add_argument("--config", help="the reference's config JSON (num_heads etc.), checked against the weights")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")


def inspect_checkpoint(source: str | Path, config: str | None = None) -> dict[str, Any]:
    """What a DiT checkpoint holds and whether it loads: variant, sizes, dtypes, parameter count, problems."""
    state, name = read_state_dict(source)
    report: dict[str, Any] = {
        "file": name,
        "tensors": len(state),
        "parameters": sum(t.numel() for t in state.values()),
        "dtypes": dict(Counter(str(t.dtype).replace("torch.", "") for t in state.values())),
        "problems": [],
    }
    try:
        cfg = resolve_config(state, config, name)
    except (CheckpointError, ValueError) as err:
        report["problems"].append(str(err))
        return report
    report["config"] = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    with torch.device("meta"):
        model = AnyTalkerDiT(cfg)
    try:
        check_keys({k: v.shape for k, v in model.state_dict().items()}, state, name)
    except CheckpointError as err:
        report["problems"].append(str(err))
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"file:        {report['file']}")
    print(f"tensors:     {report['tensors']} ({report['parameters'] / 1e9:.3f} B parameters)")
    print(f"dtypes:      {', '.join(f'{k} x{v}' for k, v in report['dtypes'].items())}")
    cfg = report.get("config")
    if cfg:
        print(f"variant:     {cfg['variant']} ({'1.3B-style' if cfg['variant'] == 'af' else '14B-style'})")
        print(
            f"dimensions:  dim {cfg['dim']}, ffn {cfg['ffn_dim']}, {cfg['num_layers']} blocks, "
            f"{cfg['num_heads']} heads (head size {cfg['dim'] // cfg['num_heads']}), text_dim {cfg['text_dim']}"
        )
    if report["problems"]:
        print("problems:")
        for problem in report["problems"]:
            print(f"  - {problem}")
    else:
        print("problems:    none: the checkpoint loads into AnyTalkerDiT")


def inspect_command(args: argparse.Namespace) -> int:
    report = inspect_checkpoint(args.checkpoint, args.config)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print_report(report)
    return 1 if report["problems"] else 0


# ------------------------------------------------------------------------------------------------- evaluate


# fmt: off

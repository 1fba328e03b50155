"""``python -m anytalker_core inspect``: what a checkpoint holds, whether it loads, one clear line on errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from anytalker_core.cli import main
from micro import micro_config, micro_model

REPO = Path(__file__).resolve().parents[1]


def test_inspect_reports_a_loadable_checkpoint(tmp_path, capsys):
    model = micro_model("legacy")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "dit.safetensors")
    cfg = micro_config("legacy")
    (tmp_path / "config.json").write_text(json.dumps({k: getattr(cfg, k) for k in cfg.__dataclass_fields__}))
    assert main(["inspect", str(tmp_path / "dit.safetensors"), "--config", str(tmp_path / "config.json")]) == 0
    out = capsys.readouterr().out
    assert "variant:     legacy" in out and "problems:    none" in out
    assert f"{sum(p.numel() for p in model.parameters()) / 1e9:.3f} B parameters" in out


def test_inspect_lists_problems_and_exits_1(tmp_path, capsys):
    state = {k: v.clone() for k, v in micro_model("af").state_dict().items()}
    del state["blocks.0.ffn.2.bias"]
    torch.save({"model": state}, tmp_path / "broken.pth")
    cfg = micro_config("af")
    (tmp_path / "config.json").write_text(json.dumps({k: getattr(cfg, k) for k in cfg.__dataclass_fields__}))
    assert main(["inspect", str(tmp_path / "broken.pth"), "--config", str(tmp_path / "config.json"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["variant"] == "af"
    assert "1 missing keys (blocks.0.ffn.2.bias)" in report["problems"][0]
    assert main(["inspect", str(tmp_path / "broken.pth")]) == 1  # no config: heads cannot be read, said plainly
    assert "num_heads cannot be read from the weights" in capsys.readouterr().out


def test_inspect_bad_file_is_one_line_and_non_zero(tmp_path):
    missing = tmp_path / "nope.pth"
    result = subprocess.run(
        [sys.executable, "-m", "anytalker_core", "inspect", str(missing)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: checkpoint not found: {missing}"

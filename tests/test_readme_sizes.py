"""The README's model-file sizes, as ``tests/tools/host_smoke.py`` reads and checks them.

The DiT rows are checked here against the checkpoint layout (no host needed); the encoder rows need the host's
classes and are checked by ``host_smoke.py prepare --real-size``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "tools"))
import host_smoke  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_model_row_pairs_its_files_with_sizes():
    rows = host_smoke.readme_sizes(README)
    named = {name: size for _, names, sizes in rows for name, size in zip(names, sizes)}
    assert all(len(names) == len(sizes) for _, names, sizes in rows)
    assert set(host_smoke.REAL_FILES) | set(host_smoke.LAYOUT_ONLY) <= set(named)
    assert named["umt5_xxl_fp8_e4m3fn_scaled.safetensors"] == pytest.approx(6.7e9)
    assert named["umt5_xxl_fp16.safetensors"] == pytest.approx(11.4e9)


@pytest.mark.parametrize("preset, name", [("1.3B", "1_3B-single-v1.pth"), ("14B", "14B-multi-v1.pth")])
def test_readme_dit_sizes_match_the_checkpoint_layout(preset, name, capsys):
    size = sum(e.nbytes for e in host_smoke._dit_layout(preset))
    rows = [(n, names) for n, names, _ in host_smoke.readme_sizes(README) if name in names]
    assert rows, f"{name} is in no README table with a size"
    assert host_smoke.check_readme_sizes({name: {"bytes": size, "written": False}}, README) == 1  # others unknown
    out = capsys.readouterr().out
    assert f"`{name}`" in out and f"README.md:{rows[0][0]}: `{name}`" in out
    assert all(f"`{name}`: " not in line or line.endswith(": ok") for line in out.splitlines() if "stated" in line)


def test_a_wrong_size_or_name_fails_naming_the_line(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(
        "| file | what | size |\n| --- | --- | --- |\n"
        "| `wan_2.1_vae.safetensors` | VAE | 254 MB |\n"
        "| `clip_vision_h.safetensors` | image encoder | 2.6 GB |\n"
        "| `wav2vec2-base.safetensors` | audio encoder | 378 MB |\n"
    )
    generated = {name: {"bytes": size, "written": True} for name, size in
                 [("wan_2.1_vae.safetensors", 253_785_062), ("clip_vision_h.safetensors", 1_264_153_600),
                  ("wav2vec2-base-960h.safetensors", 377_585_280)]}  # fmt: skip
    assert host_smoke.check_readme_sizes(generated, readme) == 1
    out = capsys.readouterr().out
    assert "README.md:3: `wan_2.1_vae.safetensors`: 0.254 GB stated, 0.254 GB generated: ok" in out
    assert "README.md:4: `clip_vision_h.safetensors`: 2.600 GB stated, 1.264 GB generated: more than 5% apart" in out
    assert "README.md:5: `wav2vec2-base.safetensors`: no such file among the real-size files" in out
    assert "`wav2vec2-base-960h.safetensors` is in no README table with a size" in out

"""The pipeline end to end on the tiny built-in models: the demo's video, the CLI, determinism, cancellation."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from anytalker_core import demo
from anytalker_core.cli import main
from anytalker_core.pipeline.standalone import generate
from anytalker_core.sampling import SamplingCancelled


@pytest.fixture(scope="module")
def models():
    return demo.tiny_models(seed=0)


def read_mp4(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        fps = float(video.average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        samples = sum(f.samples for f in container.decode(audio=0))
        rate = audio.rate
    return {"fps": fps, "frames": frames, "audio_seconds": samples / rate, "codec": video.codec_context.name}


def test_demo_writes_a_playable_video_with_both_voices(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "demo_binding.png" in printed
    clip = read_mp4(out)
    # the two 0.9 s turns add up to 1.83 s = 44 frames, rounded down to 4n+1
    assert clip["frames"].shape == (41, 128, 192, 3) and clip["fps"] == 24
    assert abs(clip["audio_seconds"] - 41 / 24) <= 1024 / 44100 + 1e-6  # at most one AAC frame more
    assert clip["frames"].std(axis=0).mean() > 5  # frames change over time
    assert (tmp_path / "demo_binding.png").stat().st_size > 1000
    # an existing file is not replaced: one clear line, exit 2, file untouched
    before = out.stat().st_mtime_ns
    assert main(["demo", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == before


def small_run(models, **kwargs):
    args = dict(mode=demo.MODE, size=(64, 96), num_frames=9, steps=2, seed=3, device="cpu")
    args.update(kwargs)
    return generate(models, demo.IMAGE, list(demo.AUDIO), demo.PROMPT, **args)


def test_same_seed_same_video_other_seed_other_video(models):
    a, b, c = small_run(models), small_run(models), small_run(models, seed=4)
    assert torch.equal(a.latent, b.latent) and torch.equal(a.frames, b.frames)
    assert not torch.equal(a.latent, c.latent)
    assert a.frames.shape == (9, 64, 96, 3) and a.frames.dtype == torch.uint8
    assert a.seed == 3 and small_run(models, seed=None).seed >= 0


def test_order_and_given_boxes_rebind_voices(models):
    detected = small_run(models)
    boxes = [list(b) for b in detected.routing.boxes]
    swapped = small_run(models, faces=boxes, order="2,1")
    assert swapped.routing.boxes == (detected.routing.boxes[1], detected.routing.boxes[0])
    assert not torch.equal(swapped.latent, detected.latent)  # the voices now drive the other faces


def test_a_listener_and_progress_callback(models):
    steps = []
    video = generate(
        models, demo.IMAGE, [demo.AUDIO[0], None], demo.PROMPT, size=(64, 96), steps=3, seed=1, device="cpu",
        callback=lambda i, total, x0: steps.append((i, total, tuple(x0.shape))),
    )  # fmt: skip
    assert [s[:2] for s in steps] == [(0, 3), (1, 3), (2, 3)]
    assert steps[0][2] == tuple(video.latent.shape)
    assert video.layout.speakers[1].role == "listener"


def test_cancel_between_steps(models):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(SamplingCancelled):
        small_run(models, should_stop=stop, steps=4)
    assert len(calls) == 2  # stopped before the second step, not after the run


def test_bad_inputs_fail_early_with_clear_messages(models, tmp_path):
    with pytest.raises(ValueError, match="one track"):
        generate(models, demo.IMAGE, str(demo.AUDIO[0]))
    with pytest.raises(ValueError, match="multiples of 32"):
        generate(models, demo.IMAGE, list(demo.AUDIO), size=(60, 90))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        generate(models, tmp_path / "missing.png", list(demo.AUDIO))
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(ValueError, match="not a picture"):
        generate(models, tmp_path / "text.png", list(demo.AUDIO))


def save_real_files(models, folder: Path) -> dict[str, Path]:
    """The tiny models in the file formats users have (DiT .pth, wav2vec2 folder, ComfyUI-style encoders)."""
    from test_encoders import tiny_spiece

    paths = {}
    dit = models.dit
    paths["dit"] = folder / "anytalker.pth"
    torch.save({"model": dit.state_dict()}, paths["dit"])
    cfg = dit.config
    paths["dit_config"] = folder / "config.json"
    paths["dit_config"].write_text(json.dumps({k: getattr(cfg, k) for k in cfg.__dataclass_fields__}))
    paths["wav2vec2"] = folder / "wav2vec2"
    models.audio_encoder.model.save_pretrained(paths["wav2vec2"])
    text = {k: v for k, v in models.text_encoder.model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    text["spiece_model"] = torch.frombuffer(bytearray(tiny_spiece()), dtype=torch.uint8)
    paths["text"] = folder / "umt5_xxl_fp16.safetensors"
    save_file(text, str(paths["text"]))
    (folder / "clip_vision").mkdir()
    tower = {"vision_model." + k: v.contiguous() for k, v in models.image_encoder.model.state_dict().items()}
    paths["clip"] = folder / "clip_vision" / "clip_vision_h.safetensors"
    save_file(tower, str(paths["clip"]))  # 2 of the 3 blocks (the loader drops the last one again: fine for a test)
    (folder / "clip_vision" / "config.json").write_text(json.dumps({"num_attention_heads": 4}))
    paths["vae"] = folder / "wan_2.1_vae.safetensors"
    save_file({k: v.contiguous() for k, v in models.vae.model.state_dict().items()}, str(paths["vae"]))
    return paths


def test_cli_generate_from_files(models, tmp_path, capsys):
    p = save_real_files(models, tmp_path)
    out = tmp_path / "out" / "talk.mp4"
    argv = [
        "generate", "--image", str(demo.IMAGE), "--audio", str(demo.AUDIO[0]), "--audio", "none",
        "--prompt", "two anchors", "--out", str(out), "--dit", str(p["dit"]), "--dit-config", str(p["dit_config"]),
        "--wav2vec2", str(p["wav2vec2"]), "--text-encoder", str(p["text"]), "--image-encoder", str(p["clip"]),
        "--vae", str(p["vae"]), "--steps", "2", "--size", "96x64", "--frames", "9", "--seed", "5", "--device", "cpu",
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    clip = read_mp4(out)
    assert clip["frames"].shape == (9, 64, 96, 3)
    assert "seed 5" in capsys.readouterr().out
    # bad input: one line, exit 2, nothing written
    bad = argv[:]
    bad[bad.index("--audio") + 1] = str(tmp_path / "nope.wav")
    bad[bad.index("--out") + 1] = str(tmp_path / "never.mp4")
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "nope.wav" in err and err.count("\n") == 1
    assert not (tmp_path / "never.mp4").exists()


@pytest.mark.requires_shared
def test_read_image_handles_the_example_quirks():
    from anytalker_core.images import read_image
    from conftest import SHARED

    rgba = read_image(SHARED / "examples" / "2p-0.png")  # alpha channel dropped
    assert rgba.shape == (480, 852, 3) and rgba.dtype == np.uint8
    jpeg = read_image(SHARED / "examples" / "1p-0.png")  # a JPEG despite its name
    assert jpeg.shape == (768, 1344, 3)


def test_demo_seconds_renders_windows_of_the_conversation(tmp_path, capsys):
    out = tmp_path / "long.mp4"
    assert main(["demo", "--seconds", "0.5", "--window", "9", "--motion-frames", "5", "--steps", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "13 frames" in printed and "2 window(s)" in printed  # 0.5 s -> 12 frames, up to 4n+1
    clip = read_mp4(out)
    assert clip["frames"].shape[0] == 13 and abs(clip["audio_seconds"] - 13 / 24) <= 1024 / 44100 + 1e-6
    assert main(["demo", "--seconds", "-1", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "--seconds" in capsys.readouterr().err
    assert main(["demo", "--window", "10", "--out", str(tmp_path / "y.mp4")]) == 2
    assert "window" in capsys.readouterr().err


def test_defaults_are_the_references_for_the_model_and_the_size(models):
    """40 steps for a 1.3B (af) model, 20 for 14B (legacy); shift 3 for a 480p clip, 5 otherwise; guidance 4.5."""
    from anytalker_core.pipeline import standalone

    audio, image = list(demo.AUDIO), demo.IMAGE
    small = standalone.prepare(models, image, audio, demo.PROMPT, size=(64, 96), device="cpu")
    assert (small.steps, small.shift, small.guidance) == (40, 5.0, 4.5)
    p480 = standalone.prepare(models, image, audio, demo.PROMPT, size=(480, 832), num_frames=1, device="cpu")
    assert p480.shift == 3.0
    assert standalone.prepare(models, image, audio, size=(64, 96), steps=7, shift=2.0, device="cpu").shift == 2.0
    legacy = type("Legacy", (), {"config": type("Config", (), {"variant": "legacy"})(),
                                 "parameters": lambda self: models.dit.parameters()})()  # fmt: skip
    swapped = standalone.Models(legacy, models.audio_encoder, models.text_encoder, models.image_encoder, models.vae)
    assert standalone.prepare(swapped, image, audio, size=(64, 96), device="cpu").steps == 20

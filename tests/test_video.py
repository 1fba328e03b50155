"""anytalker_core.video: mp4 (H.264 + AAC) and PNG output, decoded back with PyAV / Pillow; atomic writes."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from anytalker_core.pipeline.writer import write_png, write_video

F, H, W, FPS, SR = 24, 48, 64, 24, 44100


def gradient(f=F, h=H, w=W) -> np.ndarray:
    """A moving diagonal gradient, float32 [f, h, w, 3] in 0..1: every frame differs from the others."""
    t = np.arange(f, dtype=np.float32)[:, None, None]
    y = np.arange(h, dtype=np.float32)[None, :, None] / h
    x = np.arange(w, dtype=np.float32)[None, None, :] / w
    shape = (f, h, w)
    r = np.broadcast_to((x + t / f) % 1.0, shape)
    g = np.broadcast_to(y, shape)
    b = np.broadcast_to(0.5 + 0.4 * np.sin(2 * np.pi * t / f), shape)
    return np.stack([0.1 + 0.8 * r, 0.1 + 0.8 * g, b], axis=-1).astype(np.float32)


def decode(path):
    """(video frames as float [F, H, W, 3], video stream info, audio info or None)."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        info = {"codec": vs.codec_context.name, "rate": vs.average_rate, "frames_meta": vs.frames}
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32) / 255
    audio = None
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            audio = {
                "codec": a.codec_context.name,
                "rate": a.codec_context.sample_rate,
                "channels": a.codec_context.channels,
                "duration": float(a.duration * a.time_base),
                "samples": sum(f.samples for f in c.decode(audio=0)),
            }
    return frames, info, audio


def no_temp_files(folder):
    return [p.name for p in folder.iterdir() if ".tmp" in p.name] == []


def test_mp4_video_and_audio_round_trip(tmp_path):
    frames = gradient()
    speech = (0.3 * np.sin(np.arange(SR * 2) * 0.05)).astype(np.float32)  # 2 s: longer than the 1 s video
    out = write_video(tmp_path / "out.mp4", frames, fps=FPS, audio=speech, audio_rate=SR)
    assert out == tmp_path / "out.mp4" and out.is_file()
    decoded, info, audio = decode(out)
    assert info["codec"] == "h264"
    assert decoded.shape == (F, H, W, 3)
    assert info["frames_meta"] == F
    assert info["rate"] == FPS
    assert np.abs(decoded - frames).mean() < 0.05
    diffs = [np.abs(decoded[i + 1] - decoded[i]).mean() for i in range(F - 1)]
    assert min(diffs) > 0.005, "decoded frames should move like the input"
    assert decoded.std() > 0.1
    assert audio["codec"] == "aac" and audio["rate"] == SR and audio["channels"] == 1
    assert abs(audio["duration"] - F / FPS) <= 1024 / SR
    assert abs(audio["samples"] - SR * F / FPS) <= 1024
    assert no_temp_files(tmp_path)


def test_short_stereo_audio_is_padded_to_the_video(tmp_path):
    stereo = np.zeros((2, 4000), np.float32)  # far shorter than 1 s
    out = write_video(tmp_path / "s.mp4", gradient(), fps=FPS, audio=stereo, audio_rate=16000)
    _, _, audio = decode(out)
    assert audio["channels"] == 2 and audio["rate"] == 16000
    assert abs(audio["duration"] - F / FPS) <= 1024 / 16000


def test_no_audio_and_uint8_and_torch_input(tmp_path):
    u8 = (gradient() * 255 + 0.5).astype(np.uint8)
    _, info, audio = decode(write_video(tmp_path / "a.mp4", u8, fps=12))
    assert audio is None and info["rate"] == 12
    decoded, _, _ = decode(write_video(tmp_path / "b.mp4", torch.from_numpy(gradient()).to(torch.bfloat16)))
    assert decoded.shape[0] == F and np.abs(decoded - gradient()).mean() < 0.05


def test_fractional_fps(tmp_path):
    _, info, _ = decode(write_video(tmp_path / "f.mp4", gradient(f=6), fps=23.976))
    assert info["rate"] == Fraction(24000, 1001)


def test_chunked_iterable_gives_the_same_video(tmp_path):
    frames = gradient()
    whole, _, _ = decode(write_video(tmp_path / "whole.mp4", frames, fps=FPS))
    gen = (torch.from_numpy(frames[i : i + 5]) for i in range(0, F, 5))  # 5,5,5,5,4
    chunked, info, _ = decode(write_video(tmp_path / "chunked.mp4", gen, fps=FPS, audio=np.zeros(100, np.float32)))
    assert chunked.shape == whole.shape and info["frames_meta"] == F
    # the same pixels go to the encoder; x264 output was byte-identical in nearly all runs, but not guaranteed
    assert np.abs(chunked - whole).mean() < 0.01


def test_odd_size_is_padded_by_edge_replication(tmp_path):
    frames = gradient(f=4, h=47, w=63)
    decoded, _, _ = decode(write_video(tmp_path / "odd.mp4", frames, fps=FPS))
    assert decoded.shape == (4, 48, 64, 3)
    assert np.abs(decoded[:, :47, :63] - frames).mean() < 0.05
    assert np.abs(decoded[:, 47, :63] - frames[:, 46]).mean() < 0.06  # replicated last row


def test_existing_file_is_kept_unless_overwrite(tmp_path):
    target = tmp_path / "taken.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"taken\.mp4.*overwrite=True.*another name"):
        write_video(target, gradient(f=2), fps=FPS)
    assert target.read_bytes() == b"precious" and no_temp_files(tmp_path)
    write_video(target, gradient(f=2), fps=FPS, overwrite=True)
    assert decode(target)[0].shape[0] == 2 and no_temp_files(tmp_path)


def test_failure_mid_write_leaves_nothing(tmp_path):
    def broken():
        frames = gradient()
        yield frames[:4]
        yield frames[4:8]
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError, match="decoder died"):
        write_video(tmp_path / "x.mp4", broken(), fps=FPS, audio=np.zeros(SR, np.float32))
    assert list(tmp_path.iterdir()) == []

    def bad_later_chunk():
        yield gradient(f=2)
        yield gradient(f=2, h=32)

    with pytest.raises(ValueError, match="chunk 1.*48x64"):
        write_video(tmp_path / "y.mp4", bad_later_chunk())
    assert list(tmp_path.iterdir()) == []

    # a failure while replacing an existing file leaves the old file untouched
    target = tmp_path / "old.mp4"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        write_video(target, broken(), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["old.mp4"] and target.read_bytes() == b"old"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"frames": np.zeros((4, 48, 64), np.float32)},
            r"frames: expected shape \[frames, H, W, 3\], got \[4, 48, 64\]",
        ),
        ({"frames": np.zeros((4, 48, 64, 4), np.float32)}, r"got \[4, 48, 64, 4\]"),
        ({"frames": np.zeros((4, 48, 64, 3), np.int32)}, "got dtype int32"),
        ({"frames": np.zeros((0, 48, 64, 3), np.float32)}, "no frames"),
        ({"frames": iter([])}, "no frames"),
        ({"frames": [np.zeros((48, 64, 3), np.float32)]}, r"chunk 0: expected shape \[frames, H, W, 3\]"),
        ({"frames": np.full((2, 48, 64, 3), np.nan, np.float32)}, "NaN"),
        ({"fps": 0}, "fps: expected a positive number, got 0"),
        ({"fps": -24}, "fps"),
        ({"audio": np.array([0.0, np.nan], np.float32)}, "audio: contains NaN"),
        ({"audio": np.zeros((3, 100), np.float32)}, "1 or 2 channels"),
        ({"audio": np.zeros((1, 2, 100), np.float32)}, r"audio: expected shape \[T\]"),
        ({"audio": np.zeros(100, np.float32), "audio_rate": 44000}, "audio_rate"),
        ({"crf": 60}, "crf"),
    ],
)
def test_bad_input_is_a_clear_error_and_leaves_nothing(tmp_path, kwargs, match):
    args = {"frames": gradient(f=2), "fps": FPS, **kwargs}
    with pytest.raises(ValueError, match=match):
        write_video(tmp_path / "bad.mp4", **args)
    assert list(tmp_path.iterdir()) == []


def test_png_round_trip(tmp_path):
    img = gradient(f=1, h=31, w=45)[0]
    out = write_png(tmp_path / "sub" / "binding.png", img)
    back = np.asarray(Image.open(out).convert("RGB"))
    np.testing.assert_array_equal(back, (img * 255 + 0.5).astype(np.uint8))
    u8 = np.random.default_rng(0).integers(0, 256, (1, 20, 30, 3), dtype=np.uint8)  # a one-image ComfyUI batch
    with pytest.raises(FileExistsError, match=r"binding\.png.*overwrite=True"):
        write_png(out, u8)
    write_png(out, torch.from_numpy(u8), overwrite=True)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), u8[0])
    with pytest.raises(ValueError, match=r"image: expected shape \[H, W, 3\]"):
        write_png(tmp_path / "bad.png", np.zeros((2, 20, 30, 3), np.uint8))
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["binding.png"]

"""Long videos: windows that tile the clip exactly, audio on one timeline, motion frames handed on, colours
anchored, cancellation that keeps a playable file, and one window equal to the one-pass pipeline."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from anytalker_core import demo
from anytalker_core.people.audio import load_audio
from anytalker_core.pipeline import standalone as pipeline
from anytalker_core.pipeline import windows
from anytalker_core.pipeline.colors import anchor_colors, color_stats
from anytalker_core.pipeline.standalone import generate, render
from anytalker_core.pipeline.windows import first_frame, plan_windows, to_uint8
from anytalker_core.sampling import SamplingCancelled


@pytest.fixture(scope="module")
def models():
    return demo.tiny_models(seed=0)


SMALL = dict(mode=demo.MODE, size=(64, 96), steps=2, seed=7, device="cpu")


def test_windows_tile_the_clip_without_gaps_or_doubles():
    for total, window, motion in [(41, 17, 5), (81, 81, 5), (9, 81, 5), (485, 81, 5), (45, 9, 1), (333, 81, 9)]:
        plan = plan_windows(total, window, motion)
        written = [f for w in plan for f in range(*w.written)]
        assert written == list(range(total)), (total, window, motion)
        assert all(w.length <= window and (w.length - 1) % 4 == 0 for w in plan)
        assert all(b.start == a.start + a.length - motion for a, b in zip(plan, plan[1:]))
    assert len(plan_windows(81)) == 1 and len(plan_windows(85)) == 2
    for bad in [dict(window=80), dict(motion_frames=4), dict(window=9, motion_frames=9)]:
        with pytest.raises(ValueError):
            plan_windows(41, **bad)


def spy(monkeypatch):
    """Record every window's inputs and decoded output, and collect the frames instead of writing a file."""
    calls, chunks = [], []
    real = pipeline.sample_window

    def sample_window(job, inputs, callback=None, should_stop=None):
        latent, video = real(job, inputs, callback, should_stop)
        calls.append(dict(job=job, known=inputs.known, audio=inputs.audio, masks=inputs.token_masks,
                          y_mask=inputs.y_mask, video=video))  # fmt: skip
        return latent, video

    def write_video(path, frames, *args, **kwargs):
        chunks.extend(frames)
        return path

    monkeypatch.setattr(pipeline, "sample_window", sample_window)
    monkeypatch.setattr(pipeline, "write_video", write_video)
    return calls, chunks


def test_windows_slice_one_timeline_and_hand_on_their_last_frames(models, monkeypatch, tmp_path):
    calls, chunks = spy(monkeypatch)
    result = render(models, demo.IMAGE, list(demo.AUDIO), demo.PROMPT, tmp_path / "x.mp4", window=17,
                         motion_frames=5, **SMALL)  # fmt: skip
    assert [w.start for w in result.windows] == [0, 12, 24] and len(calls) == 3
    scene = calls[0]["job"].scene
    for w, call in zip(result.windows, calls):
        for person, features in enumerate(scene.layout.features):  # the global features, sliced
            assert torch.equal(call["audio"][person], features[w.start : w.start + w.length])
        known_latent = (w.known - 1) // 4 + 1
        assert torch.all(call["y_mask"][:, :known_latent] == 1)  # given frames marked like frame 0
        assert call["y_mask"][:, known_latent:].max() < 1.5 and call["y_mask"].shape[1] == (w.length - 1) // 4 + 1
    target = color_stats(to_uint8(first_frame(scene)[None])[0].numpy())
    for k in range(len(calls) - 1):
        frames = to_uint8(calls[k]["video"]).numpy()
        if k > 0:
            frames = anchor_colors(frames, target)
        expected = torch.from_numpy(frames[-5:]).permute(3, 0, 1, 2).float().div(127.5).sub(1)
        assert torch.equal(calls[k + 1]["known"], expected)  # window k+1 starts from window k's last 5 frames
    assert sum(len(c) for c in chunks) == result.frames == 41  # overlaps written once


def test_one_window_is_the_one_pass_pipeline(models, monkeypatch, tmp_path):
    _, chunks = spy(monkeypatch)
    render(models, demo.IMAGE, list(demo.AUDIO), demo.PROMPT, tmp_path / "x.mp4", num_frames=9, **SMALL)
    video = generate(models, demo.IMAGE, list(demo.AUDIO), demo.PROMPT, num_frames=9, **SMALL)
    assert len(chunks) == 1 and np.array_equal(chunks[0], video.frames.numpy())


def test_the_file_has_every_frame_and_audio_in_sync(models, tmp_path):
    out = tmp_path / "long.mp4"
    result = render(models, demo.IMAGE, list(demo.AUDIO), demo.PROMPT, out, window=17, motion_frames=5,
                         **SMALL)  # fmt: skip
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        samples = sum(f.samples for f in container.decode(audio=0))
    assert frames == result.frames == 41
    assert abs(samples / stream.rate - 41 / 24) <= 1024 / stream.rate + 1e-6  # frame i plays at i/24


def test_cancel_between_windows_keeps_a_playable_file(models, tmp_path):
    done = []
    out = tmp_path / "cut.mp4"
    result = render(
        models, demo.IMAGE, list(demo.AUDIO), demo.PROMPT, out, window=17, motion_frames=5,
        on_window=lambda w, total: done.append(w.index), should_stop=lambda: len(done) >= 2, **SMALL,
    )  # fmt: skip
    assert result.cancelled and result.windows_done == 1 and result.frames == 17
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 17
    with av.open(str(out)) as container:
        stream = container.streams.audio[0]
        assert abs(sum(f.samples for f in container.decode(audio=0)) / stream.rate - 17 / 24) < 0.05
    with pytest.raises(SamplingCancelled):  # nothing finished: nothing written
        render(models, demo.IMAGE, list(demo.AUDIO), demo.PROMPT, tmp_path / "none.mp4",
                    should_stop=lambda: True, **SMALL)  # fmt: skip
    assert not (tmp_path / "none.mp4").exists()


def test_color_anchoring_undoes_a_tint():
    rng = np.random.default_rng(0)
    picture = rng.integers(40, 216, size=(32, 48, 3)).astype(np.uint8)
    target = color_stats(picture)
    tinted = np.clip(np.stack([picture] * 3).astype(np.int16) * [1.25, 0.85, 0.7] + [20, 0, -10], 0, 255)
    tinted = tinted.astype(np.uint8)
    before = np.abs(np.array(color_stats(tinted)) - np.array(target)).max()
    fixed = anchor_colors(tinted, target)
    after = np.abs(np.array(color_stats(fixed)) - np.array(target)).max()
    assert before > 10 and after < 0.15 * before and fixed.shape == tinted.shape and fixed.dtype == np.uint8
    assert np.array_equal(anchor_colors(tinted, target, strength=0.0), tinted)


def test_face_tracking_keeps_the_binding():
    from anytalker_core.images import read_image

    frame = read_image(demo.IMAGE)
    boxes = [(237.0, 56.0, 317.0, 136.0), (72.0, 37.0, 161.0, 126.0)]  # voice 1 on the right face
    tracked = windows.track_boxes(frame, boxes)  # the default detector (YuNet)
    assert tracked[0][0] > tracked[1][0]  # still right, then left
    assert all(abs(a - b) < 10 for t, p in zip(tracked, boxes) for a, b in zip(t, p))
    assert windows.track_boxes(np.zeros_like(frame), boxes) == boxes  # nobody found: kept
    assert windows.track_boxes(frame, boxes, backend="haar")[0][0] > 200  # any backend by name


def test_face_tracking_takes_the_median_over_the_known_frames():
    """A window's known frames: the faces are found on each and each box is the median over them, so one frame
    where the detector is off (or finds nobody) does not move the masks."""
    from anytalker_core.images import read_image

    frame = read_image(demo.IMAGE)
    boxes = [(72.0, 37.0, 161.0, 126.0), (237.0, 56.0, 317.0, 136.0)]
    one = windows.track_boxes(frame, boxes)
    shifted = np.roll(frame, 12, axis=1)  # everybody 12 px to the right
    stack = np.stack([frame, shifted, frame, np.zeros_like(frame), frame])
    assert windows.track_boxes(stack, boxes) == one  # the median ignores the odd frame and the empty one
    moved = windows.track_boxes(np.stack([shifted] * 3 + [frame] * 2), boxes)
    assert all(abs(m[0] - o[0] - 12) < 2 and abs((m[2] - m[0]) - (o[2] - o[0])) < 2 for m, o in zip(moved, one))


def test_follow_faces_is_off_for_moving_masks():
    from types import SimpleNamespace

    def run(moving: bool) -> windows.WindowRun:
        scene = SimpleNamespace(frames=41, routing=SimpleNamespace(moving=moving))
        return windows.WindowRun(scene, lambda inputs: None, window=17, follow_faces=True)

    assert run(moving=False).follow_faces and not run(moving=True).follow_faces  # the masks already move


def test_long_tracks_encode_in_chunks_close_to_one_pass(models):
    encoder = models.audio_encoder
    wave = torch.cat([load_audio(p) for p in demo.AUDIO * 3])  # 5.4 s of speech
    wave = (wave - wave.mean()) / (wave.std() + 1e-7)
    frames = 129
    single = encoder.hidden_states(wave, frames)
    assert torch.equal(encoder.hidden_states(wave, frames, chunk_frames=200), single)  # fits: one pass
    chunked = encoder.hidden_states(wave, frames, chunk_frames=40, overlap=24)
    assert chunked.shape == single.shape
    relative = (chunked - single).norm() / single.norm()
    assert 0 < relative < 0.05, float(relative)


def test_an_existing_file_is_refused_before_any_work(models, tmp_path, monkeypatch):
    out = tmp_path / "taken.mp4"
    out.write_bytes(b"keep me")
    monkeypatch.setattr(pipeline, "prepare", lambda *a, **k: pytest.fail("prepared before checking the output"))
    with pytest.raises(FileExistsError, match="overwrite"):
        render(models, demo.IMAGE, list(demo.AUDIO), demo.PROMPT, out, **SMALL)
    assert out.read_bytes() == b"keep me"


def test_the_window_engine_drives_any_sampler(models):
    """The ComfyUI node samples through the host; the engine only needs "inputs -> uint8 frames"."""
    scene = pipeline.prepare(models, demo.IMAGE, list(demo.AUDIO), demo.PROMPT, num_frames=41, **SMALL).scene
    seen = []

    def sample_window(inputs):
        w = inputs.window
        seen.append(inputs)
        frames = np.zeros((w.length, *scene.size, 3), np.uint8)
        frames[:] = np.arange(w.length, dtype=np.uint8)[:, None, None, None] + 10 * w.index
        return frames

    run = windows.WindowRun(scene, sample_window, window=17, motion_frames=5, color_anchor=False)
    frames = np.concatenate(list(run))
    assert [i.window.start for i in seen] == [0, 12, 24] and frames.shape[0] == run.frames == 41
    assert frames[:17, 0, 0, 0].tolist() == list(range(17))  # window 0 whole, then only the new frames
    assert frames[17:29, 0, 0, 0].tolist() == [10 + k for k in range(5, 17)]
    expected = torch.from_numpy(np.arange(12, 17, dtype=np.float32)).div(127.5).sub(1)
    assert torch.equal(seen[1].known[0, :, 0, 0], expected)  # window 1 starts from window 0's last 5 frames
    assert seen[0].known.shape[1] == 1 and torch.equal(seen[0].known, windows.first_frame(scene))

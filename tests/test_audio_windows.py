"""Audio features per window at constant memory: the stored layer outputs, the windows built from them (equal to
the whole clip's features sliced), long tracks streamed through the conv stack and the transformer in chunks, and
the mixed track resampled piece by piece."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Wav2Vec2Config, Wav2Vec2Model

from anytalker_core import demo
from anytalker_core.people import audio, audio_features, audio_store
from anytalker_core.people.audio import frame_count, load_audio, normalize_waveform
from anytalker_core.people.audio_features import AudioEncoder, interpolate_frames, load_audio_encoder
from anytalker_core.people.audio_store import HiddenStates, audio_windows
from anytalker_core.people.speakers import SpeakerLayout, arrange_speakers
from anytalker_core.pipeline import standalone, windows
from anytalker_core.pipeline.windows import plan_windows


def tiny(**changes) -> Wav2Vec2Model:
    torch.manual_seed(0)
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)  # fmt: skip
    return Wav2Vec2Model(Wav2Vec2Config(**{**sizes, **changes})).eval()


@pytest.fixture(scope="module")
def encoder():
    return load_audio_encoder(tiny())


def voice(seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, int]:
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(channels, round(seconds * rate), generator=g), rate


def reference_chain(wave, encoder, num_frames=None, chunk_frames=None) -> torch.Tensor:
    """The feature chain as it was before windows were built per window: the whole track's hidden states, every
    frame's 5-frame window, cut to the clip."""
    normed = normalize_waveform(wave)
    n = frame_count(normed.shape[0])
    if num_frames is not None and n % num_frames:
        extra = num_frames - n % num_frames
        normed = F.pad(normed, (0, extra * (16000 // 24)))
        n += extra
    features = audio_windows(encoder.hidden_states(normed, n, chunk_frames))
    return features if num_frames is None else features[:num_frames]


def reference_features(layout: SpeakerLayout, tracks, encoder, chunk_frames=None) -> list[torch.Tensor]:
    """Every person's [F, 5, layers, channels] on the clip, placed as the layout's speakers say."""
    total, out = layout.num_frames, []
    for person, track in zip(layout.speakers, tracks):
        if person.role != "speaker":
            out.append(None)
            continue
        wave, start = load_audio(track), person.start_frame
        if layout.mode == "pad":
            own = reference_chain(wave, encoder, total - start, chunk_frames)
        else:
            own = reference_chain(wave, encoder, None, chunk_frames)[: total - start]
        placed = own.new_zeros((total, *own.shape[1:]))
        placed[start : start + own.shape[0]] = own
        out.append(placed)
    template = next(f for f in out if f is not None)
    return [torch.zeros_like(template) if f is None else f for f in out]


def ranges(total: int) -> list[tuple[int, int]]:
    """Frame ranges to read: the windows of a long render, single frames at both ends, odd spans, the whole clip."""
    spans = [(w.start, w.length) for w in plan_windows(total, 9, 1)]
    spans += [(0, 1), (1, 2), (total - 1, 1), (total - 3, 3), (5, 7), (0, total)]
    return spans


@pytest.mark.parametrize("mode", ["pad", "concat"])
def test_window_features_are_the_whole_clip_sliced_bit_for_bit(encoder, mode):
    tracks = [voice(1.2, seed=1), None, voice(0.8, rate=44100, channels=2, seed=2), (torch.zeros(1, 4000), 16000),
              voice(0.6, seed=3)]  # fmt: skip
    layout = arrange_speakers(tracks, encoder, mode=mode, offsets=[0.25, None, 0.5, 0, 0.1])
    expected = reference_features(layout, tracks, encoder)
    whole = layout.features
    assert [f.shape for f in whole] == [(layout.num_frames, 5, 2, 32)] * 5
    for mine, theirs in zip(whole, expected):
        assert torch.equal(mine, theirs)
    for start, length in ranges(layout.num_frames):
        for person, part in enumerate(layout.window_features(start, length)):
            assert part.shape == (length, 5, 2, 32) and part.dtype == torch.float32
            assert torch.equal(part, whole[person][start : start + length]), (mode, person, start, length)
    assert not whole[1].any() and not whole[3].any()  # listeners: no track, a silent track
    for bad in [(-1, 3), (0, 0), (layout.num_frames - 2, 3)]:
        with pytest.raises(ValueError, match="not inside"):
            layout.window_features(*bad)


def test_a_track_longer_than_the_clip_keeps_the_frames_after_it(encoder):
    """pad mode cuts a long track at the clip end; the last frames' windows still see 2 frames beyond it."""
    track = voice(2.0, seed=4)
    layout = arrange_speakers([track], encoder, num_frames=13)
    states = layout.placements[0].states
    assert (states.frames, states.stored) == (52, 15)  # 48 frames padded to 4 x 13; 13 + 2 kept
    whole = reference_chain(load_audio(track), encoder, 13)
    assert torch.equal(layout.window_features(0, 13)[0], whole)
    assert torch.equal(layout.window_features(12, 1)[0], whole[12:])
    assert not torch.equal(whole[12, 4], whole[12, 2])  # frame 14, not clamped to frame 12


@pytest.mark.parametrize("mode", ["pad", "concat"])
def test_long_tracks_give_each_window_the_chunked_whole_clip_features(encoder, mode, monkeypatch):
    monkeypatch.setattr(audio_store, "MEMORY_FRAMES", 16)  # a long track's layer outputs go to a temporary file
    tracks = [voice(4.0, seed=5), voice(3.0, seed=6)]  # 96 and 72 frames, chunks of 40
    layout = arrange_speakers(tracks, encoder, mode=mode, offsets=[0, 0.5], chunk_frames=40)
    assert all(p.states.on_disk for p in layout.placements)
    chunked = reference_features(layout, tracks, encoder, chunk_frames=40)
    for w in plan_windows(layout.num_frames, 17, 5):
        for person, part in enumerate(layout.window_features(w.start, w.length)):
            assert torch.equal(part, chunked[person][w.start : w.start + w.length]), (person, w)
    one_pass = reference_features(layout, tracks, encoder)
    for mine, single in zip(layout.features, one_pass):
        relative = float((mine - single).norm() / single.norm())
        assert 0 < relative < 0.05, relative  # the chunks' documented approximation


def test_chunks_past_the_clip_are_not_run(encoder):
    calls = []
    hook = encoder.model.encoder.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[1]))
    try:
        layout = arrange_speakers([voice(6.0, seed=7)], encoder, num_frames=45, chunk_frames=40)
    finally:
        hook.remove()
    assert layout.placements[0].states.frames == 180 and calls == [180, 180]  # 2 chunks for 47 frames, not 5
    whole = reference_chain(load_audio(voice(6.0, seed=7)), encoder, 45, chunk_frames=40)
    assert torch.equal(layout.features[0], whole)


@pytest.mark.parametrize("in_memory", [True, False])
def test_stored_states_read_back_as_audio_windows(in_memory):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(23, 3, 8, generator=g)
    full = audio_windows(data)
    for stored in (23, 14):
        states = HiddenStates(23, stored, 3, 8, in_memory=in_memory)
        assert states.on_disk is not in_memory
        for layer in range(3):
            for first in range(0, stored, 5):  # written in pieces, layer by layer
                states.write(layer, first, data[first : min(stored, first + 5), layer].double())
        assert torch.equal(states.rows(0, stored), data[:stored])
        for first in range(stored - 2):
            for count in range(1, stored - 2 - first + 1):
                assert torch.equal(states.windows(first, count), full[first : first + count]), (first, count)
        if stored < 23:
            with pytest.raises(ValueError, match="outside"):
                states.windows(stored - 1, 1)  # would need 2 frames that are not stored
        else:
            assert torch.equal(states.windows(22, 1), full[22:])
        states.close()


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_the_conv_stack_streams_in_pieces(norm, monkeypatch):
    monkeypatch.setattr(audio_features, "CONV_FRAMES", 7)  # many pieces, and GroupNorm statistics merged over them
    model = tiny(feat_extract_norm=norm, conv_bias=True)
    wave = normalize_waveform(load_audio(voice(2.3, seed=8)))[None]
    with torch.no_grad():
        whole = model.feature_extractor(wave)
        stream = audio_features._ConvStream(model.feature_extractor, wave)
        assert stream.length == whole.shape[-1] and (norm == "group") == bool(stream.stats)
        torch.testing.assert_close(stream.features(0, stream.length), whole, atol=1e-5, rtol=1e-5)
        frames = math.ceil(2.3 * 24)
        torch.testing.assert_close(stream.frames(9, 40, frames), interpolate_frames(whole, frames)[:, 9:40],
                                   atol=1e-5, rtol=1e-5)  # fmt: skip


def test_chunks_use_memory_efficient_attention_and_one_pass_stays_eager(monkeypatch):
    model = tiny()
    encoder = AudioEncoder(model)
    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape[-2])
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    wave = normalize_waveform(load_audio(voice(3.0, seed=9)))
    encoder.hidden_states(wave, 72)
    assert calls == []  # the reference's eager attention, bit for bit
    encoder.hidden_states(wave, 72, chunk_frames=30, overlap=8)
    assert calls and max(calls) <= 30 + 2 * 8
    assert model.config._attn_implementation == "eager"


def test_the_mix_is_resampled_piece_by_piece_exactly(encoder, monkeypatch):
    monkeypatch.setattr(audio, "RESAMPLE_BLOCK", 1000)
    tracks = [voice(1.0, seed=10), voice(0.7, rate=22050, channels=2, seed=11)]
    layout = arrange_speakers(tracks, encoder, mode="concat", offsets=[0.1, 0.2], mix_rate=44100)
    total = layout.mix.shape[0]
    expected = torch.zeros(total)
    for person, track in zip(layout.speakers, tracks):
        wave = load_audio(track, rate=44100)
        at = (2 * person.start_frame * 44100 + 24) // 48
        piece = wave[: max(total - at, 0)]
        expected[at : at + piece.shape[0]] += piece
    peak = float(expected.abs().max())
    assert torch.equal(layout.mix, expected / peak if peak > 1.0 else expected)
    mono = load_audio(tracks[1], rate=22050).numpy()
    joined = np.concatenate(list(audio.resample_pieces(mono, 22050, 44100, block=777)))
    assert np.array_equal(joined, audio.resample(mono, 22050, 44100))


def test_the_window_engine_reads_per_window_not_the_whole_clip(monkeypatch):
    models = demo.tiny_models(seed=0)
    scene = standalone.prepare(models, demo.IMAGE, list(demo.AUDIO), demo.PROMPT, num_frames=41, mode=demo.MODE,
                               size=(64, 96), steps=1, seed=0, device="cpu").scene  # fmt: skip
    whole = scene.layout.features
    monkeypatch.setattr(SpeakerLayout, "features", property(lambda self: pytest.fail("whole-clip features built")))
    seen = []

    def sample_window(inputs):
        seen.append(inputs)
        return np.zeros((inputs.window.length, *scene.size, 3), np.uint8)

    run = windows.WindowRun(scene, sample_window, window=17, motion_frames=5, color_anchor=False)
    assert sum(len(frames) for frames in run) == 41
    for inputs in seen:
        w = inputs.window
        for person, part in enumerate(inputs.audio):
            assert torch.equal(part, whole[person][w.start : w.start + w.length])

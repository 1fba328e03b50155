"""Speaker timing (pad / concat / offsets), listeners, the clip length and the mixed-down track, on a tiny wav2vec2."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from anytalker_core.people.audio import AudioError, load_audio
from anytalker_core.people.audio_features import encode_audio, encode_waveform, load_audio_encoder
from anytalker_core.people.speakers import arrange_speakers

FPS = 24


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    return load_audio_encoder(Wav2Vec2Model(config).eval())


def voice(seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, int]:
    """A noise burst standing in for speech: ([channels, T], rate)."""
    g = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(channels, round(seconds * rate), generator=g), rate


def frames_of(track) -> int:
    """The video frames a track covers once loaded at 16 kHz: ceil(seconds * 24)."""
    return math.ceil(load_audio(track).shape[0] / 16000 * FPS)


def floor_4n1(frames: int) -> int:
    return (frames - 1) // 4 * 4 + 1


def talking(features: torch.Tensor) -> torch.Tensor:
    """[F, ...] -> indices of the frames with any non-zero feature."""
    return features.flatten(1).abs().amax(1).nonzero().flatten()


def span(start: int, end: int) -> torch.Tensor:
    return torch.arange(start, end)


# ---------------------------------------------------------------- pad


def test_pad_without_offsets_is_the_reference(encoder):
    short, long = voice(1.0, seed=1), voice(2.0, rate=44100, channels=2, seed=2)
    layout = arrange_speakers([short, long], encoder, mode="pad")
    frames = floor_4n1(max(frames_of(short), frames_of(long)))
    assert layout.num_frames == frames == 45 and (frames - 1) % 4 == 0
    for track, feats in zip([short, long], layout.features):
        assert feats.shape == (frames, 5, 2, 32) and feats.dtype == torch.float32
        assert torch.equal(feats, encode_audio(track, encoder, num_frames=frames))
        assert torch.equal(talking(feats), span(0, frames))  # silence features after a short track, not zeros
    assert [(s.role, s.start_frame, s.end_frame) for s in layout.speakers] == [
        ("speaker", 0, frames_of(short)),
        ("speaker", 0, frames),
    ]


def test_pad_offset_starts_the_features_at_that_frame(encoder):
    late, early = voice(1.0, seed=3), voice(2.0, seed=4)
    layout = arrange_speakers([late, early], encoder, mode="pad", offsets=[0.5, None])
    start = 12  # 0.5 s at 24 fps
    frames = floor_4n1(max(start + frames_of(late), frames_of(early)))
    assert layout.num_frames == frames == 45
    feats = layout.features[0]
    assert torch.equal(talking(feats), span(start, frames))
    assert torch.equal(feats[start:], encode_waveform(load_audio(late), encoder, num_frames=frames - start))
    assert torch.equal(layout.features[1], encode_audio(early, encoder, num_frames=frames))
    person = layout.speakers[0]
    assert (person.start_frame, person.end_frame) == (start, start + frames_of(late))


def test_offsets_snap_to_the_nearest_frame(encoder):
    layout = arrange_speakers([voice(0.5)], encoder, offsets=[0.26])  # 6.24 frames
    assert layout.speakers[0].start_frame == 6
    assert torch.equal(talking(layout.features[0]), span(6, layout.num_frames))


# ---------------------------------------------------------------- concat


def test_concat_places_each_turn_after_the_previous_one(encoder):
    first, second = voice(1.0, seed=5), voice(0.5, rate=44100, channels=2, seed=6)
    layout = arrange_speakers([first, None, second], encoder, mode="concat")
    n1, n2 = frames_of(first), frames_of(second)
    seconds = (load_audio(first).shape[0] + load_audio(second).shape[0]) / 16000
    frames = floor_4n1(math.ceil(seconds * FPS))
    assert (n1, n2, frames) == (24, 12, 33)
    assert layout.num_frames == frames
    assert torch.equal(talking(layout.features[0]), span(0, n1))
    assert torch.equal(layout.features[0][:n1], encode_audio(first, encoder))
    end = min(n1 + n2, frames)  # the last turn is cut at the clip end, as in the reference
    assert torch.equal(talking(layout.features[2]), span(n1, end))
    assert torch.equal(layout.features[2][n1:end], encode_audio(second, encoder)[: end - n1])
    assert talking(layout.features[1]).numel() == 0
    assert [(s.role, s.start_frame, s.end_frame) for s in layout.speakers] == [
        ("speaker", 0, n1),
        ("listener", 0, 0),
        ("speaker", n1, end),
    ]


def test_concat_offset_adds_a_pause_before_the_turn(encoder):
    first, second = voice(1.0, seed=7), voice(0.5, seed=8)
    layout = arrange_speakers([first, second], encoder, mode="concat", offsets=[0, 0.25])
    gap = 6
    assert layout.num_frames == floor_4n1(math.ceil(1.5 * FPS) + gap) == 41
    assert torch.equal(talking(layout.features[0]), span(0, 24))
    assert torch.equal(talking(layout.features[1]), span(24 + gap, 41))
    assert torch.equal(layout.features[1][30:41], encode_audio(second, encoder)[:11])


def test_concat_offset_on_the_first_speaker_delays_everyone(encoder):
    layout = arrange_speakers(
        [voice(0.5, seed=9), voice(0.5, seed=10)], encoder, mode="concat", offsets=[0.5, 0.0], num_frames=49
    )
    assert [(s.start_frame, s.end_frame) for s in layout.speakers] == [(12, 24), (24, 36)]
    assert torch.equal(talking(layout.features[0]), span(12, 24))
    assert torch.equal(talking(layout.features[1]), span(24, 36))


# ---------------------------------------------------------------- listeners


def test_missing_and_silent_tracks_listen(encoder):
    quiet = (1e-5 * torch.randn(1, 16000), 16000)
    layout = arrange_speakers([None, voice(1.0, seed=11), quiet], encoder, mode="pad")
    assert [s.role for s in layout.speakers] == ["listener", "speaker", "listener"]
    for i in (0, 2):
        assert layout.features[i].shape == layout.features[1].shape
        assert not layout.features[i].any()
    report = layout.report()
    assert "person 1: listens (no audio track)" in report
    assert "person 3: listens (its 1.00 s track is silent)" in report
    assert "person 2: speaks" in report


def test_a_silent_track_is_a_pause_in_concat(encoder):
    silence = (torch.zeros(1, 8000), 16000)  # 0.5 s = 12 frames
    layout = arrange_speakers([voice(0.5, seed=20), silence, voice(0.5, seed=21)], encoder, mode="concat")
    assert layout.num_frames == floor_4n1(36) == 33
    assert layout.speakers[1].role == "listener" and "a pause at frames 12..23" in layout.speakers[1].note
    assert not layout.features[1].any()
    assert torch.equal(talking(layout.features[2]), span(24, 33))


def test_everyone_listening_is_an_error(encoder):
    with pytest.raises(AudioError, match="every person is a listener"):
        arrange_speakers([None, (torch.zeros(1, 8000), 16000)], encoder)


def test_a_track_starting_after_the_clip_listens(encoder):
    layout = arrange_speakers([voice(1.0, seed=12), voice(1.0, seed=13)], encoder, offsets=[0, 3.0], num_frames=25)
    assert layout.speakers[1].role == "listener" and "after the clip ends" in layout.speakers[1].note
    assert not layout.features[1].any()
    with pytest.raises(AudioError, match="nobody speaks inside the 25-frame clip"):
        arrange_speakers([voice(1.0)], encoder, offsets=[2.0], num_frames=25)


# ---------------------------------------------------------------- clip length


def test_explicit_frame_count_is_used_and_reported(encoder):
    track = voice(1.0, seed=14)
    layout = arrange_speakers([track], encoder, num_frames=13)
    assert layout.num_frames == 13 and layout.features[0].shape[0] == 13
    assert torch.equal(layout.features[0], encode_audio(track, encoder, num_frames=13))
    assert "clip: 13 frames = 0.54 s at 24 fps, pad mode (as requested)" in layout.report()


def test_derived_frame_count_is_reported(encoder):
    layout = arrange_speakers([voice(1.0)], encoder)
    assert layout.report().splitlines()[0] == (
        "clip: 21 frames = 0.88 s at 24 fps, pad mode "
        "(from the audio: the longest track ends at 1.00 s = 24 frames, rounded down to 4n+1)"
    )


def test_frame_count_must_be_4n_plus_1(encoder):
    with pytest.raises(ValueError, match=r"`num_frames` is 80; the model needs 4n\+1 video frames .*: use 77 or 81"):
        arrange_speakers([voice(1.0)], encoder, num_frames=80)


def test_clip_longer_than_the_maximum(encoder):
    with pytest.raises(AudioError) as err:
        arrange_speakers([voice(2.0)], encoder, max_frames=41)
    message = str(err.value)
    assert "45 frames (1.88 s at 24 fps)" in message and "maximum of 41 frames (1.71 s)" in message
    assert "window by window" in message


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="overlap"), "`mode` is 'overlap'; expected one of 'pad', 'concat'"),
        (dict(offsets=[0.0]), "`offsets` must give one start time in seconds per person: 2 expected, got 1"),
        (dict(offsets=[0.0, -1.0]), r"`offsets\[1\]` \(person 2\) is -1.0"),
        (dict(offsets=0.5), "one start time in seconds per person: 2 expected, got float"),
        (dict(fps=0), "`fps` must be at least 1"),
    ],
)
def test_bad_arguments(encoder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        arrange_speakers([voice(0.5), voice(0.5)], encoder, **kwargs)


def test_tracks_must_be_a_list(encoder):
    with pytest.raises(ValueError, match="wrap a single track in a list"):
        arrange_speakers(voice(0.5), encoder)


# ---------------------------------------------------------------- the mix


def test_mix_follows_the_timeline(encoder):
    first, second = voice(1.0, seed=15), voice(0.5, rate=44100, channels=2, seed=16)
    rate = 44100
    layout = arrange_speakers([first, None, second], encoder, mode="concat", offsets=[0, None, 0.25], mix_rate=rate)
    frames = layout.num_frames
    assert layout.mix_rate == rate and layout.mix.dtype == torch.float32
    assert layout.mix.shape == (math.ceil(frames / FPS * rate),)
    sample = rate / FPS  # 1837.5 samples a frame
    loud = layout.mix.abs() > 1e-3
    assert loud[: int(24 * sample) - 50].float().mean() > 0.9  # person 1 talks over frames 0..23
    assert not layout.mix[int(24 * sample) + 50 : int(30 * sample) - 50].any()  # the pause before person 3
    assert loud[int(30 * sample) + 50 :].float().mean() > 0.9  # person 3 from frame 30 to the clip end


def test_mix_is_normalised_only_when_it_would_clip(encoder):
    a, b = (0.3 * voice(0.5, seed=17)[0], 16000), (0.3 * voice(0.5, seed=18)[0], 16000)
    soft = arrange_speakers([a, b], encoder, mix_rate=16000)
    assert soft.num_frames == 9 and soft.mix.shape == (6000,)  # 0.5 s = 12 frames -> 9 frames = 0.375 s
    expected = (load_audio(a) + load_audio(b))[:6000]
    assert expected.abs().max() < 1.0
    assert torch.equal(soft.mix, expected)  # left as they are: no scaling
    loud = arrange_speakers([(3 * voice(0.5)[0], 16000), voice(0.5, seed=19)], encoder, mix_rate=16000)
    assert loud.mix.abs().max() == pytest.approx(1.0)

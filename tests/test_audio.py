"""Per-speaker audio features: the reference's chain bit for bit, every encoder layout, real files, errors."""

from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Wav2Vec2Config, Wav2Vec2Model

import anytalker_core as at
from anytalker_core.people.audio import normalize_waveform
from anytalker_core.people.audio_features import encode_waveform, interpolate_frames
from anytalker_core.people.audio_store import audio_windows
from golden import REFERENCE, SHARED, requires_shared

HELPERS = REFERENCE / "helpers"


def tiny_wav2vec2(**changes) -> Wav2Vec2Model:
    """A random wav2vec2 with base-style layout (so its config can be inferred from shapes), tiny sizes."""
    torch.manual_seed(0)
    sizes = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=1,
        intermediate_size=96,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    config = Wav2Vec2Config(**{**sizes, **changes})
    return Wav2Vec2Model(config).eval()


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 220.0) -> torch.Tensor:
    t = torch.arange(int(round(seconds * rate))) / rate
    wave = 0.5 * torch.sin(2 * math.pi * freq * t) * (1 + 0.3 * torch.sin(2 * math.pi * 3 * t))
    return wave.repeat(channels, 1)


def write_audio(path, wave: torch.Tensor, rate: int, codec: str = "pcm_s16le") -> None:
    """Encode [C, T] float audio to a file with PyAV."""
    layout = "mono" if wave.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        fmt = stream.codec_context.format.name
        frame = av.AudioFrame.from_ndarray(wave.numpy().astype(np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        for chunk in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# ---------------------------------------------------------------- the reference's numbers


@requires_shared
@pytest.mark.parametrize("clip", [-1, 53])
def test_features_match_the_reference_bit_for_bit(clip):
    golden = load_file(str(HELPERS / "helpers.safetensors"))
    wav, encoder = HELPERS / "speech_like_16k.wav", at.load_audio_encoder(HELPERS / "tiny_wav2vec2")
    features = at.encode_audio(wav, encoder, num_frames=None if clip < 0 else clip)
    expected = golden[f"out.audio_features_clip{clip}"]
    assert features.dtype == torch.float32
    assert torch.equal(features, expected if clip < 0 else expected[:clip])
    # the hidden states before the window, on the padded track the reference encodes
    normed = normalize_waveform(at.load_audio(wav))
    frames = expected.shape[0]
    if clip > 0:  # zero samples for the frames added to reach a whole number of clips (666 a frame)
        normed = torch.nn.functional.pad(normed, (0, (frames - math.ceil(normed.shape[0] / 16000 * 24)) * 666))
    hidden = encoder.hidden_states(normed, frames)
    assert torch.equal(hidden, golden[f"out.audio_hidden_clip{clip}"])
    assert torch.equal(audio_windows(hidden), expected)


@requires_shared
def test_conv_feature_interpolation_matches_the_reference():
    golden = load_file(str(HELPERS / "helpers.safetensors"))
    out = interpolate_frames(golden["in.interp_0"].transpose(1, 2), 57)
    assert torch.equal(out, golden["out.interp_0"])


def test_window_clamps_at_the_ends():
    hidden = torch.arange(4.0)[:, None, None]  # frames 0..3
    windows = audio_windows(hidden)[..., 0, 0]
    assert windows.tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 3], [1, 2, 3, 3, 3]]


# ---------------------------------------------------------------- encoder layouts


def test_every_encoder_layout_gives_the_same_features(tmp_path):
    model = tiny_wav2vec2()
    wave = (tone(1.3, 16000), 16000)
    expected = at.encode_audio(wave, model)
    assert expected.shape == (math.ceil(1.3 * 24), 5, 2, 64)

    model.save_pretrained(tmp_path / "hf")  # Hugging Face folder: config.json + model.safetensors
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp_path / "bare.safetensors")  # single file, no config: inferred from shapes
    (tmp_path / "comfy").mkdir()  # ComfyUI's models/audio_encoders layout: a `wav2vec2.` prefix
    save_file({f"wav2vec2.{k}": v for k, v in state.items()}, tmp_path / "comfy" / "w2v.safetensors")
    for source in (tmp_path / "hf", tmp_path / "bare.safetensors", tmp_path / "comfy" / "w2v.safetensors"):
        assert torch.equal(at.encode_audio(wave, source), expected), source


def test_config_json_beside_a_single_file_is_used(tmp_path):
    model = tiny_wav2vec2(num_attention_heads=4)  # heads cannot be inferred from shapes
    save_file({f"wav2vec2.{k}": v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    wave = (tone(0.7, 16000), 16000)
    assert torch.equal(at.encode_audio(wave, tmp_path / "w.safetensors"), at.encode_audio(wave, model))


def test_a_large_wav2vec2_is_refused():
    with pytest.raises(at.AudioError, match="a large model.*needs wav2vec2-base \\(12 layers x 768\\)"):
        at.load_audio_encoder(tiny_wav2vec2(do_stable_layer_norm=True, feat_extract_norm="layer"))


def test_not_a_wav2vec2_file(tmp_path):
    save_file({"some.weight": torch.zeros(2)}, tmp_path / "x.safetensors")
    with pytest.raises(at.AudioError, match="not a wav2vec2 checkpoint"):
        at.load_audio_encoder(tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="wav2vec2 not found"):
        at.load_audio_encoder(tmp_path / "missing")


# ---------------------------------------------------------------- inputs


@pytest.mark.parametrize("seconds", [2.5, 1.01])
def test_stereo_44k_and_mono_16k_give_the_same_frame_count(seconds):
    encoder = at.load_audio_encoder(tiny_wav2vec2())
    stereo = at.encode_audio((tone(seconds, 44100, channels=2)[None], 44100), encoder)  # [1, C, T]
    mono = at.encode_audio((tone(seconds, 16000)[0], 16000), encoder)  # [T]
    assert stereo.shape[0] == mono.shape[0] == math.ceil(seconds * 24)
    assert at.load_audio((tone(seconds, 44100, channels=2), 44100)).shape[0] == round(seconds * 16000)


def test_comfyui_audio_dict_is_accepted():
    wave = tone(0.5, 22050, channels=2)
    track = at.load_audio({"waveform": wave[None], "sample_rate": 22050})
    assert torch.equal(track, at.load_audio((wave, 22050)))


@pytest.mark.parametrize("codec,suffix", [("pcm_s16le", "wav"), ("flac", "flac"), ("aac", "m4a"), ("mp3", "mp3")])
def test_files_decode_to_the_right_length(tmp_path, codec, suffix):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = tmp_path / f"speech.{suffix}"
    write_audio(path, tone(1.5, 44100, channels=2), 44100, codec)
    track = at.load_audio(path)
    assert abs(track.shape[0] - 1.5 * 16000) < 0.05 * 16000  # lossy codecs add priming samples
    assert track.abs().max() > 0.1


@requires_shared
def test_real_example_with_a_broken_header_decodes():
    """1p-0.wav's header claims ~89,000 s; the real data is 3.83 s at 24 kHz."""
    track = at.load_audio(SHARED / "examples" / "1p-0.wav")
    assert abs(track.shape[0] / 16000 - 3.83) < 0.02


def test_features_follow_num_frames_and_pad_with_silence():
    encoder = at.load_audio_encoder(tiny_wav2vec2())
    wave = at.load_audio((tone(1.0, 16000), 16000))  # 24 frames
    longer = encode_waveform(wave, encoder, num_frames=33)
    shorter = encode_waveform(wave, encoder, num_frames=17)
    assert longer.shape[0] == 33 and shorter.shape[0] == 17
    assert not torch.equal(longer[30], longer[20])  # silence after the track has features of its own


# ---------------------------------------------------------------- errors a user understands


def test_audio_errors_name_the_speaker(tmp_path):
    with pytest.raises(at.AudioError, match="speaker 2: the audio is empty"):
        at.load_audio((torch.zeros(1, 0), 16000), speaker="speaker 2")
    with pytest.raises(at.AudioError, match="speaker 1: the audio contains NaN or infinite samples"):
        at.load_audio((torch.tensor([0.0, float("nan"), 0.1]), 16000), speaker="speaker 1")
    with pytest.raises(at.AudioError, match="audio file not found"):
        at.load_audio(tmp_path / "nope.wav", speaker="speaker 1")
    (tmp_path / "junk.wav").write_bytes(b"RIFF0000WAVEjunkjunkjunk")
    with pytest.raises(at.AudioError, match="speaker 3: cannot decode junk.wav"):
        at.load_audio(tmp_path / "junk.wav", speaker="speaker 3")
    (tmp_path / "notes.txt").write_text("hello, not audio")
    with pytest.raises(at.AudioError, match="speaker 1: cannot decode notes.txt"):
        at.load_audio(tmp_path / "notes.txt", speaker="speaker 1")
    with pytest.raises(at.AudioError, match="waveform has shape"):
        at.load_audio((torch.zeros(2, 2, 2, 2), 16000))
    with pytest.raises(at.AudioError, match="sample rate must be a positive"):
        at.load_audio((torch.zeros(10), 0))

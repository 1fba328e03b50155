"""One speaker's track as AnyTalker reads it: any file or waveform -> mono float32 at 16 kHz (``load_audio``),
resampled in pieces for the mix, normalised over the clip (``docs/model.md``, "Audio features").

The features come next: :mod:`.audio_features` (wav2vec2 the reference's way), :mod:`.audio_store` (a track's
per-frame layer outputs at constant memory), :mod:`.wav2vec2_files` (reading the encoder's weights).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from .. import timeline

SAMPLE_RATE = 16000  # wav2vec2's input rate
RESAMPLE_BLOCK = 1 << 18  # input samples per piece when a track is resampled for the mix


class AudioError(ValueError):
    """A user-facing audio problem; the message names the speaker or file and what to do."""


def load_audio(audio: Any, *, rate: int = SAMPLE_RATE, speaker: str = "audio") -> torch.Tensor:
    """A speaker's track as mono float32 [T] at ``rate`` Hz.

    ``audio``: a file path (wav, mp3, flac, m4a, ... decoded with PyAV), a tuple ``(waveform, sample_rate)``
    with waveform [T], [C, T] or [1, C, T], or a ComfyUI ``AUDIO`` dict (``waveform``, ``sample_rate``).
    Channels are averaged; resampling uses libswresample (through PyAV).
    """
    mono, source_rate = load_mono(audio, speaker=speaker)
    return torch.from_numpy(resample(mono, source_rate, rate))


def load_mono(audio: Any, *, speaker: str = "audio") -> tuple[np.ndarray, int]:
    """A speaker's track as mono float32 numpy [T] at its own rate, and that rate (``load_audio`` before resampling;
    the same inputs and checks)."""
    if isinstance(audio, (str, Path)):
        channels, source_rate = _decode_file(Path(audio), speaker)
    elif isinstance(audio, Mapping) and "waveform" in audio:
        channels, source_rate = _channels(audio["waveform"], speaker), int(audio.get("sample_rate", 0))
    elif isinstance(audio, tuple) and len(audio) == 2:
        channels, source_rate = _channels(audio[0], speaker), int(audio[1])
    else:
        raise AudioError(
            f"{speaker}: expected a file path or a (waveform, sample_rate) tuple, got {type(audio).__name__}"
        )
    if source_rate <= 0:
        raise AudioError(f"{speaker}: the sample rate must be a positive number of Hz, got {source_rate}")
    if channels.shape[-1] == 0:
        raise AudioError(f"{speaker}: the audio is empty (0 samples)")
    if not np.isfinite(channels).all():
        raise AudioError(f"{speaker}: the audio contains NaN or infinite samples; re-export or clean the track")
    return channels.mean(axis=0, dtype=np.float32), source_rate


def _channels(waveform: Any, speaker: str) -> np.ndarray:
    """A waveform tensor/array [T], [C, T] or [1, C, T] -> float32 numpy [C, T]."""
    array = waveform.detach().cpu().float().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise AudioError(f"{speaker}: waveform has shape {tuple(array.shape)}; expected [T], [C, T] or [1, C, T]")
    return array.astype(np.float32, copy=False)


def _decode_file(path: Path, speaker: str) -> tuple[np.ndarray, int]:
    """Decode every audio frame of a file to float32 [C, T] at its own rate."""
    import av

    if not path.is_file():
        raise AudioError(f"{speaker}: audio file not found: {path}")
    try:
        with av.open(str(path)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioError(f"{speaker}: {path.name} has no audio stream")
            to_float = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
            chunks = [f.to_ndarray() for frame in container.decode(stream) for f in to_float.resample(frame)]
            chunks += [f.to_ndarray() for f in to_float.resample(None)]
            rate = stream.rate
    except av.error.FFmpegError as err:
        raise AudioError(
            f"{speaker}: cannot decode {path.name} ({err}); use wav, mp3, flac, ogg or m4a/aac audio"
        ) from None
    if not chunks:
        raise AudioError(f"{speaker}: {path.name} decodes to no samples (empty audio)")
    return np.concatenate(chunks, axis=1), rate


def resample(mono: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    """Mono float32 [T] from ``source_rate`` to ``rate`` Hz with libswresample (what ffmpeg uses)."""
    if source_rate == rate:
        return np.ascontiguousarray(mono, dtype=np.float32)
    out = list(resample_pieces(mono, source_rate, rate, block=max(1, mono.shape[0])))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def resample_pieces(mono: np.ndarray, source_rate: int, rate: int, block: int | None = None) -> Iterator[np.ndarray]:
    """:func:`resample`'s output in consecutive pieces (float32 numpy), fed ``block`` input samples at a time
    (default ``RESAMPLE_BLOCK``), so a long track is never held whole at the new rate. libswresample keeps its filter
    state between pieces: the pieces joined are exactly :func:`resample`'s output."""
    block = RESAMPLE_BLOCK if block is None else block
    if source_rate == rate:
        for start in range(0, mono.shape[0], block):
            yield np.ascontiguousarray(mono[start : start + block], dtype=np.float32)
        return
    import av

    resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
    for start in range(0, mono.shape[0], block):
        piece = np.ascontiguousarray(mono[None, start : start + block], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
        frame.sample_rate = source_rate
        for out in resampler.resample(frame):
            yield out.to_ndarray()[0]
    for out in resampler.resample(None):
        yield out.to_ndarray()[0]


def normalize_waveform(wave: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """Zero mean, unit variance over the clip (wav2vec2's feature extractor, eps 1e-7), in float32 numpy math,
    followed by ``pad`` zero samples. Written into one buffer: no whole-track temporaries beyond numpy's variance."""
    x = wave.detach().cpu().numpy().astype(np.float32, copy=False)
    out = np.zeros(x.shape[0] + pad, np.float32)
    body = out[: x.shape[0]]
    np.subtract(x, x.mean(), out=body)
    body /= np.sqrt(x.var() + 1e-7)  # the same float32 operations as (x - mean) / std
    return torch.from_numpy(out)


def frame_count(samples: int, fps: int = timeline.FPS, rate: int = SAMPLE_RATE) -> int:
    """Video frames a track of ``samples`` covers: ceil(seconds * fps)."""
    return math.ceil(samples / rate * fps)

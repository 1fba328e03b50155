"""Per-speaker audio features, exactly as AnyTalker computes them (``docs/model.md``, "Audio features").

One speaker's track -> mono 16 kHz -> zero-mean/unit-variance over the clip -> wav2vec2's conv features
LINEARLY INTERPOLATED to the video frame count (24 fps) before the transformer -> every layer's output
-> a 5-frame window per video frame: [F, 5, layers, channels] ([F, 5, 12, 768] for wav2vec2-base).

Long clips at constant memory: a track's per-frame layer outputs ([F, layers, channels], a fifth of the windows)
go into a :class:`HiddenStates` store, in memory up to ``MEMORY_FRAMES`` frames and otherwise in an unnamed
temporary file, and each window builds its own 5-frame stacks from it (:meth:`HiddenStates.windows`). Tracks
longer than ``chunk_frames`` (the long-video path) are encoded piece by piece: the transformer in chunks with
``CHUNK_OVERLAP`` frames of context and memory-efficient attention, and the conv feature extractor in pieces of
``CONV_FRAMES`` frames with receptive-field margins, its GroupNorm normalising with statistics of the whole track
from a first pass (:class:`_ConvStream`). Tracks of at most ``chunk_frames`` frames take the reference's single
pass, bit for bit.
"""

from __future__ import annotations

import json
import logging
import math
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import timeline

log = logging.getLogger("AnyTalker")

SAMPLE_RATE = 16000  # wav2vec2's input rate
WINDOW = 5  # video frames stacked per frame: f-2 .. f+2, clamped at the ends
BASE_LAYERS, BASE_CHANNELS = 12, 768  # wav2vec2-base, what the AnyTalker checkpoints were trained with
KEY_PREFIXES = ("wav2vec2.", "model.")  # ComfyUI's audio_encoders files, Wav2Vec2ForCTC checkpoints


CHUNK_FRAMES = 2880  # long videos encode tracks of more than 2 minutes in chunks of this many frames
CHUNK_OVERLAP = 240  # frames (10 s) of context on each side of a chunk, when long tracks are encoded in chunks
MEMORY_FRAMES = CHUNK_FRAMES  # a track's hidden states stay in memory up to this many frames, beyond in a temp file
CONV_FRAMES = 500  # conv feature frames (50 a second) per piece when a long track's conv features are streamed
RESAMPLE_BLOCK = 1 << 18  # input samples per piece when a track is resampled for the mix


class AudioError(ValueError):
    """A user-facing audio problem; the message names the speaker or file and what to do."""


# ---------------------------------------------------------------- waveforms


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


# ---------------------------------------------------------------- the encoder


class AudioEncoder:
    """A wav2vec2 run the AnyTalker way: conv features interpolated to the video frames, then the transformer.

    Wraps a ``transformers.Wav2Vec2Model`` or ComfyUI's own wav2vec2 (its ``AudioEncoderLoader`` object or
    that object's ``.model``): both have ``feature_extractor``, ``feature_projection`` and ``encoder``.
    """

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        self.is_transformers = hasattr(model, "config") and hasattr(model.encoder, "layers")
        if self.is_transformers and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")  # the reference's attention: bit-exact features
        self.layers = len(model.encoder.layers)
        self.channels = _hidden_size(model)

    @torch.no_grad()
    def hidden_states(
        self, wave: torch.Tensor, num_frames: int, chunk_frames: int | None = None, overlap: int = CHUNK_OVERLAP
    ) -> torch.Tensor:
        """Normalised 16 kHz mono [T] -> each layer's output at the video frame rate: [num_frames, layers, channels].

        transformers models take the input in their weights' dtype; ComfyUI's casts its weights to the input's.
        ``chunk_frames``: for long tracks, run the transformer on chunks of that many frames, each seeing
        ``overlap`` frames of context on both sides, so its memory stays bounded (attention is quadratic in length);
        tracks of at most ``chunk_frames`` frames take the single pass, exactly as the reference. The whole result
        is returned in memory; :meth:`encode` keeps it in a :class:`HiddenStates` store instead.
        """
        return self.encode(wave, num_frames, chunk_frames, overlap, in_memory=True).rows(0, num_frames)

    @torch.no_grad()
    def encode(
        self, wave: torch.Tensor, num_frames: int, chunk_frames: int | None = None, overlap: int = CHUNK_OVERLAP, *,
        keep: int | None = None, in_memory: bool | None = None,
    ) -> HiddenStates:  # fmt: skip
        """:meth:`hidden_states` into a :class:`HiddenStates` store, of which only the first ``keep`` frames
        (default: all) will be read as windows: the frames after ``keep + 2`` are not stored, and transformer chunks
        past them are not run.

        One pass (``chunk_frames`` None, or a track of at most ``chunk_frames`` frames): the reference's chain,
        bit for bit (eager attention). Chunked (longer tracks): each chunk's input features are computed for its
        frames only (transformers models: :class:`_ConvStream`, the conv stack in pieces; ComfyUI's wav2vec2: the
        conv stack over the whole track, as before), and the transformer runs with memory-efficient attention
        (``sdpa``; equal to eager up to float rounding). Each layer's output goes to the store as it is made.
        """
        keep = num_frames if keep is None else max(0, min(keep, num_frames))
        store = HiddenStates(num_frames, min(num_frames, keep + WINDOW // 2), self.layers, self.channels,
                             in_memory=in_memory)  # fmt: skip
        param = next(self.model.parameters())
        dtype = param.dtype if self.is_transformers else torch.float32
        x = wave.to(device=param.device, dtype=dtype)[None]
        if chunk_frames is None or num_frames <= chunk_frames:  # the reference: one pass
            self._run_layers(self._project(self._conv_frames(x, num_frames)), store, 0, 0, store.stored)
            return store
        if self.is_transformers and _ConvStream.supports(self.model.feature_extractor):
            stream = _ConvStream(self.model.feature_extractor, x)

            def inputs(lo: int, hi: int) -> torch.Tensor:
                return self._project(stream.frames(lo, hi, num_frames))
        else:  # ComfyUI's wav2vec2 (only run inside the host): conv features of the whole track, as before
            hidden = self._project(self._conv_frames(x, num_frames))

            def inputs(lo: int, hi: int) -> torch.Tensor:
                return hidden[:, lo:hi]
        with self._memory_efficient_attention():
            for start in range(0, store.stored, chunk_frames):
                lo, hi = max(0, start - overlap), min(num_frames, start + chunk_frames + overlap)
                count = min(chunk_frames, store.stored - start)
                self._run_layers(inputs(lo, hi), store, start - lo, start, count)
        return store

    def _conv_frames(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The conv features of the whole input [1, T] at the video frame rate: [1, num_frames, conv channels]."""
        if self.is_transformers:
            return interpolate_frames(self.model.feature_extractor(x), num_frames)  # [1, C, T50] -> [1, F, C]
        # ComfyUI's wav2vec2: features come out as [B, T50, C]
        return interpolate_frames(self.model.feature_extractor(x).transpose(1, 2), num_frames)

    def _project(self, conv: torch.Tensor) -> torch.Tensor:
        """Conv features [1, F, conv channels] -> the transformer's input [1, F, channels]."""
        if self.is_transformers:
            return self.model.feature_projection(conv)[0]
        return self.model.feature_projection(conv)  # ComfyUI's returns the projection only

    def _run_layers(self, hidden: torch.Tensor, store: HiddenStates, skip: int, first: int, count: int) -> None:
        """Run the transformer on ``hidden`` [1, n, channels] and write each layer's output for its frames
        ``[skip, skip + count)`` to ``store`` as frames ``[first, first + count)``, as soon as the layer is done."""

        def write(layer: int, output: torch.Tensor) -> None:
            store.write(layer, first, output[0, skip : skip + count])

        if not self.is_transformers:  # ComfyUI's encoder returns (last, every layer's input and the last output)
            for layer, output in enumerate(self.model.encoder(hidden)[1][1:]):
                write(layer, output)
            return
        hooks = [
            layer.register_forward_hook(
                lambda _module, _inputs, output, i=i: write(i, output[0] if isinstance(output, tuple) else output)
            )
            for i, layer in enumerate(self.model.encoder.layers)
        ]
        try:
            self.model.encoder(hidden)
        finally:
            for hook in hooks:
                hook.remove()

    @contextmanager
    def _memory_efficient_attention(self) -> Iterator[None]:
        """transformers models: attention through torch's ``scaled_dot_product_attention`` (blockwise, no
        [heads, n, n] matrix) while long chunks run, then eager again. Models or versions that cannot switch keep
        eager attention (same numbers, more memory)."""
        model = self.model
        can = getattr(model, "_can_set_attn_implementation", None)
        switch = self.is_transformers and hasattr(model, "set_attn_implementation") and callable(can) and can()
        if switch:
            model.set_attn_implementation("sdpa")
        try:
            yield
        finally:
            if switch:
                model.set_attn_implementation("eager")


def interpolate_frames(conv: torch.Tensor, num_frames: int) -> torch.Tensor:
    """wav2vec2 conv features [B, C, T50] -> [B, num_frames, C], linear with align_corners=True."""
    return F.interpolate(conv, size=num_frames, mode="linear", align_corners=True).transpose(1, 2)


def _interpolation(length: int, num_frames: int, lo: int, hi: int) -> tuple[torch.Tensor, ...]:
    """For video frames ``[lo, hi)`` of ``num_frames``: the two conv frames (of ``length``) each one mixes and their
    weights, as ``F.interpolate(mode="linear", align_corners=True)`` computes them (float32 source positions)."""
    scale = torch.tensor(length - 1, dtype=torch.float32) / (num_frames - 1) if num_frames > 1 else torch.tensor(0.0)
    source = torch.arange(lo, hi, dtype=torch.float32) * scale
    first = source.floor().long().clamp(max=length - 1)
    weight = (source - first).clamp(0, 1)
    second = first + (first < length - 1).long()
    return first, second, 1 - weight, weight


class _ConvStream:
    """A transformers wav2vec2 conv feature extractor run over a long track piece by piece.

    Convolutions without padding are local: conv frame k of the last layer sees samples
    ``[k * stride, k * stride + receptive)``, so any range of frames is computed from its own slice of the track,
    with exactly the numbers of the whole-track pass up to float rounding. GroupNorm (wav2vec2-base's first layer:
    one group per channel) normalises over the WHOLE time axis; its per-group mean and variance are gathered in a
    first pass over the track (piece by piece, merged in float64), then every piece is normalised with them.
    Memory: one piece of ``CONV_FRAMES`` frames at a time (its first layer is [512, 320 * CONV_FRAMES / 5]).
    """

    def __init__(self, extractor: nn.Module, wave: torch.Tensor):
        self.layers = list(extractor.conv_layers)
        self.wave = wave  # [1, T]
        self.kernels = [int(layer.conv.kernel_size[0]) for layer in self.layers]
        self.strides = [int(layer.conv.stride[0]) for layer in self.layers]
        self.lengths: list[int] = []
        length = wave.shape[-1]
        for kernel, stride in zip(self.kernels, self.strides):
            length = (length - kernel) // stride + 1
            self.lengths.append(length)
        self.length = self.lengths[-1]
        if self.length < 1:
            raise AudioError(f"the track is too short for wav2vec2 ({wave.shape[-1]} samples)")
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for depth, layer in enumerate(self.layers):
            if isinstance(getattr(layer, "layer_norm", None), nn.GroupNorm):
                self.stats[depth] = self._group_stats(depth)

    @staticmethod
    def supports(extractor: nn.Module) -> bool:
        """Plain Conv1d layers (no padding or dilation), each with an ``activation``; GroupNorm only as
        ``layer_norm`` (transformers' ``Wav2Vec2FeatureEncoder``, both ``feat_extract_norm`` settings)."""
        layers = getattr(extractor, "conv_layers", None)
        if layers is None or len(layers) == 0:
            return False
        for layer in layers:
            conv = getattr(layer, "conv", None)
            if not isinstance(conv, nn.Conv1d) or conv.padding != (0,) or conv.dilation != (1,) or conv.groups != 1:
                return False
            if not hasattr(layer, "activation"):
                return False
        return True

    def _samples(self, depth: int, a: int, b: int) -> tuple[int, int]:
        """The track's samples that layer ``depth``'s frames ``[a, b)`` see."""
        stride, receptive = 1, 1
        for kernel, step in zip(self.kernels[: depth + 1], self.strides[: depth + 1]):
            receptive += (kernel - 1) * stride
            stride *= step
        return a * stride, (b - 1) * stride + receptive

    def _run(self, depth: int, a: int, b: int, before_norm: bool = False) -> torch.Tensor:
        """Layer ``depth``'s output frames ``[a, b)``: [1, channels, b - a] (``before_norm``: its conv output)."""
        lo, hi = self._samples(depth, a, b)
        hidden = self.wave[:, None, lo:hi]
        for i, layer in enumerate(self.layers[: depth + 1]):
            if i == depth and before_norm:
                return layer.conv(hidden)
            if i in self.stats:
                hidden = layer.activation(self._group_norm(layer.layer_norm, layer.conv(hidden), *self.stats[i]))
            else:
                hidden = layer(hidden)
        return hidden

    @staticmethod
    def _group_norm(norm: nn.GroupNorm, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
        """GroupNorm of x [1, C, t] with given per-group statistics: x * scale + shift per channel."""
        per_group = x.shape[1] // norm.num_groups
        scale = rstd.repeat_interleave(per_group)
        if norm.weight is not None:
            scale = scale * norm.weight.to(scale.dtype)
        shift = -mean.repeat_interleave(per_group) * scale
        if norm.bias is not None:
            shift = shift + norm.bias.to(shift.dtype)
        return torch.addcmul(shift[None, :, None].to(x.dtype), x, scale[None, :, None].to(x.dtype))

    def _group_stats(self, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-group mean and 1/std of layer ``depth``'s conv output over the whole track (Chan's merge of pieces)."""
        norm = self.layers[depth].layer_norm
        total = self.lengths[depth]
        step = CONV_FRAMES * math.prod(self.strides[depth + 1 :])
        count, mean, m2 = 0, torch.zeros(norm.num_groups, dtype=torch.float64), None
        for a in range(0, total, step):
            piece = self._run(depth, a, min(total, a + step), before_norm=True)[0].float()
            groups = piece.reshape(norm.num_groups, -1)
            var, avg = torch.var_mean(groups, dim=1, correction=0)
            n = groups.shape[1]
            avg, piece_m2 = avg.cpu().double(), var.cpu().double() * n
            del piece, groups, var
            if m2 is None:
                mean, m2 = avg, piece_m2
            else:
                delta = avg - mean
                mean = mean + delta * (n / (count + n))
                m2 = m2 + piece_m2 + delta**2 * (count * n / (count + n))
            count += n
        rstd = torch.rsqrt(m2 / count + norm.eps)
        device = self.wave.device
        return mean.float().to(device), rstd.float().to(device)

    def features(self, a: int, b: int) -> torch.Tensor:
        """The last layer's frames ``[a, b)``: [1, channels, b - a], computed ``CONV_FRAMES`` at a time."""
        last = len(self.layers) - 1
        pieces = [self._run(last, s, min(b, s + CONV_FRAMES)) for s in range(a, b, CONV_FRAMES)]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)

    def frames(self, lo: int, hi: int, num_frames: int) -> torch.Tensor:
        """Video frames ``[lo, hi)`` of the conv features interpolated to ``num_frames``: [1, hi - lo, channels]."""
        first, second, w_first, w_second = _interpolation(self.length, num_frames, lo, hi)
        a, b = int(first[0]), int(second[-1]) + 1
        conv = self.features(a, b)
        device, dtype = conv.device, conv.dtype
        first, second = (first - a).to(device), (second - a).to(device)
        out = conv[..., first] * w_first.to(device, dtype) + conv[..., second] * w_second.to(device, dtype)
        return out.transpose(1, 2)


class HiddenStates:
    """One encoded track's per-frame layer outputs, written once (layer by layer) and read by frame ranges.

    ``frames``: n, the encoded track's length in video frames (a window at its ends clamps to it). ``stored``: how
    many of its first frames are kept (the windows of the frames a clip uses need 2 more, not the rest).
    Up to ``MEMORY_FRAMES`` stored frames (or ``in_memory=True``) live in memory as float32
    ``[stored, layers, channels]``; more go to an unnamed temporary file (``tempfile.TemporaryFile``: in ``$TMPDIR``,
    removed when closed or garbage-collected; float32, one ``[stored, channels]`` block per layer), so the memory
    does not grow with the track (disk: ``stored * layers * channels * 4`` bytes, 36 KiB a frame for
    wav2vec2-base). Reads go through the file, never a memory map, so read pages do not stay resident.
    """

    def __init__(self, frames: int, stored: int, layers: int, channels: int, *, in_memory: bool | None = None):
        if not 0 < stored <= frames:
            raise ValueError(f"stored must be 1..{frames} frames, got {stored}")
        self.frames, self.stored, self.layers, self.channels = frames, stored, layers, channels
        in_memory = stored <= MEMORY_FRAMES if in_memory is None else in_memory
        self._data = torch.empty(stored, layers, channels) if in_memory else None
        self._file = None if in_memory else tempfile.TemporaryFile(prefix="anytalker-audio-", buffering=0)

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def _offset(self, layer: int, frame: int) -> int:
        return (layer * self.stored + frame) * self.channels * 4

    def write(self, layer: int, first: int, values: torch.Tensor) -> None:
        """Frames ``[first, first + k)`` of one layer: ``values`` [k, channels] (any dtype or device)."""
        if not 0 <= first <= first + values.shape[0] <= self.stored:
            raise ValueError(f"frames {first}..{first + values.shape[0]} do not fit the {self.stored} stored")
        if self._data is not None:
            self._data[first : first + values.shape[0], layer].copy_(values)
            return
        array = values.detach().to("cpu", torch.float32).contiguous().numpy()
        self._file.seek(self._offset(layer, first))
        view = memoryview(array).cast("B")
        while view:
            view = view[self._file.write(view) :]

    def rows(self, start: int, end: int) -> torch.Tensor:
        """Frames ``[start, end)``: float32 ``[end - start, layers, channels]`` (a view when in memory)."""
        if not 0 <= start <= end <= self.stored:
            raise ValueError(f"frames {start}..{end} are outside the {self.stored} stored")
        if self._data is not None:
            return self._data[start:end]
        out = np.empty((self.layers, end - start, self.channels), np.float32)
        for layer in range(self.layers):
            self._file.seek(self._offset(layer, start))
            view = memoryview(out[layer]).cast("B")
            while view:
                got = self._file.readinto(view)
                if not got:
                    raise OSError("the audio feature cache file ended early")
                view = view[got:]
        return torch.from_numpy(out).transpose(0, 1)

    def windows(self, first: int, count: int, window: int = WINDOW) -> torch.Tensor:
        """Frames ``[first, first + count)`` as :func:`audio_windows` gives them over the whole track:
        ``[count, window, layers, channels]``, frame f stacking f-2 .. f+2 clamped to the track's ends."""
        half = window // 2
        lo, hi = max(0, first - half), min(self.frames, first + count + half)
        index = (torch.arange(first, first + count)[:, None] + torch.arange(-half, half + 1)[None]).clamp(
            0, self.frames - 1
        )
        return self.rows(lo, hi)[index - lo]

    def close(self) -> None:
        """Remove the temporary file now (it also goes when the store is garbage-collected)."""
        if self._file is not None:
            self._file.close()


def _hidden_size(model: nn.Module) -> int:
    if hasattr(model, "config"):
        return int(model.config.hidden_size)
    return int(model.encoder.layer_norm.weight.shape[0])


def _check_size(model: nn.Module, source: str) -> None:
    """Refuse wav2vec2-large-style models: AnyTalker's audio MLP expects base features (12 x 768)."""
    layers, channels = len(model.encoder.layers), _hidden_size(model)
    stable = bool(getattr(getattr(model, "config", None), "do_stable_layer_norm", False))
    if stable or channels == 1024 or layers == 24:
        raise AudioError(
            f"{source}: this wav2vec2 has {layers} layers x {channels} channels (a large model); AnyTalker needs "
            f"wav2vec2-base ({BASE_LAYERS} layers x {BASE_CHANNELS}), e.g. facebook/wav2vec2-base-960h"
        )
    if (layers, channels) != (BASE_LAYERS, BASE_CHANNELS):
        log.warning("%s: wav2vec2 with %d layers x %d channels; the AnyTalker DiT expects %d x %d",
                    source, layers, channels, BASE_LAYERS, BASE_CHANNELS)


def load_audio_encoder(source: Any, device: torch.device | str = "cpu") -> AudioEncoder:
    """A wav2vec2 encoder from a Hugging Face folder (config.json + weights), a single .safetensors file (with
    or without a ``wav2vec2.`` key prefix; config from config.json beside it or inferred from the shapes of a
    base-sized model), a ``transformers`` module, or ComfyUI's loaded audio encoder."""
    if isinstance(source, AudioEncoder):
        return source
    if isinstance(source, nn.Module) or hasattr(source, "model"):
        model = source if isinstance(source, nn.Module) else source.model  # ComfyUI's AudioEncoderModel
        _check_size(model, type(model).__name__)
        return AudioEncoder(model)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"wav2vec2 not found: {path} (a Hugging Face folder or a .safetensors file)")
    model = _load_transformers_wav2vec2(path)
    _check_size(model, str(path))
    return AudioEncoder(model.to(device))


def _load_transformers_wav2vec2(path: Path) -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    folder = path if path.is_dir() else path.parent
    weights = _weight_files(path)
    state = _read_weights(weights)
    config_file = folder / "config.json"
    try:
        fields = json.loads(config_file.read_text()) if config_file.exists() else _infer_config(state, str(path))
        model = Wav2Vec2Model(Wav2Vec2Config(**fields))
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (ValueError, TypeError, RuntimeError) as err:  # a config that is not JSON, shapes that do not fit
        if isinstance(err, AudioError):
            raise
        detail = str(err).strip().split("\n")[0][:200]
        raise AudioError(f"{path}: not a wav2vec2 checkpoint that fits its config ({detail})") from None
    missing = [k for k in missing if k != "masked_spec_embed"]  # training-only, absent from many files
    if missing:
        raise AudioError(
            f"{path}: not a wav2vec2 checkpoint that fits its config: {len(missing)} missing keys "
            f"({', '.join(missing[:5])}); unexpected: {', '.join(unexpected[:5]) or 'none'}"
        )
    return model.eval()


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise AudioError(f"{path}: no .safetensors or pytorch_model.bin weights in this folder")
    return files


def _read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    from ..weights import CheckpointError, read_file

    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(read_file(file))  # safetensors, or a weights-only pickle: never runs code
        except CheckpointError as err:
            raise AudioError(f"wav2vec2: {err}") from None
    for prefix in KEY_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    return state


def _infer_config(state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """wav2vec2 config fields from tensor shapes (no config.json): base-style models only."""
    if "encoder.layer_norm.weight" not in state or "feature_projection.projection.weight" not in state:
        raise AudioError(f"{source}: not a wav2vec2 checkpoint (no encoder.layer_norm / feature_projection keys)")
    hidden = state["encoder.layer_norm.weight"].shape[0]
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.", k)))
    convs = sorted(
        (int(m.group(1)), v.shape) for k, v in state.items()
        if (m := re.match(r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight$", k))
    )
    pos = next(v.shape for k, v in state.items() if k.startswith("encoder.pos_conv_embed.conv.")
               and v.dim() == 3 and v.shape[0] == hidden)
    layer_norm_convs = sum(k.startswith("feature_extractor.conv_layers.") and k.endswith("layer_norm.weight")
                           for k in state)
    if layer_norm_convs > 1 or "encoder.layers.0.final_layer_norm.weight" not in state:
        raise AudioError(f"{source}: not a wav2vec2-base-style checkpoint; put its config.json beside it")
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=state["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0],
        conv_dim=tuple(shape[0] for _, shape in convs),
        conv_kernel=tuple(shape[2] for _, shape in convs),
        conv_stride=(5, 2, 2, 2, 2, 2, 2)[: len(convs)],
        conv_bias="feature_extractor.conv_layers.0.conv.bias" in state,
        feat_extract_norm="group",
        num_conv_pos_embeddings=pos[2],
        num_conv_pos_embedding_groups=hidden // pos[1],
        do_stable_layer_norm=False,
    )


# ---------------------------------------------------------------- features


def audio_windows(hidden: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """[n, layers, channels] -> [n, window, layers, channels]: frame f stacks f-2 .. f+2, clamped at the ends."""
    n = hidden.shape[0]
    half = window // 2
    index = (torch.arange(n)[:, None] + torch.arange(-half, half + 1)[None]).clamp(0, n - 1)
    return hidden[index]


def encode_waveform(
    wave: torch.Tensor, encoder: AudioEncoder, num_frames: int | None = None, fps: int = timeline.FPS,
    chunk_frames: int | None = None,
) -> torch.Tensor:
    """The reference's feature chain on a mono 16 kHz track [T] -> float32 [n, 5, layers, channels].

    With ``num_frames`` F, the normalised track is zero-padded to a whole number of F-frame clips (666 samples a
    frame at 24 fps) before encoding, and the first F frames are returned: a shorter track ends in the features
    of silence, a longer one is cut.
    """
    states = encode_track(wave, encoder, num_frames, fps, chunk_frames, keep=num_frames)
    return states.windows(0, states.frames if num_frames is None else num_frames)


def encode_track(
    wave: torch.Tensor, encoder: AudioEncoder, num_frames: int | None = None, fps: int = timeline.FPS,
    chunk_frames: int | None = None, *, keep: int | None = None,
) -> HiddenStates:  # fmt: skip
    """:func:`encode_waveform` up to the per-frame layer outputs, in a :class:`HiddenStates` store (its
    ``windows(first, count)`` are the feature windows): one track's features at constant memory. ``keep``: the
    frames that will be read (default: all), so the rest is neither stored nor, for chunked tracks, computed."""
    samples = wave.shape[0]
    n = frame_count(samples, fps)
    extra = num_frames - n % num_frames if num_frames is not None and n % num_frames else 0
    normed = normalize_waveform(wave, pad=extra * (SAMPLE_RATE // fps))
    return encoder.encode(normed, n + extra, chunk_frames, keep=keep)


def encode_audio(
    audio: Any, encoder: Any, num_frames: int | None = None, fps: int = timeline.FPS, *, speaker: str = "audio"
) -> torch.Tensor:
    """One speaker's features: float32 [n, 5, layers, channels] (n = num_frames when given, else from the audio).

    ``audio``: a file path or a ``(waveform [C, T] or [1, C, T], sample_rate)`` tuple; ``encoder``: a path (Hugging
    Face folder or .safetensors file), a loaded ``AudioEncoder`` or a wav2vec2 module.
    """
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"`num_frames` must be a positive frame count, got {num_frames}")
    return encode_waveform(load_audio(audio, speaker=speaker), load_audio_encoder(encoder), num_frames, fps)

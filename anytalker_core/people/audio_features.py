"""Per-speaker audio features, exactly as AnyTalker computes them (``docs/model.md``, "Audio features").

One speaker's track -> mono 16 kHz -> zero-mean/unit-variance over the clip -> wav2vec2's conv features
LINEARLY INTERPOLATED to the video frame count (24 fps) before the transformer -> every layer's output
-> a 5-frame window per video frame: [F, 5, layers, channels] ([F, 5, 12, 768] for wav2vec2-base).

Long clips at constant memory: a track's per-frame layer outputs ([F, layers, channels], a fifth of the windows)
go into a :class:`~.audio_store.HiddenStates` store, and each window builds its own 5-frame stacks from it. Tracks
longer than ``chunk_frames`` (the long-video path) are encoded piece by piece: the transformer in chunks with
``CHUNK_OVERLAP`` frames of context and memory-efficient attention, and the conv feature extractor in pieces of
``CONV_FRAMES`` frames with receptive-field margins, its GroupNorm normalising with statistics of the whole track
from a first pass (:class:`_ConvStream`). Tracks of at most ``chunk_frames`` frames take the reference's single
pass, bit for bit.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import timeline
from .audio import SAMPLE_RATE, AudioError, frame_count, load_audio, normalize_waveform
from .audio_store import WINDOW, HiddenStates
from .wav2vec2_files import check_size, hidden_size, load_wav2vec2

CHUNK_FRAMES = 2880  # long videos encode tracks of more than 2 minutes in chunks of this many frames
CHUNK_OVERLAP = 240  # frames (10 s) of context on each side of a chunk, when long tracks are encoded in chunks
CONV_FRAMES = 500  # conv feature frames (50 a second) per piece when a long track's conv features are streamed


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
        self.channels = hidden_size(model)

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


def load_audio_encoder(source: Any, device: torch.device | str = "cpu") -> AudioEncoder:
    """A wav2vec2 encoder from a Hugging Face folder (config.json + weights), a single .safetensors file (with
    or without a ``wav2vec2.`` key prefix; config from config.json beside it or inferred from the shapes of a
    base-sized model), a ``transformers`` module, or ComfyUI's loaded audio encoder."""
    if isinstance(source, AudioEncoder):
        return source
    if isinstance(source, nn.Module) or hasattr(source, "model"):
        model = source if isinstance(source, nn.Module) else source.model  # ComfyUI's AudioEncoderModel
        check_size(model, type(model).__name__)
        return AudioEncoder(model)
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"wav2vec2 not found: {path} (a Hugging Face folder or a .safetensors file)")
    model = load_wav2vec2(path)
    check_size(model, str(path))
    return AudioEncoder(model.to(device))


def encode_waveform(
    wave: torch.Tensor,
    encoder: AudioEncoder,
    num_frames: int | None = None,
    fps: int = timeline.FPS,
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

"""Per-speaker audio features, exactly as AnyTalker computes them (``docs/model.md``, "Audio features").

One speaker's track -> mono 16 kHz -> zero-mean/unit-variance over the clip -> wav2vec2's conv features
LINEARLY INTERPOLATED to the video frame count (24 fps) before the transformer -> every layer's output
-> a 5-frame window per video frame: [F, 5, layers, channels] ([F, 5, 12, 768] for wav2vec2-base).
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Mapping

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


class AudioError(ValueError):
    """A user-facing audio problem; the message names the speaker or file and what to do."""


# ---------------------------------------------------------------- waveforms


def load_audio(audio: Any, *, rate: int = SAMPLE_RATE, speaker: str = "audio") -> torch.Tensor:
    """A speaker's track as mono float32 [T] at ``rate`` Hz.

    ``audio``: a file path (wav, mp3, flac, m4a, ... decoded with PyAV), a tuple ``(waveform, sample_rate)``
    with waveform [T], [C, T] or [1, C, T], or a ComfyUI ``AUDIO`` dict (``waveform``, ``sample_rate``).
    Channels are averaged; resampling uses libswresample (through PyAV).
    """
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
    return torch.from_numpy(resample(channels.mean(axis=0, dtype=np.float32), source_rate, rate))


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
    import av

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono[None], dtype=np.float32), format="fltp",
                                       layout="mono")
    frame.sample_rate = source_rate
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
    out = [f.to_ndarray() for f in resampler.resample(frame)] + [f.to_ndarray() for f in resampler.resample(None)]
    return np.concatenate(out, axis=1)[0] if out else np.zeros(0, np.float32)


def normalize_waveform(wave: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the clip (wav2vec2's feature extractor, eps 1e-7), in float32 numpy math."""
    x = wave.detach().cpu().numpy().astype(np.float32, copy=False)
    return torch.from_numpy((x - x.mean()) / np.sqrt(x.var() + 1e-7))


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
        tracks of at most ``chunk_frames`` frames take the single pass, exactly as the reference.
        """
        param = next(self.model.parameters())
        dtype = param.dtype if self.is_transformers else torch.float32
        x = wave.to(device=param.device, dtype=dtype)[None]
        if self.is_transformers:
            conv = interpolate_frames(self.model.feature_extractor(x), num_frames)  # [1, C, T50] -> [1, F, C]
            hidden, _ = self.model.feature_projection(conv)
        else:  # ComfyUI's wav2vec2: features come out as [B, T50, C], encoder returns (last, all layers)
            conv = interpolate_frames(self.model.feature_extractor(x).transpose(1, 2), num_frames)
            hidden = self.model.feature_projection(conv)
        del conv
        if chunk_frames is None or num_frames <= chunk_frames:
            return self._layers(hidden)
        parts = []
        for start in range(0, num_frames, chunk_frames):
            lo, hi = max(0, start - overlap), min(num_frames, start + chunk_frames + overlap)
            keep = min(chunk_frames, num_frames - start)
            parts.append(self._layers(hidden[:, lo:hi])[start - lo : start - lo + keep])
        return torch.cat(parts)

    def _layers(self, hidden: torch.Tensor) -> torch.Tensor:
        """Projected features [1, F, C] -> the transformer layers' outputs [F, layers, channels] (float32, CPU)."""
        if self.is_transformers:
            outputs = _layer_outputs(self.model.encoder, hidden)
        else:
            outputs = list(self.model.encoder(hidden)[1][1:])
        return torch.stack(outputs, dim=2)[0].float().cpu()


def interpolate_frames(conv: torch.Tensor, num_frames: int) -> torch.Tensor:
    """wav2vec2 conv features [B, C, T50] -> [B, num_frames, C], linear with align_corners=True."""
    return F.interpolate(conv, size=num_frames, mode="linear", align_corners=True).transpose(1, 2)


def _layer_outputs(encoder: nn.Module, hidden: torch.Tensor) -> list[torch.Tensor]:
    """Run a transformers wav2vec2 encoder and collect each transformer layer's output (= hidden_states[1:])."""
    outputs: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    hooks = [layer.register_forward_hook(keep) for layer in encoder.layers]
    try:
        encoder(hidden)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


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
    if config_file.exists():
        config = Wav2Vec2Config(**json.loads(config_file.read_text()))
    else:
        config = Wav2Vec2Config(**_infer_config(state, str(path)))
    model = Wav2Vec2Model(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            if file.suffix == ".safetensors":
                part = load_file(str(file))
            else:
                part = torch.load(file, map_location="cpu", weights_only=True)
        except (SafetensorError, OSError, RuntimeError, ValueError) as err:
            raise AudioError(f"{file}: not a readable wav2vec2 weights file ({err})") from None
        state.update(part)
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
    normed = normalize_waveform(wave)
    n = frame_count(normed.shape[0], fps)
    if num_frames is not None and n % num_frames:
        extra = num_frames - n % num_frames
        normed = F.pad(normed, (0, extra * (SAMPLE_RATE // fps)))
        n += extra
    features = audio_windows(encoder.hidden_states(normed, n, chunk_frames))
    return features if num_frames is None else features[:num_frames]


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

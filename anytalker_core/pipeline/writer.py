"""Writing results to disk: an H.264 + AAC mp4 for the video, a PNG for still images (the face-binding preview).

Host-free: PyAV (its wheels bundle libx264 and the FFmpeg AAC encoder) and numpy. torch tensors are accepted by
duck typing, without importing torch here. PNGs are written with zlib, so Pillow is not needed at run time.

Every file is written atomically: to a temporary file in the destination folder, then renamed into place. If
anything fails (bad input found mid-stream, an encoder error, an exception from the caller's frame generator,
Ctrl-C) the temporary file is removed and nothing is left at the destination. An existing file is never replaced
unless ``overwrite=True``.
"""

from __future__ import annotations

import math
import os
import struct
import uuid
import zlib
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .. import timeline

# Sample rates FFmpeg's native AAC encoder accepts.
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_AUDIO_LAYOUTS = {1: "mono", 2: "stereo"}


# ----------------------------------------------------------------------------------------------------------------
# Atomic writing


def _check_destination(path: str | os.PathLike, overwrite: bool) -> Path:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} already exists; pass overwrite=True to replace it, or choose another name"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _temp_path(path: Path) -> Path:
    """Create (exclusively) an empty, hidden temporary file next to ``path``; the default umask applies to it."""
    while True:
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
        try:
            with open(tmp, "xb"):
                return tmp
        except FileExistsError:  # pragma: no cover - a uuid collision
            continue


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished temp file into place. Without ``overwrite`` this never replaces a file, even one that
    appeared while we were writing (a hard link fails atomically if the name exists)."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(
            f"{str(path)!r} already exists; pass overwrite=True to replace it, or choose another name"
        ) from None
    except OSError:  # the filesystem has no hard links (FAT, some network shares): check, then rename
        if path.exists():
            raise FileExistsError(
                f"{str(path)!r} already exists; pass overwrite=True to replace it, or choose another name"
            ) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def _remove_quietly(tmp: Path) -> None:
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass


# ----------------------------------------------------------------------------------------------------------------
# Input conversion


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """numpy view of an array-like; torch tensors (any device, any float dtype) by duck typing."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype.itemsize < 4:  # bfloat16 has no numpy dtype; float16 for speed
            x = x.float()
        return x.numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as e:
        raise ValueError(f"{name}: expected an array or tensor, got {type(x).__name__}") from e


def _image_to_uint8(img: np.ndarray, name: str) -> np.ndarray:
    """One image [H, W, 3], float in 0..1 (values outside are clipped) or uint8, to contiguous uint8."""
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"{name}: expected float values in 0..1 or uint8, got dtype {img.dtype}")
    if np.isnan(img).any():
        raise ValueError(f"{name}: contains NaN")
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _check_chunk(chunk: Any, where: str) -> Any:
    shape = tuple(getattr(chunk, "shape", ()))
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{where}: expected shape [frames, H, W, 3], got {list(shape) or type(chunk).__name__}")
    dtype = str(getattr(chunk, "dtype", ""))
    if not ("float" in dtype or "uint8" in dtype):
        raise ValueError(f"{where}: expected float values in 0..1 or uint8, got dtype {dtype}")
    return chunk


def _chunks(frames: Any) -> Iterator[tuple[Any, str]]:
    """Yield (chunk [f, H, W, 3], description) from one array/tensor or an iterable of them."""
    if hasattr(frames, "shape"):
        yield _check_chunk(frames, "frames"), "frames"
        return
    if isinstance(frames, (str, bytes)) or not isinstance(frames, Iterable):
        raise ValueError(
            f"frames: expected an array/tensor [frames, H, W, 3] or an iterable of them, got {type(frames).__name__}"
        )
    for i, chunk in enumerate(frames):
        where = f"frames chunk {i}"
        if not hasattr(chunk, "shape"):
            raise ValueError(f"{where}: expected an array/tensor [frames, H, W, 3], got {type(chunk).__name__}")
        yield _check_chunk(chunk, where), where


def _pad_even(img: np.ndarray) -> np.ndarray:
    """Pad an odd height/width by one pixel, replicating the bottom row / right column (yuv420p needs even)."""
    h, w = img.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return img
    return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _prepare_audio(audio: Any, audio_rate: int) -> np.ndarray:
    """Audio to float32 [C, T] in -1..1 (clipped), C in {1, 2}."""
    if isinstance(audio_rate, bool) or not isinstance(audio_rate, (int, np.integer)) or audio_rate <= 0:
        raise ValueError(f"audio_rate: expected a positive integer sample rate, got {audio_rate!r}")
    if int(audio_rate) not in AAC_RATES:
        raise ValueError(
            f"audio_rate: AAC supports {', '.join(map(str, AAC_RATES))} Hz, got {audio_rate}; resample first"
        )
    a = _to_numpy(audio, "audio")
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"audio: expected shape [T] (mono) or [C, T], got {list(a.shape)}")
    if a.shape[0] not in _AUDIO_LAYOUTS:
        raise ValueError(f"audio: expected 1 or 2 channels as [C, T], got shape {list(a.shape)} ({a.shape[0]} rows)")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"audio: expected float samples in -1..1, got dtype {a.dtype}")
    if np.isnan(a).any():
        raise ValueError("audio: contains NaN")
    return np.clip(a.astype(np.float32, copy=False), -1.0, 1.0)


def _as_rate(fps: Any) -> Fraction:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps: expected a positive number, got {fps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"fps: expected a positive number, got {fps!r}")
    if isinstance(fps, (int, np.integer, Fraction)):
        return Fraction(fps)
    ntsc = round(value * 1.001)  # 23.976 -> 24000/1001, 29.97 -> 30000/1001, 59.94 -> 60000/1001
    if value != int(value) and abs(value - ntsc * 1000 / 1001) < 1e-3:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(value).limit_denominator(1001)


# ----------------------------------------------------------------------------------------------------------------
# Video


def write_video(
    path: str | os.PathLike,
    frames: Any,
    fps: float = timeline.FPS,
    audio: Any = None,
    audio_rate: int = 44100,
    *,
    overwrite: bool = False,
    crf: int = 18,
) -> Path:
    """Write an mp4: H.264 (libx264, yuv420p, ``crf``) video and, if ``audio`` is given, an AAC audio stream.

    frames: float [F, H, W, 3] in 0..1 (ComfyUI IMAGE layout; values outside are clipped) or uint8, as a numpy
        array or a torch tensor; or an iterable (e.g. a generator) of such chunks [f, H, W, 3], all the same size,
        so long videos stream to the file one chunk at a time (only one frame at a time is converted to uint8).
        yuv420p needs an even height and width: an odd one is padded by one pixel, replicating the last row /
        column, so the file is then one pixel taller / wider than the input.
    fps: frames per second (> 0); non-integer rates are kept as a fraction (23.976 -> 24000/1001).
    audio: mono float [T] (e.g. ``SpeakerLayout.mix``) or [C, T] with C = 1 or 2, in -1..1 (clipped), at
        ``audio_rate`` (an AAC rate such as 16000, 44100, 48000). It is trimmed or padded with silence so the audio
        lasts exactly as long as the video, F / fps (the AAC stream carries it to the sample; decoders may show up
        to one 1024-sample AAC frame more).
    overwrite: if False (default) and ``path`` exists, raise FileExistsError before any work is done.

    The file is written to a temporary file in the same folder and renamed into place at the end; on any error
    the temporary file is removed and nothing is left at ``path``. Parent folders are created. Returns ``path``.
    """
    rate = _as_rate(fps)
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise ValueError(f"crf: expected an integer 0..51 (lower is better quality), got {crf!r}")
    sound = None if audio is None else _prepare_audio(audio, audio_rate)
    path = _check_destination(path, overwrite)

    chunks = _chunks(frames)
    first = None  # the first non-empty chunk, read before any file is created
    try:
        for chunk, where in chunks:
            if int(chunk.shape[0]) > 0:
                first = (chunk, where)
                break
        if first is None:
            raise ValueError("frames: no frames to write (expected at least one frame [1, H, W, 3])")
        height, width = int(first[0].shape[1]), int(first[0].shape[2])
        if height < 1 or width < 1:
            raise ValueError(f"{first[1]}: expected a non-empty image, got shape {list(first[0].shape)}")
    except BaseException:
        _close_iter(frames)
        raise

    def all_chunks() -> Iterator[tuple[Any, str]]:
        yield first
        yield from chunks

    tmp = _temp_path(path)
    try:
        _encode(tmp, all_chunks(), rate, height, width, sound, int(audio_rate), int(crf))
        _commit(tmp, path, overwrite)
    except BaseException:
        _close_iter(frames)
        _remove_quietly(tmp)
        raise
    return path


def _close_iter(frames: Any) -> None:
    close = getattr(frames, "close", None)
    if callable(close) and not hasattr(frames, "shape"):
        try:
            close()
        except Exception:
            pass


def _encode(
    tmp: Path,
    chunks: Iterator[tuple[Any, str]],
    rate: Fraction,
    height: int,
    width: int,
    sound: np.ndarray | None,
    audio_rate: int,
    crf: int,
) -> None:
    import av  # imported here: the rest of the package does not need PyAV

    out_h, out_w = height + height % 2, width + width % 2
    container = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
    try:
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = out_w, out_h, "yuv420p"
        video.options = {"crf": str(crf), "preset": "medium"}
        video.codec_context.time_base = 1 / rate

        audio_stream = None
        if sound is not None:
            audio_stream = container.add_stream("aac", rate=audio_rate, layout=_AUDIO_LAYOUTS[sound.shape[0]])
        audio_done = 0  # samples sent to the AAC encoder so far

        def feed_audio(until: int) -> None:
            """Encode audio up to sample ``until`` (zero-padded past the end of ``sound``)."""
            nonlocal audio_done
            while audio_done < until:
                n = min(until - audio_done, 1 << 16)
                piece = sound[:, audio_done : audio_done + n]
                if piece.shape[1] < n:
                    piece = np.pad(piece, ((0, 0), (0, n - piece.shape[1])))
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(piece), format="fltp", layout=_AUDIO_LAYOUTS[sound.shape[0]]
                )
                frame.sample_rate = audio_rate
                frame.pts = audio_done
                for packet in audio_stream.encode(frame):
                    container.mux(packet)
                audio_done += n

        count = 0
        for chunk, where in chunks:
            f, h, w = (int(s) for s in chunk.shape[:3])
            if f == 0:
                continue
            if (h, w) != (height, width):
                raise ValueError(
                    f"{where}: every chunk must have the first chunk's size {height}x{width} (HxW), got {h}x{w}"
                )
            for i in range(f):
                img = _pad_even(_image_to_uint8(_to_numpy(chunk[i], where), f"{where}, frame {i}"))
                # Converted here rather than left to encode(): with PyAV's implicit conversion libx264's output
                # varied between runs on the same input; with this it is (almost always) byte-identical.
                frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
                frame.pts = count
                for packet in video.encode(frame):
                    container.mux(packet)
                count += 1
            if audio_stream is not None:  # keep the audio in step with the video written so far
                feed_audio(int(count * audio_rate / rate))
        for packet in video.encode():
            container.mux(packet)
        if audio_stream is not None:
            feed_audio(round(count * audio_rate / rate))  # exactly the video's duration, to the sample
            for packet in audio_stream.encode():
                container.mux(packet)
    finally:
        container.close()


# ----------------------------------------------------------------------------------------------------------------
# PNG


def write_png(path: str | os.PathLike, image: Any, *, overwrite: bool = False) -> Path:
    """Write an RGB PNG from [H, W, 3] (or [1, H, W, 3], a one-image ComfyUI IMAGE), float in 0..1 or uint8.

    Atomic like ``write_video``: a temporary file in the same folder, renamed into place; an existing file is
    not replaced unless ``overwrite=True`` (FileExistsError otherwise). Returns ``path``.
    """
    arr = _to_numpy(image, "image")
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image: expected shape [H, W, 3] (or [1, H, W, 3]), got {list(arr.shape)}")
    data = _png_bytes(_image_to_uint8(arr, "image"))
    path = _check_destination(path, overwrite)
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, path, overwrite)
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


def _png_bytes(rgb: np.ndarray) -> bytes:
    """Encode uint8 [H, W, 3] as an 8-bit RGB PNG (filter type 0 on every row)."""
    h, w, _ = rgb.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),
            chunk(b"IDAT", zlib.compress(raw, 6)),
            chunk(b"IEND", b""),
        ]
    )

"""Who talks to which voice: each face's mouth opening against each voice's loudness, frame by frame.

- loudness: a voice's RMS over each video frame's time span (16 kHz mono);
- mouth opening: the mesh's inner-lip gap over the face height (:func:`.tracks.mouth_openings`);
- sync ``[faces x voices]``: the Pearson correlation of the two over the frames that show the face. On real
  two-person footage (the reference's ``benchmark/interact_11.mp4`` and its two tracks) the right pairs score
  0.68 and 0.46, the wrong ones -0.45 and -0.32;
- binding: for each voice, the face it drives best, when that correlation reaches :data:`MIN_SYNC` (else None:
  no face follows the voice);
- speaking intervals, when not given: where a voice is louder than :data:`SPEECH_LEVEL` x its own 95th
  percentile frame loudness, gaps shorter than :data:`SPEECH_GAP` s bridged, bursts shorter than
  :data:`SPEECH_MIN` s dropped.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..people.audio import SAMPLE_RATE, AudioError, load_audio
from .video import JudgeError

MIN_SYNC = 0.1  # a voice binds to a face only from this correlation on
SPEECH_LEVEL = 0.05  # speaking: louder than this fraction of the voice's 95th-percentile frame loudness
SPEECH_FLOOR = 1e-3  # ... and than this RMS (digital silence and hiss never speak)
SPEECH_GAP = 0.5  # seconds: shorter pauses inside speech do not end it
SPEECH_MIN = 0.2  # seconds: shorter bursts are not speech
SHORT_AUDIO = 0.1  # seconds a voice may end before the video (codec padding) before it is refused


def load_voices(audio: Sequence[Any], frames: int, fps: float) -> list[np.ndarray]:
    """Each voice (path, ``(waveform, rate)``, a ComfyUI AUDIO dict, or None: a silent listener) as 16 kHz mono
    float32 covering the video's ``frames`` (longer tracks are cut). A track ending more than
    :data:`SHORT_AUDIO` s before the video is refused: its person's last words would count as silence."""
    needed = math.ceil(frames / fps * SAMPLE_RATE)
    voices = []
    for i, track in enumerate(audio):
        if track is None:
            voices.append(np.zeros(needed, np.float32))
            continue
        try:
            wave = load_audio(track, speaker=f"voice {i + 1}").numpy()
        except AudioError as err:
            raise JudgeError(str(err)) from None
        short = (needed - wave.shape[0]) / SAMPLE_RATE
        if short > SHORT_AUDIO:
            raise JudgeError(
                f"voice {i + 1} lasts {wave.shape[0] / SAMPLE_RATE:.2f} s but the video {frames / fps:.2f} s "
                f"({frames} frames at {fps:g} fps): give the track the video was made from (padded to the clip in "
                "'pad' mode), or check the fps"
            )
        voices.append(np.pad(wave, (0, max(0, needed - wave.shape[0])))[:needed].astype(np.float32))
    return voices


def loudness(voice: np.ndarray, frames: int, fps: float) -> np.ndarray:
    """float32 [T]: the voice's RMS over each frame's span ``[t / fps, (t + 1) / fps)``."""
    edges = np.minimum(np.round(np.arange(frames + 1) / fps * SAMPLE_RATE).astype(np.int64), voice.shape[0])
    energy = np.concatenate([[0.0], np.cumsum(voice.astype(np.float64) ** 2)])
    spans = np.maximum(edges[1:] - edges[:-1], 1)
    return np.sqrt((energy[edges[1:]] - energy[edges[:-1]]) / spans).astype(np.float32)


def speaking_from_loudness(level: np.ndarray, fps: float) -> list[list[float]]:
    """Speaking intervals ``[[start_s, end_s], ...]`` of one voice from its frame loudness [T] (module docs)."""
    loud = level > max(SPEECH_FLOOR, SPEECH_LEVEL * float(np.percentile(level, 95)))
    runs: list[list[int]] = []
    for t in np.nonzero(loud)[0]:
        if runs and (t - runs[-1][1]) / fps < SPEECH_GAP:
            runs[-1][1] = t + 1
        else:
            runs.append([t, t + 1])
    return [[round(s / fps, 3), round(e / fps, 3)] for s, e in runs if (e - s) / fps >= SPEECH_MIN]


def sync_matrix(mouth: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """float64 [faces, voices]: correlation of each face's mouth opening [T, P] with each voice's loudness
    [T, V] over the frames showing the face; NaN when either side does not vary (a silent voice)."""
    out = np.full((mouth.shape[1], levels.shape[1]), np.nan)
    for f in range(mouth.shape[1]):
        shown = ~np.isnan(mouth[:, f])
        for v in range(levels.shape[1]):
            a, b = mouth[shown, f], levels[shown, v]
            if len(a) > 2 and a.std() > 0 and b.std() > 0:
                out[f, v] = float(np.corrcoef(a, b)[0, 1])
    return out


def bind(sync: np.ndarray) -> list[int | None]:
    """For each voice, the face (index) whose mouth follows it best, or None below :data:`MIN_SYNC`."""
    binding: list[int | None] = []
    for v in range(sync.shape[1]):
        column = sync[:, v]
        if np.isnan(column).all() or np.nanmax(column) < MIN_SYNC:
            binding.append(None)
        else:
            binding.append(int(np.nanargmax(column)))
    return binding


def place_voices(tracks: Sequence[Any], offsets: Sequence[float], mode: str, frames: int, fps: float) -> list:
    """Voices laid on the video's ``frames`` as the clip's node lays them (``people.speakers``): ``pad``: each from
    its offset; ``concat``: each after the previous one's turn (``ceil(seconds * fps)`` frames) plus its offset.
    Each track (or None: a listener) -> ``(waveform float32 [T] at 16 kHz, 16000)``, silent before its start and
    after its end, as long as the video."""
    needed = math.ceil(frames / fps * SAMPLE_RATE)
    placed, cursor = [], 0
    for i, (track, offset) in enumerate(zip(tracks, offsets)):
        if track is None:
            placed.append(None)
            continue
        try:
            wave = load_audio(track, speaker=f"voice {i + 1}").numpy()
        except AudioError as err:
            raise JudgeError(str(err)) from None
        start = (cursor if mode == "concat" else 0) + round(offset * fps)
        cursor = start + math.ceil(wave.shape[0] / SAMPLE_RATE * fps)
        silence = np.zeros(round(start / fps * SAMPLE_RATE), np.float32)
        wave = np.concatenate([silence, wave])[:needed]
        placed.append((np.pad(wave, (0, needed - wave.shape[0])), SAMPLE_RATE))
    return placed

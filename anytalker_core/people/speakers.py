"""Who talks when: every person's audio features on the video timeline, listeners, and the mixed-down track.

Timing modes, as in the reference's multi-speaker pre-processing (HKUST-C4G/AnyTalker,
``wan/utils/infer_utils.py``: ``process_audio_features`` and ``calculate_frame_num_from_audio``):

- ``pad``: every track starts at the beginning of the clip and spans all of it. A track is encoded for the
  clip length F, so a shorter one ends in the features of silence and a longer one is cut.
- ``concat``: people take turns. Track k starts where track k-1's turn ends (its own frame count
  ``ceil(seconds * fps)``). Its features sit on its turn, and it has zeros everywhere else.

An optional start offset per person (seconds, snapped to the nearest video frame) delays a track. In
``pad`` mode the track starts at that frame instead of frame 0. In ``concat`` mode it adds a pause before
that person's turn. With no offsets, both modes give the reference's features exactly.

A person without a track (``None``) or with an all-silent track is a listener: zero features over the whole
clip, the same as the reference gives a missing track.

Memory: the layout keeps each speaker's per-frame layer outputs (``audio_store.HiddenStates``: in memory for tracks
of up to 2 minutes, in a temporary file beyond) and builds the 5-frame windows of the frames asked for
(:meth:`SpeakerLayout.window_features`), so a long clip's features never sit in memory whole; only the mixed-down
track does.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from .. import timeline
from .audio import SAMPLE_RATE, AudioError, frame_count, load_audio, load_mono, resample_pieces
from .audio_features import encode_track, load_audio_encoder
from .audio_store import WINDOW, HiddenStates

MODES = ("pad", "concat")
SILENCE_PEAK = 1e-4  # a track whose loudest 16 kHz sample stays below this is silent: its person listens


@dataclass(frozen=True)
class Speaker:
    """One person on the video timeline.

    ``index``: position in the input (0-based; messages call it person ``index + 1``, person 1 = leftmost face).
    ``role``: ``"speaker"`` or ``"listener"``.
    ``start_frame`` / ``end_frame``: the video frames ``[start, end)`` of the clip during which the track plays.
    The span is empty (0, 0) for a listener. In ``pad`` mode the features run on past ``end_frame`` to the end of
    the clip, as the features of silence.
    ``seconds``: the duration of the person's track (0.0 when there is none).
    ``note``: one human-readable line, for the report.
    """

    index: int
    role: str
    start_frame: int
    end_frame: int
    seconds: float
    note: str


@dataclass(frozen=True)
class Placement:
    """One speaker's encoded track on the clip: the track's frame j is the clip's frame ``start + j``, for
    ``j < frames``; the clip has zero features outside ``[start, start + frames)``."""

    states: HiddenStates
    start: int
    frames: int


@dataclass
class SpeakerLayout:
    """Everything the video timeline needs from the audio.

    ``placements``: per person, in input order, the encoded track and where it sits (None: a listener).
    :meth:`window_features` gives the features of any frames, one float32 ``[length, 5, layers, channels]`` per
    person (``[length, 5, 12, 768]`` for wav2vec2-base); ``features`` the whole clip's ``[F, 5, layers, channels]``.
    ``num_frames``: F, always 4n+1. ``mix``: mono float32 ``[ceil(F / fps * mix_rate)]``, every speaker's track at
    its place on the timeline, for muxing into the video. ``length_source``: how F was chosen.
    """

    placements: list[Placement | None]
    num_frames: int
    fps: int
    mode: str
    mix: torch.Tensor
    mix_rate: int
    speakers: list[Speaker]
    length_source: str = ""

    def report(self) -> str:
        """Human-readable lines: the clip length used, then each person's role and span."""
        lines = [
            f"clip: {self.num_frames} frames = {self.num_frames / self.fps:.2f} s at {self.fps} fps, "
            f"{self.mode} mode ({self.length_source})"
        ]
        lines += [f"person {s.index + 1}: {s.note}" for s in self.speakers]
        return "\n".join(lines)

    @property
    def features(self) -> list[torch.Tensor]:
        """The whole clip's features, one float32 ``[F, 5, layers, channels]`` per person, made on each access
        (F x 180 KiB a person for wav2vec2-base: for long clips use :meth:`window_features`)."""
        return self.window_features(0, self.num_frames)

    def window_features(self, start: int, length: int) -> list[torch.Tensor]:
        """The features of the clip's frames ``[start, start + length)``, one float32
        ``[length, 5, layers, channels]`` per person: exactly ``features[i][start : start + length]`` (the 5-frame
        windows clamp at the ends of each track as over the whole clip), read from the stored layer outputs."""
        if not (0 <= start and 1 <= length and start + length <= self.num_frames):
            raise ValueError(f"frames {start}..{start + length - 1} are not inside the {self.num_frames}-frame clip")
        shape = next(p.states for p in self.placements if p is not None)
        out = []
        for place in self.placements:
            a = start if place is None else max(start, place.start)
            b = start if place is None else min(start + length, place.start + place.frames)
            if a == start and b == start + length:
                out.append(place.states.windows(a - place.start, length))
                continue
            features = torch.zeros(length, WINDOW, shape.layers, shape.channels)
            if a < b:
                features[a - start : b - start] = place.states.windows(a - place.start, b - a)
            out.append(features)
        return out


def arrange_speakers(
    tracks: Sequence[Any],
    encoder: Any,
    *,
    mode: str = "pad",
    offsets: Sequence[float | None] | None = None,
    num_frames: int | None = None,
    fps: int = timeline.FPS,
    max_frames: int | None = None,
    mix_rate: int = 44100,
    chunk_frames: int | None = None,
) -> SpeakerLayout:
    """Lay out every person's audio on the video timeline: features, mixed-down track, and a report.

    ``tracks``: one entry per person, in face order. Each entry is a file path, a ``(waveform, sample_rate)``
    tuple (waveform ``[T]``, ``[C, T]`` or ``[1, C, T]``), a ComfyUI ``AUDIO`` dict, or ``None`` for a listener.
    ``encoder``: a wav2vec2 as ``load_audio_encoder`` accepts it (a path, a module or a loaded ``AudioEncoder``).
    ``mode``: ``"pad"`` or ``"concat"`` (see the module docstring).
    ``offsets``: a start delay in seconds per person (``None`` entries mean 0). Each is rounded to the nearest
    video frame.
    ``num_frames``: the clip length F, which must be 4n+1. When it is not given, F comes from the audio:
    ``ceil(seconds * fps)`` rounded down to 4n+1, where seconds means the end of the longest track for ``pad``
    and the sum of the tracks for ``concat``, offsets included in both cases.
    ``max_frames``: refuse clips longer than this (``AudioError``).
    ``chunk_frames``: encode tracks longer than this many frames in overlapping chunks (bounded memory; see
    ``AudioEncoder.hidden_states``); None (default) encodes every track in one pass, as the reference.
    Returns a ``SpeakerLayout``. Raises ``ValueError`` on bad arguments, and ``AudioError`` on unusable audio or
    when nobody speaks inside the clip.
    """
    people = _check_tracks(tracks)
    if mode not in MODES:
        raise ValueError(f"`mode` is {mode!r}; expected one of {', '.join(repr(m) for m in MODES)}")
    fps = _positive_int(fps, "fps")
    mix_rate = _positive_int(mix_rate, "mix_rate")
    shifts = _offset_frames(offsets, people, fps)
    if num_frames is not None:
        num_frames = _check_num_frames(num_frames)
    if max_frames is not None:
        max_frames = _positive_int(max_frames, "max_frames")

    waves = [None if t is None else load_audio(t, speaker=_name(i)) for i, t in enumerate(tracks)]
    silent = [w is not None and float(w.abs().max()) < SILENCE_PEAK for w in waves]
    if all(w is None or s for w, s in zip(waves, silent)):
        raise AudioError(
            "every person is a listener (no track, or a silent track): there is no voice to drive the video; "
            "give at least one person an audio track with speech"
        )
    lengths = [0 if w is None else frame_count(w.shape[0], fps) for w in waves]  # frames each track covers
    starts = _starts(mode, waves, lengths, shifts)

    if num_frames is None:
        needed = _frames_needed(mode, waves, starts, shifts, lengths, fps)
        num_frames = timeline.round_down(needed)
        what = "the longest track ends at" if mode == "pad" else "the tracks and pauses add up to"
        length_source = f"from the audio: {what} {needed / fps:.2f} s = {needed} frames, rounded down to 4n+1"
    else:
        length_source = "as requested"
    if max_frames is not None and num_frames > max_frames:
        raise AudioError(
            f"the clip would be {num_frames} frames ({num_frames / fps:.2f} s at {fps} fps), longer than the "
            f"maximum of {max_frames} frames ({max_frames / fps:.2f} s): use shorter audio, set a shorter frame count, "
            "or make it window by window (render / the Long Video node)"
        )

    talks = [w is not None and not s and start < num_frames for w, s, start in zip(waves, silent, starts)]
    if not any(talks):
        raise AudioError(
            f"nobody speaks inside the {num_frames}-frame clip: every track starts after the clip ends; "
            "use smaller offsets or a longer frame count"
        )

    encoder = load_audio_encoder(encoder)
    placements: list[Placement | None] = [None] * people
    for i in range(people):
        if talks[i]:
            placements[i] = _place(mode, waves[i], encoder, starts[i], num_frames, fps, chunk_frames)

    speakers = [
        _describe(i, mode, waves[i], silent[i], talks[i], starts[i], lengths[i], num_frames, fps) for i in range(people)
    ]
    del waves  # the 16 kHz tracks are not needed for the mix
    mix = _mix(tracks, speakers, num_frames, fps, mix_rate)
    return SpeakerLayout(placements, num_frames, fps, mode, mix, mix_rate, speakers, length_source)


# ---------------------------------------------------------------- timing


def _starts(mode: str, waves: list, lengths: list[int], shifts: list[int]) -> list[int]:
    """Each person's first video frame. ``pad``: the offset. ``concat``: the end of the previous turn plus the
    offset. A person without a track takes no turn (start 0, offset unused)."""
    starts, cursor = [], 0
    for wave, length, shift in zip(waves, lengths, shifts):
        if wave is None:
            starts.append(0)
        elif mode == "pad":
            starts.append(shift)
        else:
            starts.append(cursor + shift)
            cursor = starts[-1] + length
    return starts


def _frames_needed(mode: str, waves: list, starts: list[int], shifts: list[int], lengths: list[int], fps: int) -> int:
    """The clip length the audio asks for, before rounding down to 4n+1 (the reference's
    ``calculate_frame_num_from_audio`` with offsets added; silent tracks count, missing ones do not).

    ``pad``: the latest track end, ``max(start + ceil(seconds * fps))``. ``concat``: ``ceil(total seconds * fps)``
    plus every offset. Summing the seconds before taking the ceiling can come out short of the last turn's end
    (by up to a frame per track), and the reference cuts that turn the same way.
    """
    present = [i for i, w in enumerate(waves) if w is not None]
    if mode == "pad":
        return max(starts[i] + lengths[i] for i in present)
    samples = sum(waves[i].shape[0] for i in present)
    return frame_count(samples, fps) + sum(shifts[i] for i in present)


def _place(
    mode: str, wave: torch.Tensor, encoder: Any, start: int, num_frames: int, fps: int, chunk: int | None = None
) -> Placement:
    """One speaker's encoded track and where it sits on the clip (features: zeros before ``start``).

    ``pad``: the track is encoded for the frames left after its start (``F - start``), which is exactly the
    reference when ``start`` is 0. The track is padded with silence to that length (or cut), so the features
    run to the end of the clip. ``concat``: the track is encoded on its own (``ceil(seconds * fps)`` frames) and
    placed at ``start``. It is cut at the clip end, and everything outside its turn is zero.
    """
    room = num_frames - start
    if mode == "pad":
        states = encode_track(wave, encoder, num_frames=room, fps=fps, chunk_frames=chunk, keep=room)
        return Placement(states, start, room)
    states = encode_track(wave, encoder, fps=fps, chunk_frames=chunk, keep=room)
    return Placement(states, start, min(states.frames, room))


def _describe(
    index: int,
    mode: str,
    wave: torch.Tensor | None,
    silent: bool,
    talks: bool,
    start: int,
    length: int,
    num_frames: int,
    fps: int,
) -> Speaker:
    """The person's role, span and report line."""
    if wave is None:
        return Speaker(index, "listener", 0, 0, 0.0, "listens (no audio track): zero features")
    seconds = wave.shape[0] / SAMPLE_RATE
    if silent:
        pause = f", a pause at frames {start}..{start + length - 1}" if mode == "concat" else ""
        return Speaker(
            index, "listener", 0, 0, seconds, f"listens (its {seconds:.2f} s track is silent{pause}): zero features"
        )
    if not talks:
        return Speaker(
            index,
            "listener",
            0,
            0,
            seconds,
            f"listens: its {seconds:.2f} s track starts at frame {start} ({start / fps:.2f} s), "
            "after the clip ends: zero features",
        )
    end = min(start + length, num_frames)
    note = f"speaks at frames {start}..{end - 1} ({start / fps:.2f}-{end / fps:.2f} s), a {seconds:.2f} s track"
    if start + length > num_frames:
        cut = start + length - num_frames
        note += f"; its last {cut} frame{'s' if cut > 1 else ''} fall{'' if cut > 1 else 's'} after the clip end"
    if mode == "concat":
        note += "; zero features outside its turn"
    else:
        outside = ["zeros before it" if start else "", "silence features after it" if end < num_frames else ""]
        note += "".join(f"; {part}" for part in outside if part)
    return Speaker(index, "speaker", start, end, seconds, note)


# ---------------------------------------------------------------- the mixed-down track


def _mix(tracks: Sequence[Any], speakers: list[Speaker], num_frames: int, fps: int, mix_rate: int) -> torch.Tensor:
    """Every speaker's track at ``mix_rate``, starting at its first frame, summed over the clip: float32
    [ceil(F / fps * mix_rate)]. It is scaled down to a peak of 1 only if the sum would clip."""
    total = -(-num_frames * mix_rate // fps)
    mix = torch.zeros(total, dtype=torch.float32)
    for person in speakers:
        if person.role != "speaker":
            continue
        mono, rate = load_mono(tracks[person.index], speaker=_name(person.index))
        at = (2 * person.start_frame * mix_rate + fps) // (2 * fps)  # nearest sample to the start frame
        for piece in resample_pieces(mono, rate, mix_rate):  # never the whole track at mix_rate
            piece = torch.from_numpy(piece[: max(total - at, 0)])
            mix[at : at + piece.shape[0]] += piece
            at += piece.shape[0]
            if at >= total:
                break
        del mono
    peak = float(mix.abs().max())
    return mix / peak if peak > 1.0 else mix


# ---------------------------------------------------------------- argument checks


def _name(index: int) -> str:
    return f"person {index + 1}"


def _check_tracks(tracks: Any) -> int:
    single = isinstance(tracks, (str, os.PathLike, Mapping)) or (
        isinstance(tracks, tuple)
        and len(tracks) == 2
        and isinstance(tracks[0], torch.Tensor)
        and isinstance(tracks[1], int)
    )
    if single or not isinstance(tracks, Sequence):
        raise ValueError(
            f"`tracks` must be a list with one entry per person (a path, a (waveform, rate) tuple or None), "
            f"got {type(tracks).__name__}; wrap a single track in a list"
        )
    if len(tracks) == 0:
        raise ValueError("`tracks` is empty; give one entry per person (None for a person who only listens)")
    return len(tracks)


def _positive_int(value: Any, name: str) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"`{name}` must be a whole number, got {value!r}") from None
    if number < 1:
        raise ValueError(f"`{name}` must be at least 1, got {number}")
    return number


def _check_num_frames(value: Any) -> int:
    return timeline.check_frames(_positive_int(value, "num_frames"), "`num_frames`")


def _offset_frames(offsets: Sequence[float | None] | None, people: int, fps: int) -> list[int]:
    """Start offsets in seconds -> whole video frames (nearest), one per person."""
    if offsets is None:
        return [0] * people
    try:
        values = None if isinstance(offsets, (str, bytes, Mapping)) else list(offsets)
    except TypeError:  # a bare number
        values = None
    if values is None or len(values) != people:
        given = type(offsets).__name__ if values is None else len(values)
        raise ValueError(f"`offsets` must give one start time in seconds per person: {people} expected, got {given}")
    frames = []
    for i, seconds in enumerate(values):
        seconds = 0.0 if seconds is None else seconds
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, numbers.Real)
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ValueError(f"`offsets[{i}]` ({_name(i)}) is {seconds!r}; expected a start time in seconds >= 0")
        frames.append(timeline.frame_at(seconds, fps))
    return frames

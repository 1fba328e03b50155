"""``evaluate``: judge a talking video offline. Which voice drives which face, and how alive the listeners are."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .interactivity import listener_motion
from .report import Report, matrix, read_speaking
from .sync import bind, load_voices, loudness, speaking_from_loudness, sync_matrix
from .tracks import mouth_openings, short_frames, track_faces
from .video import JudgeError, open_video


def evaluate(
    video: Any,
    audio: Sequence[Any] | None = None,
    speaking: Any = None,
    fps: float | None = None,
    *,
    face_backend: str = "auto",
    face_threshold: float | None = None,
    face_root: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Judge a talking video.

    video: an mp4 path, or frames [T, H, W, 3] (uint8, or float 0..1; numpy or torch), then ``fps`` is required.
    audio: one track per person, in the order of the faces left to right that they should drive: a path, a
    ``(waveform, sample_rate)`` tuple, a ComfyUI AUDIO dict, or None for a listener. Tracks must cover the video.
    speaking: per person ``[[start_s, end_s], ...]``, a JSON file or string of them, or the reference's
    ``speaker_duration.json`` (``report.read_speaking``); default: from each track's loudness.
    face_backend, face_threshold, face_root: the face detector (``people.faces``; ``face_root``: InsightFace's model
    folder). progress(done, total): after each frame.
    Returns a :class:`Report`; raises :class:`JudgeError` (a ``ValueError``) on input it cannot judge.
    """
    frames = open_video(video, fps)
    if audio is not None and (isinstance(audio, (str, dict)) or not isinstance(audio, Sequence) or not audio):
        raise JudgeError("audio: expected a list with one track per person (left to right), e.g. [left, right]")
    people = len(audio) if audio is not None else None
    if audio is not None and all(track is None for track in audio):
        raise JudgeError("audio: every track is None (a listener); give at least one person's voice")
    voices = load_voices(audio, frames.count, frames.fps) if audio is not None else []
    if people is None and speaking is not None and _two_sided(speaking, frames.name):
        people = 2
    tracks = track_faces(frames, people, backend=face_backend, threshold=face_threshold, root=face_root,
                         progress=progress)  # fmt: skip
    count, fps_used, people = tracks.frames, frames.fps, tracks.people

    levels = np.stack([loudness(v, count, fps_used) for v in voices], 1) if voices else np.zeros((count, 0))
    if speaking is not None:
        intervals, source = read_speaking(speaking, people, frames.name), "given"
    elif voices:
        intervals = [speaking_from_loudness(levels[:, v], fps_used) for v in range(people)]
        source = "from each voice's loudness"
    else:
        intervals, source = [[] for _ in range(people)], "none (every frame counts as listening)"

    mouth = mouth_openings(tracks)
    sync = sync_matrix(mouth, levels)
    binding = bind(sync)
    swapped = any(face is not None and face != v for v, face in enumerate(binding))
    short = short_frames(tracks)
    stable = len(short) == 0
    motion = listener_motion(tracks, intervals, fps_used, stable)

    problems = []
    if not stable:
        problems.append(
            f"faces not stable: fewer than {people} faces in {len(short)} of {count} frames (first at frame "
            f"{short[0]}, {short[0] / fps_used:.2f} s); the reference scores such a video -1"
        )
    for v, level in enumerate(levels.T):
        if float(level.max(initial=0.0)) == 0.0 and audio is not None:
            problems.append(f"voice {v + 1} is silent: person {v + 1} only listens")
        elif binding[v] is None:
            problems.append(f"no face follows voice {v + 1} (best sync {np.nanmax(sync[:, v]):+.2f})")
    report = Report(
        sync=matrix(sync), binding=binding, swapped=swapped,
        interactivity=motion.per_person if stable else [None] * people, overall=motion.overall,
        speaking=intervals, speaking_source=source, fps=fps_used, frames=count, stable=stable, problems=problems,
        detector=tracks.backend, crop=motion.crop, video=frames.name,
        series={"mouth": mouth, "loudness": levels.astype(np.float32), "motion": motion.motion,
                "counted": motion.counted},
    )  # fmt: skip
    return report


def _two_sided(speaking: Any, video_name: str) -> bool:
    """Intervals that read as two people's (a ``{"left": ..., "right": ...}`` entry, the reference's whole file)."""
    try:
        read_speaking(speaking, 2, video_name)
    except JudgeError:
        return False
    return True

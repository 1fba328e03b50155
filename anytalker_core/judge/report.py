"""The judge's verdict: the numbers, a short table, the JSON, and the speaking-interval files it reads.

Speaking intervals (``speaking``), per person in face order (left to right), seconds:

- a list with one interval list per person: ``[[[0.0, 4.16]], [[4.16, 8.18]]]``;
- one clip's entry of the reference's ``benchmark/speaker_duration.json``: ``{"left": [[4.16, 8.18]],
  "right": [[0.0, 4.16]]}`` (two people: left = person 1), or keys ``"1"``, ``"2"``, ...;
- the reference's whole file, keyed by video file name (``{"interact_11.mp4": {"left": ..., "right": ...}}``):
  the entry of the video being judged is used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .video import JudgeError

SIDES = ("left", "right")


def _intervals(value: Any, where: str) -> list[list[float]]:
    if not isinstance(value, (list, tuple)):
        raise JudgeError(f"speaking: {where} must be a list of [start_s, end_s] pairs, got {value!r}")
    out = []
    for k, pair in enumerate(value):
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair)
        if not ok or not 0 <= pair[0] <= pair[1]:
            raise JudgeError(f"speaking: {where}, interval {k + 1} is {pair!r}; expected [start_s, end_s] with "
                             "0 <= start <= end")  # fmt: skip
        out.append([float(pair[0]), float(pair[1])])
    return out


def read_speaking(speaking: Any, people: int, video_name: str = "") -> list[list[list[float]]]:
    """Speaking intervals per person from a JSON file path, a JSON string or the parsed value (module docs)."""
    if isinstance(speaking, Path) or (isinstance(speaking, str) and not speaking.lstrip().startswith(("[", "{"))):
        path = Path(speaking).expanduser()
        if not path.is_file():
            raise JudgeError(f"speaking: file not found: {path}")
        speaking, source = path.read_text(), path.name
    else:
        source = "the speaking value"
    if isinstance(speaking, str):
        try:
            speaking = json.loads(speaking)
        except json.JSONDecodeError as err:
            raise JudgeError(f"speaking: {source} is not JSON ({err})") from None
    if isinstance(speaking, dict) and not set(speaking) & {*SIDES, *map(str, range(1, people + 1))}:
        if video_name not in speaking:  # the reference's whole file: one entry per video
            names = ", ".join(sorted(speaking)[:8]) + (", ..." if len(speaking) > 8 else "")
            raise JudgeError(f"speaking: {source} has no entry for {video_name or 'this video'} (it has {names}); "
                             "pass the intervals of this video")  # fmt: skip
        speaking = speaking[video_name]
    if isinstance(speaking, dict):
        keys = SIDES if people == 2 and set(speaking) <= set(SIDES) else [str(p + 1) for p in range(people)]
        unknown = set(speaking) - set(keys)
        if unknown:
            raise JudgeError(f"speaking: unknown keys {sorted(unknown)} for {people} people; use {list(keys)}")
        speaking = [speaking.get(k, []) for k in keys]
    if not isinstance(speaking, (list, tuple)) or len(speaking) != people:
        got = len(speaking) if isinstance(speaking, (list, tuple)) else type(speaking).__name__
        raise JudgeError(f"speaking: expected one interval list per person ({people}), got {got}")
    return [_intervals(v, f"person {p + 1}") for p, v in enumerate(speaking)]


def _number(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 4)


@dataclass
class Report:
    """What :func:`anytalker_core.judge.evaluate` found. Faces and people are numbered left to right (index 0 =
    the leftmost face, person 1 in messages); voice v is meant to drive face v.

    sync: [faces][voices] correlation of mouth opening with voice loudness (None: a silent voice);
    binding: per voice, the face it drives best (None: no face follows it);
    swapped: some voice drives another person's face better than its own;
    interactivity: per face, the mean listener eye/brow motion while silent (px in a 224-px crop; None: the
    person never listens); overall: the reference's overall mean, -1.0 when the faces are not stable.
    series: per-frame curves for the plot (``mouth`` [T, P], ``loudness`` [T, V], ``motion`` [T, P],
    ``counted`` [T, P]); not part of the JSON.
    """

    sync: list[list[float | None]]
    binding: list[int | None]
    swapped: bool
    interactivity: list[float | None]
    overall: float
    speaking: list[list[list[float]]]
    speaking_source: str  # "given", "from each voice's loudness" or "none (...)"
    fps: float
    frames: int
    stable: bool
    problems: list[str] = field(default_factory=list)
    detector: str = ""
    crop: int = 0
    video: str = ""
    series: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def people(self) -> int:
        return len(self.interactivity)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON values (NaN as null), without the per-frame series."""
        return {
            "video": self.video, "frames": self.frames, "fps": self.fps, "people": self.people,
            "sync": [[_number(v) for v in row] for row in self.sync], "binding": self.binding,
            "swapped": self.swapped, "interactivity": [_number(v) for v in self.interactivity],
            "overall": _number(self.overall), "stable": self.stable, "speaking": self.speaking,
            "speaking_source": self.speaking_source, "problems": self.problems, "detector": self.detector,
            "crop": self.crop,
        }  # fmt: skip

    def to_json(self) -> str:
        """:meth:`as_dict` as JSON text, one key a line."""
        lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in self.as_dict().items()]
        return "{\n" + ",\n".join(lines) + "\n}"

    def verdict(self) -> str:
        """One line: whether every voice drives its own face (silent voices, whose sync is None, left out)."""
        if self.swapped:
            wrong = [f"voice {v + 1} drives face {f + 1}" for v, f in enumerate(self.binding)
                     if f is not None and f != v]  # fmt: skip
            return "SWAPPED: " + "; ".join(wrong) + " better than its own face"
        if not self.binding:
            return "no voices given: listener motion only"
        speaking = [v for v in range(len(self.binding)) if any(row[v] is not None for row in self.sync)]
        unbound = [str(v + 1) for v in speaking if self.binding[v] is None]
        if not speaking or len(unbound) == len(speaking):
            return "no voice drives any face (no mouth follows a voice)"
        if unbound:
            return f"no face follows voice {', '.join(unbound)}; the other voices drive their own faces"
        quiet = len(speaking) < len(self.binding)
        return "every voice that speaks drives its own face" if quiet else "every voice drives its own face"

    def table(self) -> str:
        """A short table: per person, when they speak, the face their voice drives, sync, listener motion."""
        rows = [("person", "speaks (s)", "voice drives", "sync (own face)", "listener motion")]
        for p in range(self.people):
            spans = ", ".join(f"{s:.2f}-{e:.2f}" for s, e in self.speaking[p]) or "never"
            face = self.binding[p] if p < len(self.binding) else None
            sync = self.sync[p][p] if p < len(self.sync[p]) else None
            motion = self.interactivity[p]
            rows.append((
                f"{p + 1}", spans if len(spans) <= 28 else spans[:25] + "...",
                "-" if face is None else f"face {face + 1}" + ("" if face == p else " (WRONG)"),
                "-" if sync is None or math.isnan(sync) else f"{sync:+.2f}",
                "-" if motion is None else f"{motion:.2f} px",
            ))  # fmt: skip
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        overall = "not scored (faces not stable)" if self.overall < 0 else f"{self.overall:.3f} px"
        lines += [
            f"binding: {self.verdict()}",
            f"listener motion overall: {overall} (speaking intervals: {self.speaking_source})",
        ]
        lines += [f"note: {problem}" for problem in self.problems]
        return "\n".join(lines)


def matrix(values: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in np.asarray(values, np.float64)]

"""The judge's plot, drawn with OpenCV (no plotting package): one panel per person, over time.

Each panel shows the person's mouth opening (blue) against the loudness of the voice meant for them (orange),
their speaking intervals shaded, and their listener motion (green; frames that count toward the metric drawn
solid, the others faint). Curves are scaled to their panel: mouth and loudness each to their own peak over
the video, motion to the largest motion of anybody. The panel's title gives the numbers of the report.
"""

from __future__ import annotations

import math

import numpy as np

from .report import Report

WIDTH = 960
PANEL = 150
HEADER = 34
MARGIN = 48  # left and right, pixels
AXIS = 22  # the time axis under the last panel
MOUTH, VOICE, MOTION = (31, 119, 180), (255, 127, 14), (44, 160, 44)  # RGB
SHADE, GRID, INK = (253, 232, 200), (225, 225, 225), (40, 40, 40)


def _polyline(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, colour: tuple, thickness: int = 2) -> None:
    import cv2

    ok = ~np.isnan(ys)
    start = 0
    while start < len(ys):  # one polyline per run of known values
        if not ok[start]:
            start += 1
            continue
        end = start
        while end < len(ys) and ok[end]:
            end += 1
        pts = np.stack([xs[start:end], ys[start:end]], 1).round().astype(np.int32)
        cv2.polylines(img, [pts], False, colour, thickness, cv2.LINE_AA)
        start = end


def _text(img: np.ndarray, text: str, x: int, y: int, colour: tuple = INK, size: float = 0.45) -> None:
    import cv2

    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, size, colour, 1, cv2.LINE_AA)


def _scaled(values: np.ndarray, peak: float, top: int, height: int) -> np.ndarray:
    return top + height - np.clip(values / peak if peak > 0 else values * 0, 0, 1) * height


def plot(report: Report) -> np.ndarray:
    """uint8 RGB [H, W, 3]: the report's plot (module docs)."""
    import cv2

    mouth, level = report.series["mouth"], report.series["loudness"]
    motion, counted = report.series["motion"], report.series["counted"]
    frames, people = mouth.shape
    height = HEADER + PANEL * people + AXIS
    img = np.full((height, WIDTH, 3), 255, np.uint8)
    xs = MARGIN + np.arange(frames) / max(frames - 1, 1) * (WIDTH - 2 * MARGIN)
    seconds = frames / report.fps
    x_of = lambda t: int(round(MARGIN + t / max(seconds, 1e-9) * (WIDTH - 2 * MARGIN)))  # noqa: E731
    motion_peak = float(np.nanmax(motion)) if np.isfinite(motion).any() else 0.0
    x = MARGIN
    for name, colour in (("mouth opening", MOUTH), ("voice loudness", VOICE), ("listener motion", MOTION)):
        cv2.line(img, (x, 16), (x + 22, 16), colour, 3, cv2.LINE_AA)
        _text(img, name, x + 28, 21)
        x += 40 + 9 * len(name)
    cv2.rectangle(img, (x, 9), (x + 22, 23), SHADE, -1)
    _text(img, "speaking", x + 28, 21)
    _text(img, report.verdict()[:60], x + 110, 21, (200, 0, 0) if report.swapped else INK)
    for p in range(people):
        top = HEADER + p * PANEL + 18
        inner = PANEL - 26
        for start, end in report.speaking[p]:
            cv2.rectangle(img, (x_of(start), top), (x_of(min(end, seconds)), top + inner), SHADE, -1)
        for second in range(int(math.floor(seconds)) + 1):
            cv2.line(img, (x_of(second), top), (x_of(second), top + inner), GRID, 1)
        cv2.rectangle(img, (MARGIN, top), (WIDTH - MARGIN, top + inner), (170, 170, 170), 1)
        if p < level.shape[1]:
            voice = level[:, p]
            _polyline(img, xs, _scaled(voice, float(np.nanmax(voice)), top, inner), VOICE)
        face = mouth[:, p]
        _polyline(img, xs, _scaled(face, float(np.nanmax(face)) if np.isfinite(face).any() else 0, top, inner), MOUTH)
        moved = _scaled(motion[:, p], motion_peak, top, inner)
        _polyline(img, xs, np.where(counted[:, p], np.nan, moved), (190, 225, 190), 1)
        _polyline(img, xs, np.where(counted[:, p], moved, np.nan), MOTION, 1)
        _text(img, _title(report, p), MARGIN, top - 5)
    axis = HEADER + PANEL * people
    for second in range(int(math.floor(seconds)) + 1):
        _text(img, f"{second}s", x_of(second) - 6, axis + 14, size=0.38)
    return img


def message(text: str) -> np.ndarray:
    """uint8 RGB [H, W, 3]: a plain panel saying why there is no plot (``text`` wrapped to the width)."""
    import textwrap

    lines = textwrap.wrap(text, width=(WIDTH - 2 * MARGIN) // 8) or [""]
    img = np.full((HEADER + 20 * len(lines) + AXIS, WIDTH, 3), 255, np.uint8)
    _text(img, "Cannot judge this video", MARGIN, 24, (200, 0, 0), 0.6)
    for k, line in enumerate(lines):
        _text(img, line, MARGIN, HEADER + 20 * (k + 1))
    return img


def _title(report: Report, p: int) -> str:
    side = "left" if p == 0 else "right" if p == report.people - 1 else f"{p + 1}th from left"
    face = report.binding[p] if p < len(report.binding) else None
    sync = report.sync[p][p] if p < len(report.sync[p]) else None
    drives = "no face follows it" if face is None else f"drives face {face + 1}" + ("" if face == p else " (WRONG)")
    motion = report.interactivity[p]
    parts = [f"person {p + 1} ({side}): voice {p + 1} {drives}"]
    parts += [] if sync is None or math.isnan(sync) else [f"sync with face {p + 1} {sync:+.2f}"]
    parts += [f"listener motion {motion:.2f} px" if motion is not None else "never listens"]
    return ", ".join(parts)

"""The judge (``at.evaluate``, ``python -m anytalker_core evaluate``): who talks to which voice, and listener motion.

Real footage: ``fixtures/judge/`` holds 2.5 s of the reference's benchmark video ``interact_11.mp4`` (made by
AnyTalker: the right person speaks, then the left one), its two separated voices and the reference's speaking
intervals (``tests/tools/make_judge_fixtures.py``). Synthetic footage: the demo's two anchors with mouths that open
with their voices' loudness and eyes that twitch by a known amount (``judge_frames.py``).
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

import anytalker_core as at
from anytalker_core.cli import main
from anytalker_core.judge import JudgeError, read_speaking
from anytalker_core.judge.sync import loudness, place_voices, speaking_from_loudness
from judge_frames import FPS, still, talking_frames, voices

JUDGE = Path(__file__).parent / "fixtures" / "judge"
VIDEO, LEFT, RIGHT = JUDGE / "conversation.mp4", JUDGE / "left.flac", JUDGE / "right.flac"
SPEAKING = JUDGE / "speaker_duration.json"


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """The command line on the real clip with the reference's speaking intervals: (exit code, stdout, out prefix)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("judge") / "conversation"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["evaluate", str(VIDEO), "--audio", str(LEFT), "--audio", str(RIGHT), "--speaking", str(SPEAKING),
                     "--out", str(out)])  # fmt: skip
    return code, printed.getvalue(), out


# ------------------------------------------------------------------------------------------------ real footage


def test_real_conversation_binds_each_voice_to_its_face(cli_run):
    code, printed, out = cli_run
    assert code == 0
    report = json.loads(out.with_name("conversation.json").read_text())
    assert report["binding"] == [0, 1] and report["swapped"] is False and report["stable"] is True
    (left_left, left_right), (right_left, right_right) = report["sync"]
    assert left_left > 0.7 and right_right > 0.5  # measured 0.85 and 0.65
    assert left_right < 0 and right_left < 0  # the other person's voice: the mouth closes while it speaks
    assert "every voice drives its own face" in printed
    first, second = printed.splitlines()[1:3]
    assert first.split()[:4] == ["1", "1.16-2.50", "face", "1"] and second.split()[:4] == [
        "2",
        "0.00-1.16",
        "face",
        "2",
    ]


def test_real_conversation_reads_the_references_intervals_and_scores_listeners(cli_run):
    _, _, out = cli_run
    report = json.loads(out.with_name("conversation.json").read_text())
    assert report["speaking"] == [[[1.16, 2.5]], [[0.0, 1.16]]] and report["speaking_source"] == "given"
    left, right = report["interactivity"]
    assert 0.1 < left < 1.0 and 0.1 < right < 1.0  # measured 0.29 and 0.39 px
    assert min(left, right) <= report["overall"] <= max(left, right)
    assert report["frames"] == 60 and report["fps"] == 24.0 and report["detector"] in ("yunet", "insightface")
    png = out.with_name("conversation.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_listener_motion_needs_no_voices_when_the_intervals_are_given(cli_run):
    _, _, out = cli_run
    with_voices = json.loads(out.with_name("conversation.json").read_text())
    report = at.evaluate(VIDEO, speaking=SPEAKING)  # the reference's file decides: two people
    assert report.as_dict()["interactivity"] == with_voices["interactivity"] and report.binding == []
    assert "no voices given" in report.table()


def test_real_conversation_with_the_tracks_swapped_is_reported_swapped():
    report = at.evaluate(VIDEO, audio=[RIGHT, LEFT])
    assert report.swapped is True and report.binding == [1, 0]
    assert report.sync[0][0] < 0 and report.sync[1][1] < 0
    assert "SWAPPED" in report.table() and "(WRONG)" in report.table()


# ------------------------------------------------------------------------------------------- synthetic footage


def test_synthetic_mouths_bind_and_a_swapped_order_is_caught():
    left, right = voices()
    frames = talking_frames([left, right])
    report = at.evaluate(frames, audio=[(left, 16000), (right, 16000)], fps=FPS)
    assert report.binding == [0, 1] and not report.swapped
    assert report.sync[0][0] > 0.8 and report.sync[1][1] > 0.8
    swapped = at.evaluate(frames, audio=[(right, 16000), (left, 16000)], fps=FPS)
    assert swapped.binding == [1, 0] and swapped.swapped


def test_listener_motion_is_zero_on_a_still_picture_and_grows_with_eye_motion():
    picture, _ = still()
    report = at.evaluate(np.repeat(picture[None], 12, 0), fps=FPS)  # no voices: every frame counts
    assert report.interactivity == [0.0, 0.0] and report.overall == 0.0 and report.stable
    left, _ = voices()
    motion = []
    for pixels in (1.0, 2.0):
        frames = talking_frames([left, None], brows=(0.0, pixels))
        scored = at.evaluate(frames, audio=[(left, 16000), None], fps=FPS)
        assert scored.interactivity[0] < 0.1  # the speaker's eyes hold still
        motion.append(scored.interactivity[1])
    assert 0.5 * 1.0 < motion[0] < 1.0 and 0.5 * 2.0 < motion[1] < 2.0  # measured 0.80 and 1.57 px
    assert motion[1] > 1.8 * motion[0]


def test_a_face_missing_from_some_frames_is_not_scored_like_the_reference():
    left, right = voices()
    frames = talking_frames([left, right])[:24].copy()
    frames[10:14, :, 192:] = 128  # the right anchor leaves for 4 frames
    report = at.evaluate(frames, audio=[(left[:16000], 16000), (right[:16000], 16000)], fps=FPS)
    assert report.stable is False and report.overall == -1.0 and report.interactivity == [None, None]
    assert "fewer than 2 faces in 4 of 24 frames (first at frame 10" in report.problems[0]
    assert report.binding[0] == 0  # the left anchor, there all along, still binds


# ---------------------------------------------------------------------------------------------- clear refusals


def test_refusals_name_the_input():
    picture, _ = still()
    grey = np.full((6, 64, 96, 3), 128, np.uint8)
    with pytest.raises(JudgeError, match="no face found in any of the 6 frames"):
        at.evaluate(grey, fps=24)
    with pytest.raises(JudgeError, match="fps: frames in memory carry no frame rate"):
        at.evaluate(grey)
    with pytest.raises(JudgeError, match=r"voice 2 lasts 1\.00 s but the video 2\.50 s"):
        at.evaluate(VIDEO, audio=[LEFT, (np.zeros(16000, np.float32), 16000)])
    with pytest.raises(JudgeError, match="at most 2 face.*but 3 people"):
        at.evaluate(np.repeat(picture[None], 2, 0), audio=[None, None, (np.ones(9000) * 0.1, 16000)], fps=24)
    with pytest.raises(JudgeError, match="video: file not found"):
        at.evaluate(JUDGE / "missing.mp4")
    with pytest.raises(JudgeError, match="one track per person"):
        at.evaluate(VIDEO, audio=str(LEFT))


def test_the_command_line_refuses_in_one_line(tmp_path, capsys):
    code = main(["evaluate", str(tmp_path / "none.mp4"), "--audio", str(LEFT)])
    assert code == 2 and capsys.readouterr().err.startswith("error: VIDEO: file not found")
    code = main(["evaluate", str(VIDEO), "--audio", str(LEFT), "--audio", str(tmp_path / "x.wav")])
    assert code == 2 and "--audio 2: file not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- speaking intervals


def test_speaking_intervals_in_every_format():
    reference = json.loads(SPEAKING.read_text())
    expected = [[[1.16, 2.5]], [[0.0, 1.16]]]
    assert read_speaking(SPEAKING, 2, "conversation.mp4") == expected  # the reference's whole file
    assert read_speaking(reference["conversation.mp4"], 2) == expected  # one clip's left/right entry
    assert read_speaking(json.dumps(expected), 2) == expected  # per person, as JSON text
    assert read_speaking({"1": [[0, 1]], "3": [[2, 3]]}, 3) == [[[0.0, 1.0]], [], [[2.0, 3.0]]]
    with pytest.raises(JudgeError, match="no entry for other.mp4 \\(it has conversation.mp4\\)"):
        read_speaking(SPEAKING, 2, "other.mp4")
    with pytest.raises(JudgeError, match="person 2, interval 1 is \\[3, 1\\]"):
        read_speaking([[[0, 1]], [[3, 1]]], 2)
    with pytest.raises(JudgeError, match="one interval list per person \\(3\\), got 2"):
        read_speaking(expected, 3)


def test_speaking_from_loudness_finds_the_bursts():
    rate, fps = 16000, 24.0
    voice = np.zeros(3 * rate, np.float32)
    t = np.arange(rate // 2) / rate
    for start in (0.5, 1.2, 2.5):  # 0.5 s bursts; the 0.2 s pause between the first two is bridged
        voice[int(start * rate) : int(start * rate) + rate // 2] = 0.3 * np.sin(2 * np.pi * 220 * t)
    spans = speaking_from_loudness(loudness(voice, 72, fps), fps)
    assert len(spans) == 2
    assert spans[0] == pytest.approx([0.5, 1.7], abs=0.05) and spans[1] == pytest.approx([2.5, 3.0], abs=0.05)


def test_voices_are_placed_on_the_clip_timeline_as_the_clip_node_places_them():
    left, right = voices()
    one, two = left[:14400], right[-14400:]  # the two 0.9 s voices
    pad = place_voices([(one, 16000), (two, 16000)], [0.0, 0.5], "pad", 48, 24.0)
    assert [p[0].shape[0] for p in pad] == [32000, 32000]
    assert np.array_equal(pad[1][0][8000 : 8000 + 14400], two) and not pad[1][0][:8000].any()
    turns = place_voices([(one, 16000), None, (two, 16000)], [0.0, 0.0, 0.0], "concat", 48, 24.0)
    start = round(22 / 24 * 16000)  # the first turn: ceil(0.9 s * 24) = 22 frames, as people.speakers counts it
    assert turns[1] is None and not turns[2][0][:start].any()
    assert np.array_equal(turns[2][0][start : start + 14400], two)


def test_people_keep_their_numbers_when_they_cross(monkeypatch):
    """Two faces swap sides over 9 frames (one passes above the other): each keeps the number it started with."""
    from anytalker_core.judge import tracks
    from anytalker_core.judge.video import open_video
    from anytalker_core.people.faces import Face

    def boxes(t):  # face A from x=10 to 90 at the top, face B from 90 to 10 lower down
        return [(10.0 + 10 * t, 0.0, 40.0 + 10 * t, 30.0), (90.0 - 10 * t, 40.0, 120.0 - 10 * t, 70.0)]

    calls = iter(range(9))

    def detected(rgb, **kw):
        return types.SimpleNamespace(backend="test", faces=[Face(b, b, 0.9) for b in boxes(next(calls))])

    monkeypatch.setattr(tracks, "find_faces", detected)
    monkeypatch.setattr(tracks, "face_mesh", lambda rgb, box, eyes: (np.zeros((468, 2), np.float32), 1.0))
    followed = tracks.track_faces(open_video(np.zeros((9, 80, 160, 3), np.uint8), fps=24), 2)
    assert followed.boxes[0, 0, 0] == 10 and followed.boxes[8, 0, 0] == 90  # person 1 started on the left
    assert followed.boxes[0, 1, 0] == 90 and followed.boxes[8, 1, 0] == 10

"""The clip's timeline: the 4n+1 rule, latent frames and their spans, the nearest valid counts in errors."""

from __future__ import annotations

import pytest

from anytalker_core import timeline


def test_latent_frames_and_their_video_frames():
    assert [timeline.latent_frames(f) for f in (1, 5, 9, 81)] == [1, 2, 3, 21]
    assert [timeline.video_frames(t) for t in (1, 2, 3, 21)] == [1, 5, 9, 81]
    assert timeline.video_span(0) == slice(0, 1) and timeline.video_span(1) == slice(1, 5)
    assert timeline.video_span(20) == slice(77, 81)
    covered = [f for j in range(21) for f in range(81)[timeline.video_span(j)]]
    assert covered == list(range(81))  # every video frame belongs to exactly one latent frame


def test_a_window_starting_inside_the_clip_starts_on_its_latent_frame():
    assert timeline.latent_span(12, 17) == slice(3, 8)
    with pytest.raises(ValueError, match="multiple of 4"):
        timeline.latent_span(10, 17)


def test_rounding_and_errors_name_the_nearest_valid_counts():
    assert (timeline.round_down(44), timeline.round_up(44)) == (41, 45)
    assert (timeline.round_down(41), timeline.round_up(41)) == (41, 41)
    assert timeline.check_frames(81, "length") == 81
    with pytest.raises(ValueError, match=r"length is 8; .*4n\+1.*: use 5 or 9"):
        timeline.check_frames(8, "length")
    with pytest.raises(ValueError, match=r"window is 1; .*at least 5.*: use 5"):
        timeline.check_frames(1, "window", minimum=5)
    with pytest.raises(TypeError, match="motion_frames is '5'"):
        timeline.check_frames("5", "motion_frames", error=TypeError)
    assert timeline.frame_at(1.5) == 36 and timeline.seconds(48) == 2.0

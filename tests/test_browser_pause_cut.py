"""A browser client that keeps recording through a pause (followPause: false, as an app that ignores pauses
would): the server cuts the paused media at finalize, and the file is one piece without the pause. Chromium
sends a keyframe only every ~100 frames, so this also shows the video after the cut is bridged, not frozen."""
from __future__ import annotations

from datetime import datetime

from tests.media import probe
from tests.recorder_page import host_says, start_recorder, stop_and_finalize

PAUSE_SECONDS = 3.0


def test_media_recorded_through_a_pause_is_cut_by_the_server(page, live_server, worker, api):
    recording_id = start_recorder(page, live_server, api, followPause=False)
    page.wait_for_timeout(2500)
    host_says(api, "pause")
    page.wait_for_timeout(PAUSE_SECONDS * 1000)
    host_says(api, "resume")
    page.wait_for_timeout(2500)
    result, body = stop_and_finalize(page, api, recording_id)
    paused = seconds_between(body["pauses"][0]["pausedAt"], body["pauses"][0]["resumedAt"])
    got = probe(api.output_path(body, "alice"))
    assert abs(got.duration - (result["recorded"] - paused)) <= 0.25, (got.duration, paused, result)
    assert got.decode_errors == 0
    assert abs(got.ends["audio"] - got.ends["video"]) <= 0.15, got.ends  # video goes on after the cut (bridged)
    times = sorted(got.video_times)
    assert max(b - a for a, b in zip(times, times[1:])) <= 0.2  # and is not frozen until a keyframe


def seconds_between(start: str, end: str) -> float:
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()

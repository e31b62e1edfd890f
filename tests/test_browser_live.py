"""Live finalize on Chromium's own MediaRecorder WebM (issue 15): the chunks a real browser uploads are folded
window by window into a file equal, packet for packet, to the batch remux of the same chunks."""
from __future__ import annotations

import pytest

from tests.test_live import batch, packets
from workers.live import step as live_step
from workers.live.state import LiveStates
from workers.live.step import LiveFinalizer
from workers.resources import Resources
from workers.settings import get_settings

RECORD = """async ({ token, recordingId, seconds, mimeType }) => {
  const { Recorder } = await import("/static/tapedeck-recorder.js");
  const camera = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
  const video = new Recorder({ token, recordingId, participantId: "alice", timeslice: 250, stream: camera,
                               mimeType: mimeType || undefined, videoKeyFrameIntervalDuration: 1000 });
  const errors = [];
  video.addEventListener("error", (e) => errors.push(e.detail));
  await video.start();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const result = await video.stop();
  camera.getTracks().forEach((t) => t.stop());
  return { video: result, errors, mimeType: video.mimeType };
}"""


@pytest.mark.parametrize("mime_type, container", [("", "video/webm"), ("video/mp4", "video/mp4")],
                         ids=["webm", "fragmented-mp4"])
def test_chromium_recording_folded_live_equals_batch(page, live_server, api, staging_backend, monkeypatch, tmp_path,
                                                     mime_type, container):
    """Chromium's default WebM, and its video/mp4 (fragmented MP4, as Safari sends; VP9/Opus here)."""
    if staging_backend != "local":
        pytest.skip("live finalize folds chunks on local staging only")
    recording_id = api.start().get_json()["recordingId"]
    page.goto(f"{live_server.url}/demo")
    result = page.evaluate(RECORD, {"token": api.token("alice", "participant"), "recordingId": recording_id,
                                    "seconds": 8, "mimeType": mime_type})
    # MP4 fragments end at keyframes (the timeslice is not honoured): one a second here, asked for
    assert result["errors"] == [] and result["video"]["failed"] == 0, result
    assert result["video"]["sent"] >= (6 if mime_type else 10) and result["mimeType"].startswith(container), result
    resources = Resources.build(get_settings())
    live = LiveFinalizer(resources.store, resources.staging, LiveStates(resources.redis))
    monkeypatch.setattr(live_step, "MAX_WINDOW_CHUNKS", 3 if mime_type else 12)  # 3 s steps, as while recording
    positions = []
    for _ in range(result["video"]["sent"]):
        live.step(recording_id)
        state = live.states.get(recording_id, "alice")
        assert state is None or state.failed is None, state
        positions.append(state.position if state else -1)
    live.step(recording_id, final=True)
    assert len(set(positions)) >= 2, positions  # several windows, not one at the end
    done = live.result(recording_id, "alice", ["video"])
    assert done is not None
    assert packets(done.path) == packets(batch(live, recording_id, tmp_path))
    assert {t.media_type for t in done.tracks} == {"audio", "video"}

"""A page reload loses nothing: chunks wait in IndexedDB until acknowledged; Recorder.resume uploads what the server lacks."""
from __future__ import annotations

from tests.media import probe

RUN = """async ({ token, recordingId, seconds, resume }) => {
  const { Recorder } = await import("/static/tapedeck-recorder.js");
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
  const options = { token, recordingId, participantId: "alice", stream, timeslice: 500, store: true,
                    maxRetries: 1000, initialBackoffMs: 200, maxBackoffMs: 400 };
  const rec = resume ? await Recorder.resume(options) : new Recorder(options);
  window.rec = rec;
  if (!resume) await rec.start();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  if (!resume) return { produced: rec.stats.produced, sent: rec.stats.sent };
  const summary = await rec.stop();
  const { ChunkStore } = await import("/static/tapedeck-store.js");
  const left = await new ChunkStore(recordingId, "alice", "video").list();
  return { summary, recovered: rec.recovered, startedAt: rec.startedAt, stoppedAt: rec.stoppedAt, left: left.length };
}"""


def test_a_reload_mid_recording_loses_nothing(page, live_server, worker, api, room):
    recording_id = api.start().get_json()["recordingId"]
    token = api.token("alice", "participant")
    page.goto(f"{live_server.url}/demo")
    held_back = lambda route: route.abort() if int(route.request.url.rsplit("/", 1)[1]) >= 2 else route.continue_()
    page.route("**/participants/alice/video/chunks/*", held_back)  # the server never acknowledges 2 and later
    first = page.evaluate(RUN, {"token": token, "recordingId": recording_id, "seconds": 3, "resume": False})
    assert first["produced"] >= 4 and first["sent"] == 2, first
    page.reload()  # while they are still held back: the old page's retries die with it
    page.unroute("**/participants/alice/video/chunks/*")
    second = page.evaluate(RUN, {"token": token, "recordingId": recording_id, "seconds": 3, "resume": True})
    assert second["recovered"] >= first["produced"] - 2, (first, second)
    s = second["summary"]
    assert s["failed"] == 0 and s["dropped"] == 0 and s["queued"] == 0, s
    assert second["left"] == 0, second  # the store is cleaned after acknowledgement
    api.stop()

    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    video = body["participants"]["alice"]["video"]
    assert video["missingCount"] == 0, video
    assert len([o for o in body["outputs"] if o.get("participantId", "alice") == "alice"]) == 1, body["outputs"]
    result = probe(api.output_path(body, "alice"))
    assert result.frames.get("video", 0) > 0 and result.frames.get("audio", 0) > 0, result.frames
    assert result.duration >= 5.0, result.duration  # both runs are in it: ~3 s before the reload, ~3 s after

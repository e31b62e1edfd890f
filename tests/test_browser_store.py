"""The IndexedDB store is bounded: with the server unreachable it never holds more than maxStoredBytes of
unacknowledged chunks (store_full for the ones it refuses), and it is emptied once the uploads go through."""
from __future__ import annotations

MAX_STORED = 100_000

RECORD = """async ({ token, recordingId, maxStoredBytes }) => {
  const { Recorder } = await import("/static/tapedeck-recorder.js");
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
  const rec = new Recorder({ token, recordingId, participantId: "alice", stream, timeslice: 300, store: true,
                             maxStoredBytes, maxRetries: 1000, initialBackoffMs: 200, maxBackoffMs: 400 });
  window.rec = rec;
  window.errors = [];
  rec.addEventListener("error", (e) => window.errors.push(e.detail));
  await rec.start();
  await new Promise((r) => setTimeout(r, 3000));
  return { produced: rec.stats.produced, sent: rec.stats.sent };
}"""

STORED = """async (recordingId) => {
  const { ChunkStore } = await import("/static/tapedeck-store.js");
  const kept = await new ChunkStore(recordingId, "alice", "video").list();
  return { count: kept.length, bytes: kept.reduce((n, c) => n + c.size, 0),
           full: window.errors.filter((e) => e.code === "store_full").length,
           other: window.errors.filter((e) => e.code !== "store_full") };
}"""

FINISH = """async () => {
  const summary = await window.rec.stop();
  window.rec.options.stream.getTracks().forEach((t) => t.stop());
  return summary;
}"""


def test_the_store_stays_within_its_bound_and_is_emptied_after_upload(page, live_server, worker, api):
    recording_id = api.start().get_json()["recordingId"]
    page.goto(f"{live_server.url}/demo")
    page.route("**/participants/alice/video/chunks/*", lambda route: route.abort())  # nothing is acknowledged
    first = page.evaluate(RECORD, {"token": api.token("alice", "participant"), "recordingId": recording_id,
                                   "maxStoredBytes": MAX_STORED})
    assert first["sent"] == 0 and first["produced"] >= 6, first
    held = page.evaluate(STORED, recording_id)
    assert held["full"] >= 1 and held["other"] == [], held  # the bound was reached: later chunks are refused
    assert 0 < held["bytes"] <= MAX_STORED, held

    page.unroute("**/participants/alice/video/chunks/*")
    summary = page.evaluate(FINISH)
    assert summary["failed"] == 0 and summary["dropped"] == 0 and summary["queued"] == 0, summary
    after = page.evaluate(STORED, recording_id)
    assert (after["count"], after["bytes"]) == (0, 0), after  # acknowledged chunks are forgotten

    api.stop()
    body = api.wait_final(recording_id)
    assert body["state"] == "completed", body
    assert body["participants"]["alice"]["video"]["missingCount"] == 0

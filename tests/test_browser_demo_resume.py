"""The demo page offers Recorder.resume after a reload: the chunks the server never acknowledged are uploaded
from IndexedDB, recording goes on in the same recording, and the host gets one whole file."""
from __future__ import annotations

from tests.media import probe
from tests.test_browser import PAGE_SUMMARY, record_for, wait_for_phase

CHUNKS = "**/participants/host/video/chunks/*"


def test_the_demo_resumes_after_a_reload_with_nothing_lost(page, live_server, worker, api, room):
    page.goto(f"{live_server.url}/demo?room={room}&name=host&role=host")
    assert page.locator("#resume").is_hidden()
    page.route(CHUNKS, lambda route: route.abort() if int(route.request.url.rsplit("/", 1)[1]) >= 1
               else route.continue_())  # the server never acknowledges chunk 1 and later
    record_for(page, 3.5)
    recording_id = page.evaluate("tapedeck.recordingId")
    before = page.evaluate("tapedeck.recorder.stats")
    assert before["produced"] >= 3 and before["sent"] == 1, before
    page.reload()
    page.unroute(CHUNKS)

    page.wait_for_selector("#resume", state="visible")
    page.click("#resume")
    page.wait_for_function("tapedeck.phase === 'recording'", timeout=20_000)
    assert page.evaluate("tapedeck.recordingId") == recording_id
    assert page.evaluate("tapedeck.recorder.recovered") >= before["produced"] - 1
    page.wait_for_timeout(2500)
    page.click("#stop")
    assert wait_for_phase(page, "completed", "failed") == "completed", page.evaluate(PAGE_SUMMARY)
    info = page.evaluate(PAGE_SUMMARY)
    assert info["errors"] == [] and info["summary"]["failed"] == 0 and info["summary"]["dropped"] == 0, info
    assert page.locator("#resume").is_hidden()  # finished: nothing left to resume

    body = api.status(recording_id).get_json()
    assert body["participants"]["host"]["video"]["missingCount"] == 0, body["participants"]
    assert len(body["outputs"]) == 1
    result = probe(api.output_path(body, "host"))
    assert result.frames.get("video", 0) > 0 and result.frames.get("audio", 0) > 0, result.frames
    assert result.duration >= 5.0, result.duration  # ~3.5 s before the reload and ~2.5 s after it


def test_resume_of_a_recording_that_ended_meanwhile_cleans_the_store(page, live_server, worker, api, room):
    page.goto(f"{live_server.url}/demo?room={room}&name=host&role=host")
    page.route(CHUNKS, lambda route: route.abort() if int(route.request.url.rsplit("/", 1)[1]) >= 1
               else route.continue_())
    record_for(page, 2.5)
    recording_id = page.evaluate("tapedeck.recordingId")
    page.reload()
    page.unroute(CHUNKS)
    kept = f"""async () => {{
      const {{ ChunkStore }} = await import("/static/tapedeck-store.js");
      return (await new ChunkStore("{recording_id}", "host", "video").list()).length;
    }}"""
    assert page.evaluate(kept) >= 1  # unacknowledged chunks survived the reload
    assert api.stop().status_code == 202  # the host ends it from elsewhere before this tab resumes
    assert api.wait_final(recording_id)["state"] in ("completed", "failed")

    page.wait_for_selector("#resume", state="visible")
    page.click("#resume")
    page.wait_for_function("tapedeck.phase === 'idle'", timeout=20_000)
    assert "nothing to resume" in page.inner_text("#message")
    assert page.evaluate(kept) == 0  # nobody can take them any more: the store is emptied
    assert page.locator("#resume").is_hidden()


def test_a_new_tab_joining_again_uploads_what_a_closed_tab_kept(page, live_server, worker, api, room):
    """A closed tab leaves no sessionStorage, only its kept chunks: joining again from a new tab sends them."""
    assert api.start().status_code == 201
    url = f"{live_server.url}/demo?room={room}&name=bob&role=participant"
    page.goto(url)
    page.route("**/participants/bob/video/chunks/*", lambda route: route.abort()
               if int(route.request.url.rsplit("/", 1)[1]) >= 1 else route.continue_())
    record_for(page, 3.5)
    recording_id = page.evaluate("tapedeck.recordingId")
    before = page.evaluate("tapedeck.recorder.stats")
    assert before["produced"] >= 3 and before["sent"] == 1, before
    context = page.context
    page.close()  # the tab is gone, and its sessionStorage with it

    tab = context.new_page()
    tab.goto(url)
    assert tab.locator("#resume").is_hidden()  # nothing to offer a reload: this is a new tab
    record_for(tab, 2.5)
    assert tab.evaluate("tapedeck.recordingId") == recording_id
    assert (tab.evaluate("tapedeck.recorder.recovered") or 0) >= before["produced"] - 1, "the kept chunks were not resent"
    assert api.stop().status_code == 202
    assert wait_for_phase(tab, "completed", "failed") == "completed", tab.evaluate(PAGE_SUMMARY)
    body = api.status(recording_id).get_json()
    assert body["participants"]["bob"]["video"]["missingCount"] == 0, body["participants"]
    result = probe(api.output_path(body, "bob"))
    assert result.frames.get("video", 0) > 0 and result.duration >= 5.0, (result.frames, result.duration)
    kept = f"""async () => {{
      const {{ ChunkStore }} = await import("/static/tapedeck-store.js");
      return (await new ChunkStore("{recording_id}", "bob", "video").list()).length;
    }}"""
    assert tab.evaluate(kept) == 0

// The demo page: a host starts/stops a room's recording and records its own camera; a participant
// joins the room's current recording. Both upload with tapedeck-recorder.js and watch the status
// through the SSE endpoint (polling GET /video-calls/recordings/<id> when EventSource fails).
import { Recorder } from "./tapedeck-recorder.js";
import { ChunkStore } from "./tapedeck-store.js";
import { WebRtcPeer } from "./tapedeck-webrtc.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const FINAL = ["completed", "failed"];
const LIVE = ["recording", "paused"];
const SESSION_KEY = "tapedeck.session";

/** Everything the page knows, on window for debugging (and the browser tests). */
const demo = (window.tapedeck = {
  phase: "idle", role: "host", room: "", sub: "", token: "", apiBase: "",
  recordingId: null, recorder: null, stream: null, status: null, statusSource: null, summary: null, errors: [],
});

class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    Object.assign(this, { status, code: error.code, extra: error });
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const role = () => document.querySelector('input[name="role"]:checked').value;

function formatBytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

function setPhase(phase, message = "") {
  demo.phase = document.body.dataset.phase = phase;
  const busy = !["idle", "completed", "failed", "error"].includes(phase);
  $("start").disabled = busy;
  $("stop").disabled = !["waiting", "recording"].includes(phase);
  $("pause").hidden = demo.role !== "host";
  $("pause").disabled = phase !== "recording";
  $("resume").hidden = busy || !savedSession();
  for (const el of document.querySelectorAll("#session input, #session textarea, #session select")) el.disabled = busy;
  if (message || !busy) $("message").textContent = message;
  $("message").classList.toggle("error", phase === "error" || phase === "failed");
}

function log(text, kind = "") {
  const item = document.createElement("li");
  item.className = kind;
  const time = new Date().toLocaleTimeString([], { hour12: false });
  item.innerHTML = `<time>${time}</time>`;
  item.append(document.createTextNode(text));
  $("log").querySelector(".empty")?.remove();
  $("log").prepend(item);
  while ($("log").children.length > 9) $("log").lastChild.remove();
}

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: `Bearer ${demo.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`${demo.apiBase}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, json.error || {});
  return json;
}

async function obtainToken(room, sub, wanted) {
  const pasted = $("token").value.trim();
  if (pasted) return pasted;
  const res = await fetch("/dev/token", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ room, sub, role: wanted }),
  });
  if (res.status === 404) {
    throw new Error("This server is not in development mode: paste a token under Advanced " +
      "(flask --app app token --room … --sub … --role …).");
  }
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, json.error || {});
  return json.token;
}

/** Long calls outlive tokens: fetch a new one before this one expires and hand it to the recorder. */
async function refreshToken() {
  if ($("token").value.trim()) return false; // a pasted token: whoever pasted it refreshes it
  demo.token = await obtainToken(demo.room, demo.sub, demo.role);
  demo.recorder?.setToken(demo.token);
  log("token refreshed");
  scheduleRefresh();
  return true;
}

function scheduleRefresh() {
  clearTimeout(demo.refreshTimer);
  const exp = claimsOf(demo.token)?.exp;
  if (!exp) return;
  const delay = Math.max(5_000, (exp * 1000 - Date.now()) * 0.8); // at 80% of its remaining life
  demo.refreshTimer = setTimeout(() => refreshToken().catch((err) => log(`token: ${err.message}`, "warn")), delay);
}
demo.refreshToken = refreshToken;

// ---- recording status: SSE, with polling as the fallback -------------------------------------

let watch = { es: null, timer: null, id: null };

function watchStatus(recordingId) {
  unwatch();
  watch.id = recordingId;
  const poll = async () => {
    try { renderStatus(await api(`/video-calls/recordings/${recordingId}`)); } catch (err) { log(`status: ${err.message}`, "warn"); }
    if (watch.id === recordingId && !FINAL.includes(demo.status?.state)) {
      watch.timer = setTimeout(poll, watch.es ? 2500 : 1000);
    }
  };
  if (typeof EventSource !== "undefined") {
    const url = `${demo.apiBase}/video-calls/recordings/${recordingId}/events?token=${encodeURIComponent(demo.token)}`;
    const es = (watch.es = new EventSource(url));
    demo.statusSource = "sse";
    const onEvent = (e) => applyEvent(JSON.parse(e.data));
    es.addEventListener("state", onEvent);
    es.addEventListener("progress", onEvent);
    es.addEventListener("error", () => {
      if (es.readyState === EventSource.CLOSED && watch.es === es) {
        watch.es = null; // no event stream here (or it refused us): poll every second instead
        demo.statusSource = "polling";
        $("source").textContent = "polling";
      }
    });
    $("source").textContent = "live (SSE)";
  } else {
    demo.statusSource = "polling";
    $("source").textContent = "polling";
  }
  poll();
}

function unwatch() {
  watch.es?.close();
  clearTimeout(watch.timer);
  watch = { es: null, timer: null, id: null };
}

function applyEvent(event) {
  const previous = demo.status?.state;
  demo.status = { ...(demo.status || {}), state: event.state ?? previous, progress: event.progress ?? demo.status?.progress ?? 0 };
  renderState(demo.status);
  if (FINAL.includes(event.state)) {
    watch.es?.close();
    watch.es = null;
    api(`/video-calls/recordings/${watch.id}`).then(renderStatus, (err) => log(`status: ${err.message}`, "warn"));
  }
}

function renderState({ state, progress }) {
  if (state && state !== demo.loggedState) log(`recording is ${(demo.loggedState = state)}`);
  $("state").textContent = state || "none";
  $("state").dataset.state = state || "none";
  const pct = state === "completed" ? 100 : Math.round((progress || 0) * 100);
  $("progress-bar").style.width = `${pct}%`;
  $("progress-bar").dataset.state = state || "none";
  $("progress-text").textContent = LIVE.includes(state) ? `${state}…` : `${pct}%`;
  followPause(state);
  if (demo.role === "participant" && !LIVE.includes(state) && demo.phase === "recording") {
    log("the host stopped the recording");
    stopRecording();
  }
}

/** The recorder pauses and resumes itself with the recording (followPause); the page only relabels its button. */
function followPause(state) {
  if (!demo.recorder || demo.phase !== "recording") return;
  $("pause").textContent = state === "paused" ? "Resume" : "Pause";
}

async function togglePause() {
  const action = demo.status?.state === "paused" ? "resume" : "pause";
  try {
    const body = await api(`/video-calls/${demo.room}/recording/${action}`, { method: "POST" });
    applyEvent({ state: body.state }); // the event stream says the same a moment later
  } catch (err) {
    log(`${action}: ${err.message}`, "bad");
  }
}

function renderStatus(body) {
  demo.status = body;
  renderState(body);
  const rows = Object.entries(body.participants || {}).map(([pid, p]) => {
    const streams = ["video", "audio"].map((k) => p[k]).filter(Boolean);
    const sum = (f) => streams.reduce((n, s) => n + (s[f] || 0), 0);
    const missing = sum("missingCount");
    return `<tr><td>${escapeHtml(pid)}</td><td>${sum("chunks")}</td><td>${formatBytes(sum("bytes"))}</td>` +
      `<td class="${missing ? "bad" : "good"}">${missing}</td></tr>`;
  });
  $("participants").hidden = rows.length === 0;
  $("participants").tBodies[0].innerHTML = rows.join("");
  if (FINAL.includes(body.state)) finish(body);
}

function finish(body) {
  unwatch();
  if (demo.final?.recordingId === body.recordingId) return;
  demo.final = body;
  const outputs = body.outputs || [];
  $("outputs").innerHTML = outputs.map((o, i) => `
    <li class="output">
      <div class="output-name"><strong>${escapeHtml(o.participantId)}</strong>
        <span>${(o.durationSeconds ?? 0).toFixed(1)} s · ${formatBytes(o.bytes || 0)} · ${escapeHtml(o.format || "")}</span></div>
      <button type="button" class="btn small ghost" data-play="${i}">Play</button>
      <a class="btn small" href="${escapeHtml(o.url || "#")}" download>Download</a>
    </li>`).join("");
  for (const button of $("outputs").querySelectorAll("[data-play]")) {
    button.addEventListener("click", () => play(outputs[Number(button.dataset.play)]));
  }
  playOwn(body);
  log(body.state === "completed" ? `completed: ${outputs.length} file${outputs.length === 1 ? "" : "s"}`
    : `failed: ${body.error || "see the worker log"}`, body.state === "completed" ? "ok" : "bad");
  if (!["starting", "waiting", "recording", "stopping"].includes(demo.phase)) showFinal();
}

function showFinal() {
  const body = demo.final;
  if (body.state === "completed") setPhase("completed", "Recording finished. Play it here or download the file.");
  else setPhase("failed", `Recording failed: ${body.error || "see the worker log"}`);
}

/** Once the camera is off, the stage plays this participant's file (or the first one). */
function playOwn(body) {
  const outputs = body.outputs || [];
  const mine = outputs.find((o) => o.participantId === demo.sub) || outputs[0];
  if (mine && !demo.stream?.active) play(mine);
}

function play(output) {
  $("playback").src = output.url;
  $("playback").hidden = false;
  document.body.classList.add("playback-on");
  $("who-badge").textContent = `${output.participantId} · finished recording`;
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// ---- a reload loses nothing: the session is kept for this tab, the chunks in IndexedDB ----------

/** What this tab records, kept across a reload (sessionStorage: this tab only, gone when it closes). */
function saveSession() {
  const { room, sub, role, apiBase, recordingId, token } = demo;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({ room, sub, role, apiBase, recordingId, token, upload: $("upload").value }));
}

function savedSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    return null;
  }
}

function forgetSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

/** After a reload: Recorder.resume uploads the kept chunks the server lacks, then records on. */
async function resumeSaved() {
  const saved = savedSession();
  if (!saved) return;
  Object.assign(demo, { errors: [], final: null, status: null, summary: null, loggedState: null,
    room: saved.room, sub: saved.sub, role: saved.role, apiBase: saved.apiBase, recordingId: saved.recordingId });
  $("room").value = saved.room;
  $("name").value = saved.sub;
  $("upload").value = saved.upload;
  setPhase("starting", "Resuming…");
  try {
    const exp = claimsOf(saved.token)?.exp;
    demo.token = exp && exp * 1000 > Date.now() + 5000 ? saved.token : await obtainToken(saved.room, saved.sub, saved.role);
    const status = await api(`/video-calls/recordings/${saved.recordingId}`);
    if (!LIVE.includes(status.state)) {
      forgetSession();
      await new ChunkStore(saved.recordingId, saved.sub, "video").clear(); // nobody can take them any more
      return setPhase("idle", `Recording ${saved.recordingId} is ${status.state}: nothing to resume.`);
    }
    $("who-badge").textContent = `${demo.sub} · ${demo.role} · live`;
    demo.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
    $("preview").srcObject = demo.stream;
    document.body.classList.add("camera-on");
    $("recording-id").textContent = demo.recordingId;
    watchStatus(demo.recordingId);
    await record(true);
  } catch (err) {
    releaseCamera();
    log(err.message, "bad");
    setPhase("error", err.message);
  }
}

// ---- the recorder -----------------------------------------------------------------------------

async function findRecording() {
  setPhase("waiting", "Waiting for the host to start recording…");
  while (demo.phase === "waiting") {
    try {
      const current = await api(`/video-calls/${demo.room}/recording`);
      if (LIVE.includes(current.state)) return current.recordingId;
    } catch (err) {
      if (err.code !== "not_recording") throw err;
    }
    await sleep(1500);
  }
  return null;
}

async function startRecording(event) {
  event.preventDefault();
  if (!$("session").reportValidity()) return;
  $("outputs").innerHTML = "";
  $("playback").removeAttribute("src");
  $("playback").hidden = true;
  document.body.classList.remove("playback-on");
  Object.assign(demo, { errors: [], final: null, status: null, summary: null, loggedState: null });
  setPhase("starting", "Starting…");
  try {
    demo.apiBase = $("api").value.trim().replace(/\/+$/, "");
    demo.token = await obtainToken($("room").value.trim(), $("name").value.trim(), role());
    const claims = claimsOf(demo.token) || {};
    Object.assign(demo, { room: claims.room, sub: claims.sub, role: claims.role });
    $("who-badge").textContent = `${demo.sub} · ${demo.role} · live`;
    demo.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true });
    $("preview").srcObject = demo.stream;
    document.body.classList.add("camera-on");
    demo.recordingId = demo.role === "host" ? await hostStart() : await findRecording();
    if (!demo.recordingId) return;
    $("recording-id").textContent = demo.recordingId;
    watchStatus(demo.recordingId);
    await record();
  } catch (err) {
    releaseCamera();
    log(err.message, "bad");
    setPhase("error", err.message);
  }
}

async function hostStart() {
  try {
    const format = $("format").value;  // empty: the server's RECORDING_FORMAT
    const started = await api(`/video-calls/${demo.room}/recording/start`, { method: "POST", body: format ? { format } : {} });
    log(`started ${started.recordingId}`);
    return started.recordingId;
  } catch (err) {
    if (err.code !== "already_recording") throw err;
    log("joined the room's recording in progress");
    return err.extra.recordingId;
  }
}

async function record(resume = false) {
  if ($("upload").value === "webrtc") return recordWebRtc();
  // Every chunk is kept in IndexedDB until acknowledged (store: true), so a reload can resume.
  const options = { baseUrl: demo.apiBase, token: demo.token, recordingId: demo.recordingId, participantId: demo.sub,
    stream: demo.stream, timeslice: 1000, upload: $("upload").value, store: true };
  let rec;
  // A tab that closed (or a browser that did not restore it) leaves its unacknowledged chunks in IndexedDB and
  // nothing in sessionStorage: joining the same recording again as the same participant resumes from them.
  const leftover = !resume && (await new ChunkStore(demo.recordingId, demo.sub, "video").list().catch(() => [])).length > 0;
  if (resume || leftover) {
    rec = demo.recorder = await Recorder.resume(options);
    log(`resumed ${resume ? "after a reload" : "what an earlier tab kept"}: ${rec.recovered} kept chunk${rec.recovered === 1 ? "" : "s"} to upload, recording on at ${rec.options.firstSequence}`);
  } else {
    // Rejoining (a second tab) continues the sequence numbers, as the API asks (docs/api.md).
    const status = await api(`/video-calls/recordings/${demo.recordingId}`);
    const lastSequence = status.participants?.[demo.sub]?.video?.lastSequence;
    const firstSequence = lastSequence == null ? 0 : lastSequence + 1;
    if (firstSequence) log(`rejoining: continuing at chunk ${firstSequence}`);
    rec = demo.recorder = new Recorder({ ...options, firstSequence });
  }
  saveSession();
  rec.addEventListener("progress", (e) => showUpload(e.detail));
  rec.addEventListener("retry", (e) => {
    const d = e.detail;
    log(`chunk ${d.sequence}: ${d.status ? `HTTP ${d.status}` : d.message}, retry in ${(d.delayMs / 1000).toFixed(1)} s`, "warn");
    showUpload(rec.summary(), `Retrying chunk ${d.sequence}…`);
  });
  rec.addEventListener("error", (e) => {
    demo.errors.push(e.detail);
    log(`upload: ${e.detail.message}`, "bad");
  });
  rec.addEventListener("ended", () => log("the server stopped taking chunks"));
  rec.addEventListener("pause", () => log("paused: the recorder holds still"));
  rec.addEventListener("resume", () => log("resumed"));
  if (!resume && !leftover) await rec.start();  // Recorder.resume started it already
  scheduleRefresh();
  $("mime").textContent = rec.mimeType;
  $("invite").hidden = demo.role !== "host";
  const invite = new URL(location.href);
  invite.search = new URLSearchParams({ room: demo.room, role: "participant", ...(demo.apiBase && { api: demo.apiBase }) });
  $("invite-link").href = $("invite-link").textContent = invite.href;
  setPhase("recording", demo.role === "host" ? "Recording. Stop when you are done." : "Recording. The host decides when it ends.");
  tick();
}

/** WebRTC mode: the server records this page's peer connection; the page keeps a Recorder-shaped handle. */
async function recordWebRtc() {
  const peer = new WebRtcPeer({ baseUrl: demo.apiBase || location.origin, room: demo.room, token: demo.token,
                                stream: demo.stream });
  peer.addEventListener("error", (e) => { demo.errors.push(e.detail); log(`webrtc: ${e.detail.message}`, "bad"); });
  peer.addEventListener("state", (e) => log(`peer connection ${e.detail.state}`));
  await peer.connect();
  const summary = { queued: 0, sent: 0, bytes: 0, retries: 0, failed: 0, dropped: 0 };
  demo.recorder = {
    peer, mimeType: "WebRTC: VP8 + Opus, recorded by the server", startedAt: Date.now(), stoppedAt: null,
    setToken: (token) => peer.setToken(token),
    summary: () => summary,
    async stop() {
      this.stoppedAt = Date.now();
      if (demo.role === "host") { // stop first, so the server stores this peer's last segment as the final one
        await api(`/video-calls/${demo.room}/recording/stop`, { method: "POST" });
        await sleep(1500);
      }
      await peer.close();
      return summary;
    },
  };
  scheduleRefresh();
  $("mime").textContent = demo.recorder.mimeType;
  $("upload-text").textContent = "Streaming to the server over WebRTC";
  $("invite").hidden = demo.role !== "host";
  setPhase("recording", demo.role === "host" ? "Recording over WebRTC. Stop when you are done." : "Recording over WebRTC.");
  tick();
}

function tick() {
  const rec = demo.recorder;
  if (!rec || !rec.startedAt) return;
  const seconds = Math.floor(((rec.stoppedAt || Date.now()) - rec.startedAt) / 1000);
  $("elapsed").textContent = `${String(Math.floor(seconds / 60)).padStart(2, "0")}:${String(seconds % 60).padStart(2, "0")}`;
  if (demo.phase === "recording") setTimeout(tick, 250);
}

function showUpload(s, note) {
  $("queued").textContent = s.queued;
  $("sent").textContent = s.sent;
  $("bytes").textContent = formatBytes(s.bytes);
  $("retries").textContent = s.retries;
  const dot = $("upload-dot");
  dot.dataset.state = note ? "retrying" : s.failed || s.dropped ? "error" : s.queued ? "busy" : "ok";
  $("upload-text").textContent = note || (s.queued ? `Uploading ${s.queued} chunk${s.queued === 1 ? "" : "s"}…` : "All chunks uploaded");
}

async function stopRecording() {
  if (demo.phase === "waiting") {
    releaseCamera();
    return setPhase("idle", "");
  }
  const rec = demo.recorder;
  if (!rec || demo.phase !== "recording") return;
  clearTimeout(demo.refreshTimer);
  setPhase("stopping", "Uploading the last chunks…");
  demo.summary = await rec.stop();
  forgetSession();
  showUpload(demo.summary);
  releaseCamera();
  if (demo.final) playOwn(demo.final);
  log(`uploaded ${demo.summary.sent} chunks (${formatBytes(demo.summary.bytes)})`, "ok");
  try {
    if (demo.role === "host") {
      const stopped = await api(`/video-calls/${demo.room}/recording/stop`, { method: "POST" });
      log(`stopped the recording (task ${String(stopped.taskId).slice(0, 8)})`);
    }
    if (demo.final) showFinal();
    else setPhase("finalizing", "Finalizing: the worker is remuxing the file…");
  } catch (err) {
    log(err.message, "bad");
    setPhase("error", err.message);
  }
}

function releaseCamera() {
  demo.stream?.getTracks().forEach((t) => t.stop());
  $("preview").srcObject = null;
  document.body.classList.remove("camera-on");
}

function init() {
  $("room").value = params.get("room") || `room-${Math.random().toString(36).slice(2, 8)}`;
  $("name").value = params.get("name") || (params.get("role") === "participant" ? `guest-${Math.random().toString(36).slice(2, 6)}` : "host");
  const wanted = params.get("role") === "participant" ? "participant" : "host";
  document.querySelector(`input[name="role"][value="${wanted}"]`).checked = true;
  $("api").value = params.get("api") || "";
  $("token").value = params.get("token") || "";
  $("upload").value = ["json", "webrtc"].includes(params.get("upload")) ? params.get("upload") : "put";
  if (params.get("api") || params.get("token")) $("advanced").open = true;
  const syncRole = () => { $("start").textContent = role() === "host" ? "Start recording" : "Join recording"; };
  for (const input of document.querySelectorAll('input[name="role"]')) input.addEventListener("change", syncRole);
  $("token").addEventListener("input", () => {
    const claims = claimsOf($("token").value.trim());
    if (!claims) return;
    $("room").value = claims.room || $("room").value;
    $("name").value = claims.sub || $("name").value;
    document.querySelector(`input[name="role"][value="${claims.role === "host" ? "host" : "participant"}"]`).checked = true;
    syncRole();
  });
  syncRole();
  $("session").addEventListener("submit", startRecording);
  $("stop").addEventListener("click", stopRecording);
  $("pause").addEventListener("click", togglePause);
  $("resume").addEventListener("click", resumeSaved);
  setPhase("idle", savedSession() ? "This tab was recording when it reloaded: Resume uploads what it kept and records on." : "");
}

init();

/**
 * tapedeck-recorder.js: record a MediaStream with MediaRecorder (timeslice mode) and upload
 * each chunk to tapedeck with its sequence and timestamp. One ES module, no dependencies.
 *
 *   import { Recorder } from "/static/tapedeck-recorder.js";
 *   const rec = new Recorder({ baseUrl, token, recordingId, participantId, stream, timeslice: 1000 });
 *   rec.addEventListener("progress", (e) => e.detail);   // {queued, sent, bytes, ...}
 *   rec.addEventListener("error", (e) => e.detail);      // {code, message, sequence?, fatal}
 *   await rec.start();
 *   const summary = await rec.stop();                    // after every chunk is acknowledged
 *
 * Delivery: chunks wait in a bounded in-memory queue and are uploaded in sequence order, at
 * most `concurrency` at a time and never two copies of one sequence at once. Network errors,
 * 429 and 5xx are retried with exponential backoff and jitter (a Retry-After header wins);
 * while one chunk backs off, the whole queue waits. Any other 4xx, including 409
 * sequence_conflict, is permanent for that chunk ("error" event, chunk dropped). 409
 * not_recording means the recording is over: uploading stops for good. pause()/resume() follow the
 * recording's paused state (MediaRecorder pauses, so nothing is made or sent meanwhile).
 *
 * Queue bound (maxQueueBytes): when a new chunk does not fit, the oldest waiting chunks are
 * dropped (an "error" event with code "queue_full" each) until it does, except the recorder's
 * first chunk, which carries the container header that every later chunk needs.
 *
 * Integrity: each chunk carries its SHA-256 (Web Crypto), as the `Repr-Digest` header on the PUT
 * (RFC 9530) or the `sha256` field in JSON. A 400 checksum_mismatch (bytes damaged on the way)
 * is resent once from the same Blob; a second mismatch is permanent for that chunk.
 *
 * Long calls: setToken(token) swaps the bearer token for every later upload (tokens expire).
 *
 * End of stream: stop() sends the recorder's last chunk as final (`Tapedeck-Final: true`, or
 * `final: true` in JSON), so once every stream declared its end the server finalizes at once.
 */

/** Container/codec preferences for camera streams, best first (the server reads WebM/Matroska). */
import { ChunkStore } from "./tapedeck-store.js";

export const VIDEO_MIME_TYPES = [
  "video/webm;codecs=vp9,opus",
  "video/webm;codecs=vp8,opus",
  "video/webm;codecs=vp9",
  "video/webm;codecs=vp8",
  "video/webm",
  "video/x-matroska;codecs=avc1,opus",
  "video/webm;codecs=h264,opus",
];

/** Preferences for audio-only streams. */
export const AUDIO_MIME_TYPES = ["audio/webm;codecs=opus", "audio/webm"];

const DEFAULTS = {
  baseUrl: "",
  timeslice: 1000,
  type: "video",
  upload: "put",
  mimeType: undefined,
  videoBitsPerSecond: undefined,
  audioBitsPerSecond: undefined,
  firstSequence: 0,
  concurrency: 2,
  maxQueueBytes: 64 * 1024 * 1024,
  maxRetries: 10,
  initialBackoffMs: 500,
  maxBackoffMs: 15000,
  requestTimeoutMs: 30000,
  fetch: undefined,
  store: false,
  maxStoredBytes: 256 * 1024 * 1024,
};

/** The first mimeType of `candidates` this browser records, or "" (the browser's default). */
export function pickMimeType(candidates) {
  if (typeof MediaRecorder === "undefined" || !MediaRecorder.isTypeSupported) return "";
  return candidates.find((t) => MediaRecorder.isTypeSupported(t)) || "";
}

/** Milliseconds a Retry-After header asks for (seconds or an HTTP date), or null. */
export function retryAfterMs(value, now = Date.now()) {
  if (value == null || value.trim() === "") return null;
  if (/^\d+(\.\d+)?$/.test(value.trim())) return Math.round(parseFloat(value) * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/** Backoff before attempt `attempt + 1`: doubling from `initial`, capped, with equal jitter. */
export function backoffMs(attempt, initial, max, random = Math.random) {
  const ceiling = Math.min(max, initial * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** Hex and base64 of the SHA-256 of `blob`, so the server can refuse damaged bytes. */
export async function sha256Of(blob) {
  const bytes = new Uint8Array(await crypto.subtle.digest("SHA-256", await blob.arrayBuffer()));
  let hex = "", binary = "";
  for (const b of bytes) {
    hex += b.toString(16).padStart(2, "0");
    binary += String.fromCharCode(b);
  }
  return { hex, base64: btoa(binary) };
}

function blobToBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onerror = () => reject(reader.error);
    // The data URL's MIME type contains commas: split at ";base64,", never at the first comma.
    reader.onload = () => resolve(String(reader.result).split(";base64,")[1] || "");
    reader.readAsDataURL(blob);
  });
}

async function errorBody(response) {
  try {
    const body = await response.json();
    return body && body.error ? body.error : {};
  } catch {
    return {};
  }
}

export class Recorder extends EventTarget {
  constructor(options) {
    super();
    const o = { ...DEFAULTS, ...options };
    for (const name of ["token", "recordingId", "participantId", "stream"]) {
      if (!o[name]) throw new TypeError(`Recorder: option "${name}" is required`);
    }
    if (!["video", "audio"].includes(o.type)) throw new TypeError('Recorder: type must be "video" or "audio"');
    if (!["put", "json"].includes(o.upload)) throw new TypeError('Recorder: upload must be "put" or "json"');
    this.options = o;
    this.baseUrl = String(o.baseUrl).replace(/\/+$/, "");
    const audioOnly = o.type === "audio" || o.stream.getVideoTracks().length === 0;
    /** The mimeType asked for; replaced by the recorder's actual one once it exists. */
    this.mimeType = o.mimeType ?? pickMimeType(audioOnly ? AUDIO_MIME_TYPES : VIDEO_MIME_TYPES);
    this.state = "inactive"; // inactive → recording → stopping → stopped
    this.startedAt = null;
    this.stoppedAt = null;
    this.ended = false; // the server said not_recording: nothing more is uploaded
    this._fetch = o.fetch || globalThis.fetch.bind(globalThis);
    this._recorder = null;
    this._nextSequence = o.firstSequence;
    this._chunkStartedAt = null;
    this._waiting = []; // entries not in flight, sorted by sequence
    this._inFlight = new Map(); // sequence → entry
    this._pausedUntil = 0;
    this._timer = null;
    this._idleWaiters = [];
    this._stopPromise = null;
    this._tail = undefined; // while stopping: the newest chunk, held back until it is known to be the last
    this.stats = { produced: 0, sent: 0, bytes: 0, retries: 0, failed: 0, dropped: 0, duplicates: 0, resent: 0 };
    this._onOnline = () => this._wake();
    this._store = o.store ? new ChunkStore(o.recordingId, o.participantId, o.type) : null;
    this._storedBytes = 0;
    this._storeOps = new Set();
  }

  /** After a reload or crash: upload the kept chunks the server lacks, then record on with a new header. */
  static async resume(options) {
    const rec = new Recorder({ ...options, store: true });
    const kept = await rec._store.list();
    const held = await rec._heldRanges();
    const isHeld = (seq) => held.some(([first, last]) => seq >= first && seq <= last);
    let highest = -1;
    for (const [, last] of held) highest = Math.max(highest, last);
    for (const chunk of kept) {
      highest = Math.max(highest, chunk.sequence);
      if (isHeld(chunk.sequence)) {
        rec._track(rec._store.delete(chunk.sequence));
        continue;
      }
      rec._storedBytes += chunk.size;
      rec._insert({ ...chunk, attempts: 0, digest: null, mismatches: 0, stored: Promise.resolve() });
    }
    rec._nextSequence = rec.options.firstSequence = Math.max(rec.options.firstSequence, highest + 1);
    rec.recovered = rec._waiting.length;
    await rec.start();
    rec._pump();
    return rec;
  }

  async _heldRanges() {
    const o = this.options;
    const path = ["recordings", o.recordingId, "participants", o.participantId, o.type, "chunks"]
      .map((part) => encodeURIComponent(part)).join("/");
    const ranges = [];
    let after = null;
    for (let page = 0; page < 1000; page++) {
      const token = typeof o.token === "function" ? await o.token() : o.token;
      const query = after == null ? "" : `?after=${encodeURIComponent(after)}`;
      const res = await this._fetch(`${this.baseUrl}/video-calls/${path}${query}`,
        { headers: { Authorization: `Bearer ${token}` } });
      if (!res.ok) throw new Error(`Recorder.resume: HTTP ${res.status} asking which chunks the server holds`);
      const body = await res.json();
      ranges.push(...body.ranges);
      if (body.next == null) break;
      after = body.next;
    }
    return ranges;
  }

  _track(promise) {
    const op = promise.catch((err) => this._emitError("store_error", (err && err.message) || String(err)));
    this._storeOps.add(op);
    op.finally(() => this._storeOps.delete(op));
  }

  _keep(entry) {
    if (!this._store) return;
    if (this._storedBytes + entry.size > this.options.maxStoredBytes) {
      this._emitError("store_full", `chunk ${entry.sequence} is not kept for a reload: ` +
        `${this.options.maxStoredBytes} bytes of unacknowledged chunks are stored`, { sequence: entry.sequence });
      return;
    }
    this._storedBytes += entry.size;
    entry.stored = this._store.put(entry);
    this._track(entry.stored);
  }

  _forget(entry) {
    if (!entry.stored) return;
    this._track(entry.stored.then(() => this._store.delete(entry.sequence)).then(() => {
      this._storedBytes -= entry.size;
    }));
    entry.stored = null;
  }

  /** The next sequence number this recorder will use (a restarted recorder continues from it). */
  get nextSequence() {
    return this._nextSequence;
  }

  /** Use `token` (a string or an async function) for every upload from now on: long calls outlive tokens. */
  setToken(token) {
    if (!token) throw new TypeError("Recorder.setToken: a token is required");
    this.options.token = token;
  }

  /** Pause MediaRecorder (the recording was paused): no media is made, so nothing is sent until resume(). */
  pause() {
    if (this.state !== "recording" || !this._recorder || this._recorder.state !== "recording") return false;
    this._recorder.pause();
    this.state = "paused";
    this._emit("pause", {});
    return true;
  }

  /** Resume MediaRecorder in the same container: the output continues without a gap. */
  resume() {
    if (this.state !== "paused" || !this._recorder || this._recorder.state !== "paused") return false;
    this._recorder.resume();
    this.state = "recording";
    this._chunkStartedAt = Date.now();
    this._emit("resume", {});
    return true;
  }

  /** Start MediaRecorder in timeslice mode; resolves once it records. */
  start() {
    if (this.state !== "inactive") return Promise.reject(new Error(`Recorder: cannot start when ${this.state}`));
    const settings = { mimeType: this.mimeType || undefined };
    if (this.options.videoBitsPerSecond) settings.videoBitsPerSecond = this.options.videoBitsPerSecond;
    if (this.options.audioBitsPerSecond) settings.audioBitsPerSecond = this.options.audioBitsPerSecond;
    let recorder;
    try {
      recorder = new MediaRecorder(this.options.stream, settings); // NotSupportedError for a bad mimeType
    } catch (err) {
      return Promise.reject(err);
    }
    this._recorder = recorder;
    this.mimeType = recorder.mimeType || this.mimeType;
    recorder.addEventListener("dataavailable", (e) => this._onData(e.data));
    recorder.addEventListener("error", (e) => {
      const error = e.error || {};
      this._emitError("recorder_error", error.message || "MediaRecorder failed", { fatal: true });
    });
    recorder.addEventListener("stop", () => {
      this.stoppedAt = Date.now();
      if (this.state === "recording" || this.state === "paused") this.stop(); // the stream ended on its own (e.g. camera unplugged)
    });
    globalThis.addEventListener?.("online", this._onOnline);
    return new Promise((resolve, reject) => {
      recorder.addEventListener("start", () => {
        this.state = "recording";
        this.startedAt = this._chunkStartedAt = Date.now();
        this.mimeType = recorder.mimeType || this.mimeType;
        this._emit("start", { mimeType: this.mimeType });
        resolve();
      }, { once: true });
      try {
        recorder.start(this.options.timeslice);
      } catch (err) {
        reject(err);
      }
    });
  }

  /** Stop recording and upload every pending chunk; resolves with a summary once the queue is empty. */
  stop() {
    if (this._stopPromise) return this._stopPromise;
    this._stopPromise = (async () => {
      this.state = "stopping";
      const recorder = this._recorder;
      if (recorder && recorder.state !== "inactive") {
        // The last "dataavailable" fires before "stop": hold each chunk back until the next one or "stop"
        // shows whether it is the last, which is then sent as final (the server need not wait out its grace).
        this._tail = null;
        await new Promise((resolve) => {
          recorder.addEventListener("stop", resolve, { once: true });
          recorder.stop();
        });
        const last = this._tail;
        this._tail = undefined;
        if (last) {
          last.final = true;
          this._queue(last);
        }
      }
      await this._idle();
      await Promise.allSettled([...this._storeOps]);
      this.state = "stopped";
      globalThis.removeEventListener?.("online", this._onOnline);
      clearTimeout(this._timer);
      const summary = this.summary();
      this._emit("flushed", summary);
      return summary;
    })();
    return this._stopPromise;
  }

  /** Counters and the current queue: what "progress" and "flushed" carry. */
  summary() {
    let queuedBytes = 0;
    for (const entry of this._waiting) queuedBytes += entry.size;
    for (const entry of this._inFlight.values()) queuedBytes += entry.size;
    return {
      queued: this._waiting.length + this._inFlight.size,
      inFlight: this._inFlight.size,
      queuedBytes,
      ...this.stats,
      ended: this.ended,
      mimeType: this.mimeType,
      durationMs: this.startedAt ? (this.stoppedAt || Date.now()) - this.startedAt : 0,
    };
  }

  _onData(blob) {
    const now = Date.now();
    const timestamp = this._chunkStartedAt ?? now;
    this._chunkStartedAt = now;
    if (!blob || blob.size === 0) return;
    const entry = { sequence: this._nextSequence++, blob, size: blob.size, timestamp, attempts: 0,
                    digest: null, mismatches: 0 };
    this.stats.produced += 1;
    if (this.ended) {
      this.stats.dropped += 1;
      return this._progress();
    }
    this._keep(entry);
    if (this._tail !== undefined) {
      const previous = this._tail;
      this._tail = entry;
      if (previous) this._queue(previous);
      return this._progress();
    }
    this._queue(entry);
  }

  _queue(entry) {
    this._makeRoom(entry);
    this._insert(entry);
    this._progress();
    this._pump();
  }

  _makeRoom(incoming) {
    const limit = this.options.maxQueueBytes;
    let used = this.summary().queuedBytes;
    const header = this.options.firstSequence;
    while (used + incoming.size > limit) {
      const victim = this._waiting.find((e) => e.sequence !== header);
      if (!victim) break; // only the header (and chunks in flight) left: keep them, accept the overshoot
      this._waiting.splice(this._waiting.indexOf(victim), 1);
      used -= victim.size;
      this.stats.dropped += 1;
      this._emitError("queue_full", `upload queue is full (${limit} bytes): dropped chunk ${victim.sequence}`,
        { sequence: victim.sequence, bytes: victim.size });
    }
  }

  _insert(entry) {
    const at = this._waiting.findIndex((e) => e.sequence > entry.sequence);
    if (at === -1) this._waiting.push(entry);
    else this._waiting.splice(at, 0, entry);
  }

  _wake() {
    this._pausedUntil = 0;
    this._pump();
  }

  _pump() {
    clearTimeout(this._timer);
    this._timer = null;
    if (this.ended) return this._settle();
    const wait = this._pausedUntil - Date.now();
    if (wait > 0) {
      this._timer = setTimeout(() => this._pump(), wait);
      return;
    }
    while (this._inFlight.size < this.options.concurrency && this._waiting.length) {
      const entry = this._waiting.shift();
      this._inFlight.set(entry.sequence, entry); // the only copy of this sequence on the wire
      this._send(entry);
    }
    this._settle();
  }

  async _send(entry) {
    entry.attempts += 1;
    let outcome;
    try {
      outcome = await this._classify(await this._request(entry));
    } catch (err) {
      outcome = { kind: "retry", code: "network_error", message: (err && err.message) || String(err), delay: null };
    }
    this._inFlight.delete(entry.sequence);
    if (outcome.kind === "ok") {
      this._forget(entry);
      this.stats.sent += 1;
      this.stats.bytes += entry.size;
      if (outcome.duplicate) this.stats.duplicates += 1;
    } else if (outcome.kind === "retry") {
      this._retry(entry, outcome);
    } else if (outcome.code === "checksum_mismatch" && entry.mismatches++ === 0) {
      this.stats.resent += 1; // damaged on the way: the Blob is intact, send it again
      this._insert(entry);
      this._emit("retry", { sequence: entry.sequence, attempt: entry.attempts, delayMs: 0,
        status: outcome.status, code: outcome.code, message: outcome.message });
    } else if (outcome.kind === "ended") {
      this._end(entry, outcome);
    } else {
      this.stats.failed += 1;
      this._emitError(outcome.code, outcome.message, { sequence: entry.sequence, status: outcome.status });
    }
    this._progress();
    this._pump();
  }

  _retry(entry, outcome) {
    if (this.ended) {
      this.stats.dropped += 1; // the recording is over: nobody will take it
      return;
    }
    if (entry.attempts > this.options.maxRetries) {
      this.stats.failed += 1;
      this._emitError("retries_exhausted",
        `chunk ${entry.sequence} failed ${entry.attempts} times (last: ${outcome.message})`,
        { sequence: entry.sequence, status: outcome.status });
      return;
    }
    const { initialBackoffMs, maxBackoffMs } = this.options;
    const delay = outcome.delay ?? backoffMs(entry.attempts, initialBackoffMs, maxBackoffMs);
    this.stats.retries += 1;
    this._pausedUntil = Math.max(this._pausedUntil, Date.now() + delay);
    this._insert(entry);
    this._emit("retry", { sequence: entry.sequence, attempt: entry.attempts, delayMs: delay,
      status: outcome.status ?? null, code: outcome.code, message: outcome.message });
  }

  _end(entry, outcome) {
    if (this.ended) {
      this.stats.dropped += 1; // a second chunk that was on the wire when the first 409 came back
      return;
    }
    this.ended = true;
    const abandoned = 1 + this._waiting.length;
    this.stats.dropped += abandoned;
    this._waiting = [];
    this._emitError("not_recording", outcome.message || "the recording is not accepting chunks",
      { sequence: entry.sequence, status: 409, fatal: true, dropped: abandoned });
    this._emit("ended", { sequence: entry.sequence });
    if (this._recorder && this._recorder.state !== "inactive") this.stop();
  }

  async _request(entry) {
    const o = this.options;
    const token = typeof o.token === "function" ? await o.token() : o.token;
    entry.digest ??= await sha256Of(entry.blob);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), o.requestTimeoutMs);
    try {
      if (o.upload === "json") {
        const body = {
          recordingId: o.recordingId, participantId: o.participantId, type: o.type,
          sequence: entry.sequence, timestamp: entry.timestamp, chunk: await blobToBase64(entry.blob),
          sha256: entry.digest.hex, ...(entry.final && { final: true }),
        };
        return await this._fetch(`${this.baseUrl}/video-calls/chunks/upload`, {
          method: "POST", signal: controller.signal, body: JSON.stringify(body),
          headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        });
      }
      const path = ["recordings", o.recordingId, "participants", o.participantId, o.type, "chunks", entry.sequence]
        .map((part) => encodeURIComponent(part)).join("/");
      return await this._fetch(`${this.baseUrl}/video-calls/${path}`, {
        method: "PUT", signal: controller.signal, body: entry.blob,
        headers: {
          Authorization: `Bearer ${token}`, "Content-Type": "application/octet-stream",
          "Tapedeck-Timestamp": String(entry.timestamp), "Repr-Digest": `sha-256=:${entry.digest.base64}:`,
          ...(entry.final && { "Tapedeck-Final": "true" }),
        },
      });
    } finally {
      clearTimeout(timer);
    }
  }

  async _classify(response) {
    const status = response.status;
    if (response.ok) {
      let body = {};
      try { body = await response.json(); } catch { /* an empty 2xx is still an acknowledgement */ }
      return { kind: "ok", duplicate: Boolean(body.duplicate) };
    }
    const error = await errorBody(response);
    const message = error.message || `HTTP ${status}`;
    if (status === 429 || status >= 500) {
      return { kind: "retry", status, code: error.code || `http_${status}`, message,
        delay: retryAfterMs(response.headers.get("Retry-After")) };
    }
    if (status === 409 && error.code === "not_recording") return { kind: "ended", status, message };
    return { kind: "permanent", status, code: error.code || `http_${status}`, message };
  }

  _idle() {
    return new Promise((resolve) => {
      this._idleWaiters.push(resolve);
      this._settle();
    });
  }

  _settle() {
    if (this._waiting.length || this._inFlight.size) return;
    if (this._recorder && this._recorder.state !== "inactive") return;
    const waiters = this._idleWaiters.splice(0);
    for (const resolve of waiters) resolve();
  }

  _progress() {
    this._emit("progress", this.summary());
  }

  _emitError(code, message, extra = {}) {
    this._emit("error", { code, message, fatal: false, ...extra });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

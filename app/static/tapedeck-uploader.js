/**
 * tapedeck-uploader.js: the upload queue of tapedeck-recorder.js. Chunks wait in a bounded
 * in-memory queue and go out in sequence order, at most `concurrency` at a time and never two
 * copies of one sequence at once; network errors, 429 and 5xx are retried with backoff (a
 * Retry-After header wins) while the whole queue waits; other 4xx are permanent for the chunk;
 * 409 not_recording ends the upload for good. Knows nothing of MediaRecorder or IndexedDB.
 */

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

/** Uploads a recorder's chunks. `hooks`: emit(type, detail), progress(), acknowledged(entry), ended(), producing(). */
export class Uploader {
  constructor(options, baseUrl, hooks) {
    this.options = options; // the recorder's own object: setToken() reaches every later request
    this.baseUrl = baseUrl;
    this.hooks = hooks;
    this.fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this.ended = false; // the server said not_recording: nothing more is uploaded
    this.waiting = []; // entries not in flight, sorted by sequence
    this.inFlight = new Map(); // sequence → entry
    this.stats = { produced: 0, sent: 0, bytes: 0, retries: 0, failed: 0, dropped: 0, duplicates: 0, resent: 0 };
    this._pausedUntil = 0;
    this._timer = null;
    this._idleWaiters = [];
  }

  /** Queue a new chunk (making room by dropping the oldest waiting ones) and send what may go. */
  add(entry) {
    this._makeRoom(entry);
    this.insert(entry);
    this.pump();
  }

  /** Put an entry in its place by sequence, without sending yet. */
  insert(entry) {
    const at = this.waiting.findIndex((e) => e.sequence > entry.sequence);
    if (at === -1) this.waiting.push(entry);
    else this.waiting.splice(at, 0, entry);
  }

  queuedBytes() {
    let bytes = 0;
    for (const entry of this.waiting) bytes += entry.size;
    for (const entry of this.inFlight.values()) bytes += entry.size;
    return bytes;
  }

  /** Retry now (the browser came back online). */
  wake() {
    this._pausedUntil = 0;
    this.pump();
  }

  /** Resolves once nothing waits, nothing is on the wire and the recorder makes no more chunks. */
  idle() {
    return new Promise((resolve) => {
      this._idleWaiters.push(resolve);
      this.settle();
    });
  }

  close() {
    clearTimeout(this._timer);
  }

  pump() {
    clearTimeout(this._timer);
    this._timer = null;
    if (this.ended) return this.settle();
    const wait = this._pausedUntil - Date.now();
    if (wait > 0) {
      this._timer = setTimeout(() => this.pump(), wait);
      return;
    }
    while (this.inFlight.size < this.options.concurrency && this.waiting.length) {
      const entry = this.waiting.shift();
      this.inFlight.set(entry.sequence, entry); // the only copy of this sequence on the wire
      this._send(entry);
    }
    this.settle();
  }

  settle() {
    if (this.waiting.length || this.inFlight.size || this.hooks.producing()) return;
    for (const resolve of this._idleWaiters.splice(0)) resolve();
  }

  _makeRoom(incoming) {
    const limit = this.options.maxQueueBytes;
    let used = this.queuedBytes();
    const header = this.options.firstSequence;
    while (used + incoming.size > limit) {
      const victim = this.waiting.find((e) => e.sequence !== header);
      if (!victim) break; // only the header (and chunks in flight) left: keep them, accept the overshoot
      this.waiting.splice(this.waiting.indexOf(victim), 1);
      used -= victim.size;
      this.stats.dropped += 1;
      this._error("queue_full", `upload queue is full (${limit} bytes): dropped chunk ${victim.sequence}`,
        { sequence: victim.sequence, bytes: victim.size });
    }
  }

  async _send(entry) {
    entry.attempts += 1;
    let outcome;
    try {
      outcome = await this._classify(await this._request(entry));
    } catch (err) {
      outcome = { kind: "retry", code: "network_error", message: (err && err.message) || String(err), delay: null };
    }
    this.inFlight.delete(entry.sequence);
    if (outcome.kind === "ok") {
      this.hooks.acknowledged(entry);
      this.stats.sent += 1;
      this.stats.bytes += entry.size;
      if (outcome.duplicate) this.stats.duplicates += 1;
    } else if (outcome.kind === "retry") {
      this._retry(entry, outcome);
    } else if (outcome.code === "checksum_mismatch" && entry.mismatches++ === 0) {
      this.stats.resent += 1; // damaged on the way: the Blob is intact, send it again
      this.insert(entry);
      this.hooks.emit("retry", { sequence: entry.sequence, attempt: entry.attempts, delayMs: 0,
        status: outcome.status, code: outcome.code, message: outcome.message });
    } else if (outcome.kind === "ended") {
      this._end(entry, outcome);
    } else {
      this.stats.failed += 1;
      this._error(outcome.code, outcome.message, { sequence: entry.sequence, status: outcome.status });
    }
    this.hooks.progress();
    this.pump();
  }

  _retry(entry, outcome) {
    if (this.ended) {
      this.stats.dropped += 1; // the recording is over: nobody will take it
      return;
    }
    if (entry.attempts > this.options.maxRetries) {
      this.stats.failed += 1;
      this._error("retries_exhausted", `chunk ${entry.sequence} failed ${entry.attempts} times (last: ${outcome.message})`,
        { sequence: entry.sequence, status: outcome.status });
      return;
    }
    const { initialBackoffMs, maxBackoffMs } = this.options;
    const delay = outcome.delay ?? backoffMs(entry.attempts, initialBackoffMs, maxBackoffMs);
    this.stats.retries += 1;
    this._pausedUntil = Math.max(this._pausedUntil, Date.now() + delay);
    this.insert(entry);
    this.hooks.emit("retry", { sequence: entry.sequence, attempt: entry.attempts, delayMs: delay,
      status: outcome.status ?? null, code: outcome.code, message: outcome.message });
  }

  _end(entry, outcome) {
    if (this.ended) {
      this.stats.dropped += 1; // a second chunk that was on the wire when the first 409 came back
      return;
    }
    this.ended = true;
    const abandoned = 1 + this.waiting.length;
    this.stats.dropped += abandoned;
    this.waiting = [];
    this._error("not_recording", outcome.message || "the recording is not accepting chunks",
      { sequence: entry.sequence, status: 409, fatal: true, dropped: abandoned });
    this.hooks.emit("ended", { sequence: entry.sequence });
    this.hooks.ended();
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
        return await this.fetch(`${this.baseUrl}/video-calls/chunks/upload`, {
          method: "POST", signal: controller.signal, body: JSON.stringify(body),
          headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        });
      }
      const path = ["recordings", o.recordingId, "participants", o.participantId, o.type, "chunks", entry.sequence]
        .map((part) => encodeURIComponent(part)).join("/");
      return await this.fetch(`${this.baseUrl}/video-calls/${path}`, {
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

  _error(code, message, extra = {}) {
    this.hooks.emit("error", { code, message, fatal: false, ...extra });
  }
}

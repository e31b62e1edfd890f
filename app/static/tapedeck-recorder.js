/**
 * tapedeck-recorder.js: record a MediaStream with MediaRecorder (timeslice mode) and upload
 * each chunk to tapedeck with its sequence and timestamp. ES modules, no dependencies: this one
 * drives MediaRecorder, tapedeck-uploader.js sends the queue, tapedeck-store.js keeps chunks in
 * IndexedDB (store: true) until acknowledged.
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
 * recording's paused state (MediaRecorder pauses, so nothing is made or sent meanwhile); with
 * followPause (the default) the recorder calls them itself from the recording's event stream
 * (tapedeck-follow.js).
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
import { StateFollower } from "./tapedeck-follow.js";
import { ChunkStore, KeptChunks } from "./tapedeck-store.js";
import { Uploader } from "./tapedeck-uploader.js";

export { backoffMs, retryAfterMs, sha256Of } from "./tapedeck-uploader.js";

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
  videoKeyFrameIntervalDuration: undefined,
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
  followPause: true,
};

/** The first mimeType of `candidates` this browser records, or "" (the browser's default). */
export function pickMimeType(candidates) {
  if (typeof MediaRecorder === "undefined" || !MediaRecorder.isTypeSupported) return "";
  return candidates.find((t) => MediaRecorder.isTypeSupported(t)) || "";
}

/** Records a MediaStream in timeslice mode; each chunk goes to the Uploader (and the store, if asked). */
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
    this.state = "inactive"; // inactive → recording ⇄ paused → stopping → stopped
    this.startedAt = null;
    this.stoppedAt = null;
    this._fetch = o.fetch || globalThis.fetch.bind(globalThis);
    this._recorder = null;
    this._nextSequence = o.firstSequence;
    this._chunkStartedAt = null;
    this._stopPromise = null;
    this._follower = null;
    this._tail = undefined; // while stopping: the newest chunk, held back until it is known to be the last
    this._onOnline = () => this._uploader.wake();
    this._kept = o.store
      ? new KeptChunks(new ChunkStore(o.recordingId, o.participantId, o.type), o.maxStoredBytes,
        (code, message, extra) => this._emitError(code, message, extra))
      : null;
    this._uploader = new Uploader(o, this.baseUrl, {
      emit: (type, detail) => this._emit(type, detail),
      progress: () => this._progress(),
      acknowledged: (entry) => this._kept?.forget(entry),
      ended: () => { if (this._recorder && this._recorder.state !== "inactive") this.stop(); },
      producing: () => Boolean(this._recorder && this._recorder.state !== "inactive") || Boolean(this._tail),
    });
    this.stats = this._uploader.stats;
  }

  /** The server said not_recording: nothing more is uploaded. */
  get ended() {
    return this._uploader.ended;
  }

  /** After a reload or crash: upload the kept chunks the server lacks, then record on with a new header. */
  static async resume(options) {
    const rec = new Recorder({ ...options, store: true });
    const kept = await rec._kept.store.list();
    const held = await rec._heldRanges();
    const isHeld = (seq) => held.some(([first, last]) => seq >= first && seq <= last);
    let highest = -1;
    for (const [, last] of held) highest = Math.max(highest, last);
    for (const chunk of kept) {
      highest = Math.max(highest, chunk.sequence);
      if (isHeld(chunk.sequence)) {
        rec._kept.drop(chunk.sequence);
        continue;
      }
      const entry = { ...chunk, attempts: 0, digest: null, mismatches: 0 };
      rec._kept.adopt(entry);
      rec._uploader.insert(entry);
    }
    rec._nextSequence = rec.options.firstSequence = Math.max(rec.options.firstSequence, highest + 1);
    rec.recovered = rec._uploader.waiting.length;
    await rec.start();
    rec._uploader.pump();
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

  /** The next sequence number this recorder will use (a restarted recorder continues from it). */
  get nextSequence() {
    return this._nextSequence;
  }

  /** Use `token` (a string or an async function) for every upload from now on: long calls outlive tokens. */
  setToken(token) {
    if (!token) throw new TypeError("Recorder.setToken: a token is required");
    this.options.token = token;
    this._follower?.open(); // an event stream ends when its token expires: reconnect with the new one
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
    if (this.options.videoKeyFrameIntervalDuration) {  // ms; browsers without it ignore it
      settings.videoKeyFrameIntervalDuration = this.options.videoKeyFrameIntervalDuration;
    }
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
        this._follow();
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
      this._follower?.close();
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
      await this._uploader.idle();
      await this._kept?.settled();
      this.state = "stopped";
      globalThis.removeEventListener?.("online", this._onOnline);
      this._uploader.close();
      const summary = this.summary();
      this._emit("flushed", summary);
      return summary;
    })();
    return this._stopPromise;
  }

  /** Counters and the current queue: what "progress" and "flushed" carry. */
  summary() {
    const { waiting, inFlight } = this._uploader;
    return {
      queued: waiting.length + inFlight.size,
      inFlight: inFlight.size,
      queuedBytes: this._uploader.queuedBytes(),
      ...this.stats,
      ended: this.ended,
      mimeType: this.mimeType,
      durationMs: this.startedAt ? (this.stoppedAt || Date.now()) - this.startedAt : 0,
    };
  }

  /** Pause and resume with the recording (followPause): the host's pause leaves no gap and sends nothing. */
  _follow() {
    if (!this.options.followPause || this._follower) return;
    const o = this.options;
    const url = `${this.baseUrl}/video-calls/recordings/${encodeURIComponent(o.recordingId)}/events`;
    this._follower = new StateFollower(url, async () => (typeof o.token === "function" ? o.token() : o.token), (state) => {
      if (state === "paused") this.pause();
      else if (state === "recording") this.resume();
    });
    this._follower.open().catch((err) => this._emitError("follow_error", (err && err.message) || String(err)));
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
    this._kept?.keep(entry);
    if (this._tail !== undefined) {
      const previous = this._tail;
      this._tail = entry;
      if (previous) this._queue(previous);
      return this._progress();
    }
    this._queue(entry);
  }

  _queue(entry) {
    this._uploader.add(entry);
    this._progress();
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

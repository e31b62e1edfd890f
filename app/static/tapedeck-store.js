/**
 * tapedeck-store.js: chunks kept in IndexedDB until the server acknowledged them, so a page reload,
 * a crash or a closed laptop loses nothing (Recorder.resume uploads what the server lacks).
 */
const DB = "tapedeck";
const STORE = "chunks";

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** One recorder stream's chunks: key [recordingId, participantId, type, sequence]. */
export class ChunkStore {
  constructor(recordingId, participantId, type) {
    this.prefix = [recordingId, participantId, type];
    this._db = null;
  }

  async _open() {
    if (this._db) return this._db;
    const open = indexedDB.open(DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE);
    this._db = await request(open);
    return this._db;
  }

  async _run(mode, work) {
    const tx = (await this._open()).transaction(STORE, mode);
    const result = await request(work(tx.objectStore(STORE)));
    await new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = tx.onabort = () => reject(tx.error);
    });
    return result;
  }

  /** Keep a chunk until it is acknowledged. */
  put(entry) {
    const value = { sequence: entry.sequence, blob: entry.blob, size: entry.size, timestamp: entry.timestamp };
    return this._run("readwrite", (s) => s.put(value, [...this.prefix, entry.sequence]));
  }

  /** Forget an acknowledged chunk. */
  delete(sequence) {
    return this._run("readwrite", (s) => s.delete([...this.prefix, sequence]));
  }

  /** Every kept chunk of this stream, in sequence order. */
  list() {
    return this._run("readonly", (s) => s.getAll(this._range()));
  }

  /** Forget every kept chunk of this stream (the recording is over: nothing can take them any more). */
  clear() {
    return this._run("readwrite", (s) => s.delete(this._range()));
  }

  _range() {
    return IDBKeyRange.bound([...this.prefix, 0], [...this.prefix, Number.MAX_SAFE_INTEGER]);
  }
}

/**
 * The recorder's side of the store: keeps each chunk until acknowledged, within `maxBytes` of
 * unacknowledged chunks. A chunk that does not fit is not kept (`onError("store_full", …)`); a kept
 * one is never evicted before the server acknowledged it. Store failures are reported, never thrown.
 */
export class KeptChunks {
  constructor(store, maxBytes, onError) {
    this.store = store;
    this.maxBytes = maxBytes;
    this.bytes = 0;
    this._onError = onError;
    this._ops = new Set();
  }

  /** Keep a new chunk, if it fits. */
  keep(entry) {
    if (this.bytes + entry.size > this.maxBytes) {
      this._onError("store_full", `chunk ${entry.sequence} is not kept for a reload: ` +
        `${this.maxBytes} bytes of unacknowledged chunks are stored`, { sequence: entry.sequence });
      return;
    }
    this.bytes += entry.size;
    entry.stored = this.store.put(entry);
    this._track(entry.stored);
  }

  /** Count a chunk found in the store after a reload (it is already there). */
  adopt(entry) {
    this.bytes += entry.size;
    entry.stored = Promise.resolve();
  }

  /** The server acknowledged the chunk: forget it (after its own write finished). */
  forget(entry) {
    if (!entry.stored) return;
    this._track(entry.stored.then(() => this.store.delete(entry.sequence)).then(() => {
      this.bytes -= entry.size;
    }));
    entry.stored = null;
  }

  /** Drop a stored chunk the server already holds (found after a reload). */
  drop(sequence) {
    this._track(this.store.delete(sequence));
  }

  /** Resolves once every write and delete started so far has finished. */
  settled() {
    return Promise.allSettled([...this._ops]);
  }

  _track(promise) {
    const op = promise.catch((err) => this._onError("store_error", (err && err.message) || String(err)));
    this._ops.add(op);
    op.finally(() => this._ops.delete(op));
  }
}

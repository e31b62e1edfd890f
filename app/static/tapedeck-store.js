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
    const range = IDBKeyRange.bound([...this.prefix, 0], [...this.prefix, Number.MAX_SAFE_INTEGER]);
    return this._run("readonly", (s) => s.getAll(range));
  }
}

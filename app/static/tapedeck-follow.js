/**
 * tapedeck-follow.js: follows a recording's state over its event stream (Server-Sent Events) so
 * tapedeck-recorder.js can pause and resume its MediaRecorder when a host pauses or resumes.
 * The stream replays the recording's events from its start, so the latest state wins; a burst
 * (that replay) is applied once, after it settles. Ends at a final state or on close().
 */
const FINAL = ["completed", "failed"];
const SETTLE_MS = 50;

export class StateFollower {
  /** `url`: the events endpoint; `tokenOf()`: the current token; `onState(state)`: each settled state. */
  constructor(url, tokenOf, onState) {
    this.url = url;
    this._tokenOf = tokenOf;
    this._onState = onState;
    this._es = null;
    this._lastId = null;
    this._timer = null;
    this._latest = null;
    this._closed = false;
  }

  /** Connect (again), resuming after the last event seen; a no-op without EventSource. */
  async open() {
    if (typeof EventSource === "undefined" || this._closed) return;
    this._disconnect();
    const token = await this._tokenOf();
    if (this._closed) return;
    const query = new URLSearchParams({ token });
    if (this._lastId) query.set("lastEventId", this._lastId);
    const es = (this._es = new EventSource(`${this.url}?${query}`));
    es.addEventListener("state", (e) => {
      if (e.lastEventId) this._lastId = e.lastEventId;
      let state;
      try {
        state = JSON.parse(e.data).state;
      } catch {
        return;
      }
      this._latest = state;
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this._onState(this._latest), SETTLE_MS);
      if (FINAL.includes(state)) this._disconnect(); // the server ends the stream; EventSource would reconnect
    });
  }

  /** Stop following for good. */
  close() {
    this._closed = true;
    clearTimeout(this._timer);
    this._disconnect();
  }

  _disconnect() {
    this._es?.close();
    this._es = null;
  }
}

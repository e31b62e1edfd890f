// tapedeck WebRTC ingest: send a MediaStream to the server over a peer connection; the server records it while
// the room records (WS /video-calls/<room>/signal, docs/api.md "WebRTC signalling"). Dependency-free ES module.
//
//   import { WebRtcPeer } from "/static/tapedeck-webrtc.js";
//   const peer = new WebRtcPeer({ room, token, stream });
//   peer.addEventListener("error", e => console.warn(e.detail.code, e.detail.message));
//   await peer.connect();        // resolves once the media flows
//   peer.setToken(freshToken);   // before the token expires, on long calls
//   await peer.close();          // bye: the server stores what it recorded of this participant

export class WebRtcPeer extends EventTarget {
  constructor({ baseUrl = location.origin, room, token, stream, iceServers = [], connectTimeoutMs = 30000 }) {
    super();
    if (!room || !token || !stream) throw new TypeError("room, token and stream are required");
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.room = room;
    this.token = token;
    this.stream = stream;
    this.iceServers = iceServers;
    this.connectTimeoutMs = connectTimeoutMs;
    this.pc = null;
    this.ws = null;
    this.lastError = null;
  }

  get state() {
    return this.pc ? this.pc.connectionState : "new";
  }

  connect() {
    if (this.pc) return Promise.reject(new Error("already connected; close() first"));
    const url = `${this.baseUrl.replace(/^http/, "ws")}/video-calls/${encodeURIComponent(this.room)}/signal` +
      `?token=${encodeURIComponent(this.token)}`;
    const pc = (this.pc = new RTCPeerConnection({ iceServers: this.iceServers }));
    const ws = (this.ws = new WebSocket(url));
    for (const track of this.stream.getTracks()) pc.addTrack(track, this.stream);
    pc.onicecandidate = ({ candidate: c }) => {
      if (c && ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ type: "candidate", candidate: c.candidate, sdpMid: c.sdpMid,
                                 sdpMLineIndex: c.sdpMLineIndex }));
      }
    };
    pc.onconnectionstatechange = () => this._emit("state", { state: pc.connectionState });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail({ code: "timeout", message: "the peer did not connect in time" }),
                               this.connectTimeoutMs);
      const fail = (detail) => {
        clearTimeout(timer);
        this.lastError = detail;
        reject(Object.assign(new Error(detail.message), detail));
      };
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "connected") { clearTimeout(timer); resolve(this); }
        if (pc.connectionState === "failed") fail({ code: "ice_failed", message: "ICE failed (check RTC_HOST_ADDRESSES / TURN)" });
      });
      ws.onopen = async () => {
        try {
          await pc.setLocalDescription(await pc.createOffer());
          ws.send(JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }));
        } catch (error) {
          fail({ code: "offer_failed", message: String(error) });
        }
      };
      ws.onmessage = async ({ data }) => {
        const message = JSON.parse(data);
        if (message.type === "answer") {
          await pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
        } else if (message.type === "error") {
          this.lastError = message;
          this._emit("error", message);
          fail(message);
        } else if (message.type === "token") {
          this._emit("token", message);
        }
      };
      ws.onclose = (event) => {
        this._emit("closed", { code: event.code, reason: event.reason });
        if (pc.connectionState !== "connected") fail(this.lastError || { code: "closed", message: `socket closed (${event.code})` });
      };
    });
  }

  setToken(token) {
    this.token = token;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "token", token }));
  }

  async close() {
    const { ws, pc } = this;
    this.ws = this.pc = null;
    if (ws && ws.readyState === WebSocket.OPEN) {
      const closed = new Promise((resolve) => ws.addEventListener("close", resolve, { once: true }));
      ws.send(JSON.stringify({ type: "bye" }));
      await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 5000))]);
    }
    if (pc) pc.close();
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

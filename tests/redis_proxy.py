"""A TCP proxy in front of Redis that can lose the reply to a script call, since Redis cannot on cue.

Clients connect to proxy.url instead of Redis; bytes go both ways unchanged. After
`lose_script_reply(marker)`, the next EVALSHA whose command bytes contain `marker` reaches Redis and
runs, but its reply never comes back: the proxy closes the client's connection instead, as a network
cut or a socket timeout after the commit would. A NOSCRIPT reply (the script did not run) is passed on
and the fault stays armed for the client's EVALSHA after SCRIPT LOAD.
"""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

BUFFER = 65536


@dataclass
class _Link:
    """One client connection and its upstream connection to Redis."""

    client: socket.socket
    upstream: socket.socket
    lost_marker: bytes | None = None
    """Set while the reply to a marked EVALSHA is awaited."""

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@dataclass
class RedisReplyProxy:
    """Forward 127.0.0.1:<free port> to the Redis on upstream_port, in daemon threads."""

    upstream_port: int
    markers: list[bytes] = field(default_factory=list)
    lost_replies: int = 0
    """How many script replies were swallowed (after the script ran on the server)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    listener: socket.socket | None = None

    @property
    def url(self) -> str:
        assert self.listener is not None, "start() the proxy first"
        return f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"

    def start(self) -> RedisReplyProxy:
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept_loop, name="redis-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()

    def lose_script_reply(self, marker: bytes) -> None:
        """Swallow the reply of the next EVALSHA that mentions `marker` (e.g. a recording id)."""
        with self.lock:
            self.markers.append(marker)

    def _accept_loop(self) -> None:
        assert self.listener is not None
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:  # Redis is down (restarting): the client sees a refused connection
                client.close()
                continue
            link = _Link(client, upstream)
            threading.Thread(target=self._requests, args=(link,), daemon=True).start()
            threading.Thread(target=self._replies, args=(link,), daemon=True).start()

    def _requests(self, link: _Link) -> None:
        """Client → Redis: note a marked EVALSHA before it is forwarded."""
        try:
            while data := link.client.recv(BUFFER):
                if b"EVALSHA" in data.upper():
                    with self.lock:
                        marker = next((m for m in self.markers if m in data), None)
                        if marker is not None:
                            self.markers.remove(marker)
                            link.lost_marker = marker
                link.upstream.sendall(data)
        except OSError:
            pass
        link.close()

    def _replies(self, link: _Link) -> None:
        """Redis → client: swallow the marked reply and cut the connection."""
        try:
            while data := link.upstream.recv(BUFFER):
                if link.lost_marker is not None:
                    marker, link.lost_marker = link.lost_marker, None
                    if data.startswith(b"-NOSCRIPT"):
                        with self.lock:
                            self.markers.append(marker)  # it did not run: lose the reply of the retry instead
                    else:
                        with self.lock:
                            self.lost_replies += 1
                        break
                link.client.sendall(data)
        except OSError:
            pass
        link.close()

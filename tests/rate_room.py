"""A room with a started recording on an app built with CHUNK_RATE_LIMIT, and where its windows live in Redis:
shared by the rate-limit tests and the intake round-trip tests, which count the same windows."""
from __future__ import annotations

import base64
import uuid

from tests.conftest import JWT_SECRET


class Room:
    """One room with a started recording; chunks are sent as PUT (raw) or POST (base64 JSON)."""

    def __init__(self, app) -> None:
        from app.auth import mint_token

        self.client, self.room = app.test_client(), f"room-{uuid.uuid4().hex[:10]}"
        self.token = lambda sub, role="participant": mint_token(JWT_SECRET, self.room, sub, role, 600)
        started = self.client.post(f"/video-calls/{self.room}/recording/start", headers=self.auth("host", "host"))
        assert started.status_code == 201, started.get_json()
        self.rec = started.get_json()["recordingId"]

    def auth(self, sub: str, role: str = "participant") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub, role)}"}

    def put(self, sub: str, sequence: int, data: bytes | None = None, *, path_sub: str | None = None,
            headers: dict[str, str] | None = None):
        url = f"/video-calls/recordings/{self.rec}/participants/{path_sub or sub}/video/chunks/{sequence}"
        return self.client.put(url, data=b"media-%d" % sequence if data is None else data,
                               headers=headers or {**self.auth(sub), "Content-Type": "application/octet-stream"})

    def post(self, sub: str, sequence: int):
        body = {"recordingId": self.rec, "participantId": sub, "type": "video", "sequence": sequence,
                "chunk": base64.b64encode(b"media-%d" % sequence).decode(), "timestamp": 1.0}
        return self.client.post("/video-calls/chunks/upload", json=body, headers=self.auth(sub))


def window_pattern(room: Room, sub: str) -> str:
    """Redis pattern of sub's chunk windows (flask-limiter appends 'LIMITER/<room>/<sub>/chunks/…' to our prefix)."""
    from workers import keys

    return f"{keys.rate_limits()}:LIMITER/{room.room}/{sub}/chunks/*"

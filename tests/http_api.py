"""The recording API over real HTTP (requests) against a web process the test started: what the live-stack and
scale-out tests drive, each with host tokens of the room it names."""
from __future__ import annotations

import requests

from tests.conftest import JWT_SECRET
from tests.services import wait_until


class HttpApi:
    """Mixed into a test's stack object, which sets `base` (the web process's URL)."""

    base: str

    def auth(self, room: str, sub: str = "host", role: str = "host") -> dict[str, str]:
        from app.auth import mint_token

        return {"Authorization": f"Bearer {mint_token(JWT_SECRET, room, sub, role, 600)}"}

    def start(self, room: str) -> str:
        reply = requests.post(f"{self.base}/video-calls/{room}/recording/start", headers=self.auth(room), timeout=30)
        assert reply.status_code == 201, reply.text
        return reply.json()["recordingId"]

    def put(self, room: str, rec: str, sequence: int, data: bytes, *, participant: str = "alice",
            final: bool = False) -> None:
        headers = {**self.auth(room, participant, "participant"), "Content-Type": "application/octet-stream"}
        if final:
            headers["Tapedeck-Final"] = "true"
        url = f"{self.base}/video-calls/recordings/{rec}/participants/{participant}/video/chunks/{sequence}"
        reply = requests.put(url, data=data, headers=headers, timeout=30)
        assert reply.status_code == 202, reply.text

    def control(self, room: str, action: str) -> None:
        """stop, pause or resume, as the room's host."""
        reply = requests.post(f"{self.base}/video-calls/{room}/recording/{action}", headers=self.auth(room), timeout=30)
        assert reply.status_code in (200, 202), reply.text

    def status(self, room: str, rec: str) -> dict:
        return requests.get(f"{self.base}/video-calls/recordings/{rec}", headers=self.auth(room), timeout=30).json()

    def wait_final(self, room: str, rec: str, timeout: float = 120) -> dict:
        def final():
            body = self.status(room, rec)
            return body if body.get("state") in ("completed", "failed") else None

        return wait_until(final, timeout, interval=0.2, what=f"{rec} to finish")

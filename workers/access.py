"""Who may do what: the authenticated caller and the room/role/participant rules of docs/api.md (Tokens)."""
from __future__ import annotations

from dataclasses import dataclass

from workers.errors import Forbidden

ROLES = ("host", "participant")


@dataclass(frozen=True)
class Principal:
    """The verified claims of a bearer token."""

    sub: str
    room: str
    role: str

    @property
    def is_host(self) -> bool:
        return self.role == "host"

    def require_room(self, room: str) -> None:
        if room != self.room:
            raise Forbidden("this token is not valid for this room")

    def require_host(self, room: str) -> None:
        self.require_room(room)
        if not self.is_host:
            raise Forbidden("only a host can do this")

    def require_uploader(self, room: str, participant_id: str) -> None:
        """Everyone, host included, uploads only their own media."""
        self.require_room(room)
        if participant_id != self.sub:
            raise Forbidden("participantId must equal the token's subject")

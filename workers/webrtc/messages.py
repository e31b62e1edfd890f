"""Signalling messages of the WebRTC socket, validated before anything touches a peer."""
from __future__ import annotations

import json
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

MAX_MESSAGE_BYTES = 64 * 1024
"""An SDP offer with audio+video is a few KB; anything far larger is not signalling."""

MAX_SDP_CHARS = 60 * 1024
MAX_CANDIDATE_CHARS = 1024
MAX_TOKEN_CHARS = 4096


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Offer(_Message):
    type: Literal["offer"]
    sdp: Annotated[str, Field(min_length=1, max_length=MAX_SDP_CHARS)]


class Candidate(_Message):
    type: Literal["candidate"]
    candidate: Annotated[str, Field(max_length=MAX_CANDIDATE_CHARS)]
    sdpMid: Annotated[str | None, Field(default=None, max_length=64)] = None
    sdpMLineIndex: Annotated[int | None, Field(default=None, ge=0, le=64)] = None


class Bye(_Message):
    type: Literal["bye"]


class TokenRefresh(_Message):
    type: Literal["token"]
    token: Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_CHARS)]


Message = Annotated[Union[Offer, Candidate, Bye, TokenRefresh], Field(discriminator="type")]
_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


class BadMessage(ValueError):
    """Raised when a client's signalling message is not one we accept; code goes to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_message(raw: str | bytes) -> Offer | Candidate | Bye | TokenRefresh:
    """Turn one socket frame into a typed message or a BadMessage with a client-safe text."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BadMessage("message_too_large", f"signalling messages are at most {MAX_MESSAGE_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadMessage("bad_json", "message is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise BadMessage("bad_message", "message must be a JSON object with a string 'type'")
    if data["type"] not in ("offer", "candidate", "bye", "token"):
        raise BadMessage("unknown_type", "type must be one of offer, candidate, bye, token")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) or e["loc"][0] for e in exc.errors())
        raise BadMessage("bad_message", f"invalid {data['type']} message: {fields}") from None

"""Request payloads, validated with pydantic; any failure becomes one 400 naming the field."""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal, Optional, TypeVar

from flask import Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from workers.clock import LATEST_TIMESTAMP_MS, is_client_time
from workers.errors import InvalidBase64, InvalidRequest
from workers.ids import ID_PATTERN, MAX_SEQUENCE
from workers.settings import OUTPUT_FORMATS

Id = Field(pattern=f"^{ID_PATTERN.pattern}$", min_length=1, max_length=64)
MAX_METADATA_BYTES = 16 * 1024
"""Recording metadata is echoed in status and manifest; keep it small."""
MAX_METADATA_DEPTH = 16
"""...and shallow: the manifest's pretty-printing recurses per level, so a deep value would fail finalize."""

Model = TypeVar("Model", bound=BaseModel)
TIMESTAMP_RULE = (f"timestamp must be the client's Unix epoch time in milliseconds (seconds are accepted): "
                  f"a finite number from 0 to {LATEST_TIMESTAMP_MS} (the year 2100)")


class ChunkBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    recordingId: str = Id
    participantId: str = Id
    chunk: str = Field(min_length=1)
    type: Literal["video", "audio"]
    sequence: StrictInt = Field(ge=0, le=MAX_SEQUENCE)
    timestamp: Optional[float] = None
    sha256: Optional[str] = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    final: Optional[bool] = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _client_time(cls, value: object) -> object:
        """Any number that can be a time (skewed clocks, seconds, hours-late chunks) — never one that cannot."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(TIMESTAMP_RULE)
        return client_timestamp(value)


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    format: Optional[Literal[OUTPUT_FORMATS]] = None  # type: ignore[valid-type]
    metadata: dict[str, Any] = Field(default_factory=dict)


def _first_error(exc: ValidationError) -> InvalidRequest:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    return InvalidRequest(f"{field}: {err['msg']}", field=field)


def parse_json(request: Request, model: type[Model], *, optional: bool = False) -> Model:
    """Parse the body as JSON into model; an empty body is allowed only when optional."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if optional:
            return model()
        raise InvalidRequest("request body must be a JSON object")
    try:
        payload = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid JSON: it is not UTF-8") from None
    except json.JSONDecodeError as exc:  # says where, so a client can find its mistake
        raise InvalidRequest(f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # _no_constant
        raise InvalidRequest("request body is not valid JSON (NaN and Infinity are not JSON numbers)") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise _first_error(exc) from None


def parse_start(request: Request) -> StartBody:
    body = parse_json(request, StartBody, optional=True)
    if _depth(body.metadata) > MAX_METADATA_DEPTH:
        raise InvalidRequest(f"metadata must nest at most {MAX_METADATA_DEPTH} levels deep", field="metadata")
    if len(json.dumps(body.metadata)) > MAX_METADATA_BYTES:
        raise InvalidRequest(f"metadata must be at most {MAX_METADATA_BYTES} bytes of JSON", field="metadata")
    return body


def _depth(value: object, limit: int = 64) -> int:
    """Nesting depth of a JSON value, counted no deeper than `limit` (so it never recurses far)."""
    if limit <= 0 or not isinstance(value, (dict, list)):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


def decoded_size(b64: str) -> int:
    """Size the base64 text decodes to, without decoding it (for the 413 check before work)."""
    return len(b64) * 3 // 4 - b64[-2:].count("=")


def strip_data_url(text: str) -> str:
    """Accept FileReader.readAsDataURL output: the MIME type before ';base64,' may itself contain commas."""
    if text.startswith("data:"):
        marker = text.find(";base64,")
        if marker != -1:
            return text[marker + len(";base64,"):]
    return text


def decode_chunk(text: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidBase64("chunk is not valid base64", field="chunk") from None
    if not data:
        raise InvalidRequest("chunk must not be empty", field="chunk")
    return data


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def client_timestamp(value: int | float) -> float:
    """A client timestamp as a float, or ValueError naming the rule (big integers never reach float())."""
    if isinstance(value, int) and not 0 <= value <= LATEST_TIMESTAMP_MS:
        raise ValueError(TIMESTAMP_RULE)
    number = float(value)
    if not is_client_time(number):
        raise ValueError(TIMESTAMP_RULE)
    return number


def parse_timestamp_header(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        return client_timestamp(float(value.strip()))
    except ValueError:
        raise InvalidRequest(f"Tapedeck-Timestamp: {TIMESTAMP_RULE}", field="Tapedeck-Timestamp") from None

"""The reusable parts of /openapi.json: payload schemas, error responses, security schemes, from the code's own limits."""
from __future__ import annotations

from typing import Any

from workers.ids import ID_PATTERN, MAX_SEQUENCE, STREAM_TYPES
from workers.settings import OUTPUT_FORMATS
from workers.state import State

Schema = dict[str, Any]

MAX_TIMESTAMP_MS = 4_102_444_800_000
"""2100-01-01T00:00:00Z in epoch milliseconds: a later timestamp cannot be a time (400)."""

ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: ("invalid_request", "invalid_base64", "checksum_mismatch"),
    401: ("unauthorized",),
    403: ("forbidden",),
    404: ("not_found", "not_recording"),
    405: ("method_not_allowed",),
    409: ("not_recording", "already_recording", "sequence_conflict", "participant_limit", "invalid_state"),
    413: ("payload_too_large",),
    415: ("unsupported_media",),
    416: ("http_error",),
    429: ("rate_limited",),
    503: ("unavailable",),
}
"""The codes each status may carry (docs/api.md, Routes); the fuzz test holds the app to them."""

REASONS = {
    400: "Bad request: body, path, query or header has the wrong shape", 401: "Missing, invalid or expired token",
    403: "Wrong room, role or participant", 404: "Not found", 405: "Method not allowed",
    409: "Wrong state, sequence or limit", 413: "Body larger than the limit", 415: "Unsupported container",
    416: "Range not satisfiable", 429: "Rate limited; retry after Retry-After seconds",
    503: "A dependency is down; retry after Retry-After seconds",
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], properties: dict[str, Schema], extra: bool = True) -> Schema:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": extra}


_B64_TAIL = "(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)"
BASE64 = (r"^(?:data:[A-Za-z0-9.+/-]+(?:;[A-Za-z0-9.+-]+=[A-Za-z0-9.,+-]+)*;base64,)?"
          f"(?:(?:[A-Za-z0-9+/]{{4}})+{_B64_TAIL}?|{_B64_TAIL})$")
"""Non-empty, padded base64, optionally as a data: URL (what FileReader.readAsDataURL gives)."""

NULLABLE_STRING: Schema = {"type": ["string", "null"]}
ISO_TIME: Schema = {"type": ["string", "null"], "description": "ISO 8601 UTC"}

SCHEMAS: dict[str, Schema] = {
    "Id": {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$", "minLength": 1, "maxLength": 64},
    "Sequence": {"type": "integer", "minimum": 0, "maximum": MAX_SEQUENCE},
    "StreamType": {"type": "string", "enum": list(STREAM_TYPES)},
    "Format": {"type": "string", "enum": list(OUTPUT_FORMATS)},
    "State": {"type": "string", "enum": [s.value for s in State]},
    "Timestamp": {"type": "number", "minimum": 0, "maximum": MAX_TIMESTAMP_MS,
                  "description": "client wall clock in Unix epoch milliseconds (seconds are accepted too)"},
    "Error": _obj(["error"], {"error": _obj(["code", "message"], {
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "message": {"type": "string"},
    })}),
    "StartBody": _obj([], {
        "format": {"anyOf": [ref("Format"), {"type": "null"}]},
        "metadata": {"type": "object", "description": "echoed in status and manifest; at most 16 KiB of JSON"},
    }, extra=False),
    "Started": _obj(["recordingId", "room", "state", "format"], {
        "recordingId": ref("Id"), "room": ref("Id"), "state": ref("State"), "format": ref("Format")}),
    "Current": _obj(["recordingId", "state"], {"recordingId": ref("Id"), "state": ref("State")}),
    "Stopped": _obj(["recordingId", "state", "taskId"], {
        "recordingId": ref("Id"), "state": ref("State"), "taskId": NULLABLE_STRING}),
    "ChunkBody": _obj(["recordingId", "participantId", "chunk", "type", "sequence"], {
        "recordingId": ref("Id"), "participantId": ref("Id"),
        "chunk": {"type": "string", "pattern": BASE64, "description": "base64 (a data: URL prefix is accepted)"},
        "type": ref("StreamType"), "sequence": ref("Sequence"),
        "timestamp": {"anyOf": [ref("Timestamp"), {"type": "null"}]},
        "sha256": {"type": ["string", "null"], "pattern": "^[0-9a-fA-F]{64}$",
                   "description": "hex SHA-256 of the decoded bytes; a mismatch is 400 checksum_mismatch"},
        "final": {"type": ["boolean", "null"], "description": "this is the stream's last chunk"},
    }),
    "ChunkAccepted": _obj(["recordingId", "participantId", "type", "sequence", "bytes", "duplicate"], {
        "recordingId": ref("Id"), "participantId": ref("Id"), "type": ref("StreamType"),
        "sequence": ref("Sequence"), "bytes": {"type": "integer", "minimum": 0}, "duplicate": {"type": "boolean"},
        "paused": {"type": "boolean"},
    }),
    "Stream": _obj(["chunks", "bytes", "missing", "missingCount"], {
        "chunks": {"type": "integer"}, "bytes": {"type": "integer"},
        "firstSequence": {"type": ["integer", "null"]}, "lastSequence": {"type": ["integer", "null"]},
        "missing": {"type": "array", "items": {"type": "integer"}, "maxItems": 1000},
        "missingCount": {"type": "integer"},
        "finalSequence": {"type": "integer", "description": "the chunk the client declared last, once it did"},
    }),
    "Output": _obj(["participantId", "key"], {
        "participantId": ref("Id"), "format": {"type": "string"}, "bytes": {"type": "integer"},
        "durationSeconds": {"type": ["number", "null"]}, "provider": {"type": "string"},
        "key": {"type": "string"}, "url": NULLABLE_STRING,
        "thumbnailKey": NULLABLE_STRING, "thumbnailUrl": NULLABLE_STRING,
        "pausedSecondsCut": {"type": "number", "description": "media recorded inside pauses and cut out "
                                                              "(a client that kept recording); absent when none"},
        "sha256": {"type": ["string", "null"], "description": "hex SHA-256 of the whole file; null for an output "
                                                               "remuxed while recording, which has checksum"},
        "checksum": _obj(["algorithm", "partSize", "parts", "composite"], {
            "algorithm": {"type": "string", "enum": ["sha256-parts"]}, "partSize": {"type": "integer"},
            "parts": {"type": "integer"}, "composite": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "firstPartSize": {"type": "integer", "description": "a live MP4's first part, longer by its header; "
                                                                "absent when every part but the last is partSize"},
        }) | {"description": "live outputs: SHA-256 of each partSize-byte part, composite = SHA-256 of the parts' "
                             "digests joined in order; absent for other outputs"},
    }),
    "Status": _obj(["recordingId", "room", "state", "progress", "format", "participants", "outputs"], {
        "recordingId": ref("Id"), "room": ref("Id"), "state": ref("State"),
        "progress": {"type": "number", "minimum": 0, "maximum": 1}, "format": {"type": "string"},
        "startedAt": ISO_TIME, "stoppedAt": ISO_TIME, "completedAt": ISO_TIME, "error": NULLABLE_STRING,
        "stopReason": {"type": ["string", "null"], "enum": ["host", "idle", "max_duration", "operator", None]},
        "participants": {"type": "object", "additionalProperties": _obj([], {
            "error": NULLABLE_STRING, "video": ref("Stream"), "audio": ref("Stream")})},
        "outputs": {"type": "array", "items": ref("Output")},
        "pauses": {"type": "array", "maxItems": 1000, "items": _obj(["pausedAt", "resumedAt"], {
            "pausedAt": ISO_TIME, "resumedAt": ISO_TIME})},
        "live": {"anyOf": [{"type": "null"}, _obj(["position", "lagSeconds"], {
            "position": {"type": "integer", "description": "last sequence every live participant's output holds"},
            "lagSeconds": {"type": "number", "minimum": 0, "description": "since the slowest one last advanced"}})],
            "description": "LIVE_FINALIZE: how far the outputs were remuxed while recording (null when not)"},
    }),
    "HeldChunks": _obj(["ranges", "chunks", "bytes", "next"], {
        "ranges": {"type": "array", "maxItems": 1000, "items": {
            "type": "array", "items": ref("Sequence"), "minItems": 2, "maxItems": 2}},
        "chunks": {"type": "integer", "minimum": 0}, "bytes": {"type": "integer", "minimum": 0},
        "next": {"type": ["integer", "null"]}}),
    "Listing": _obj(["recordings", "next"], {
        "recordings": {"type": "array", "maxItems": 100, "items": _obj(
            ["recordingId", "state", "startedAt", "stoppedAt", "completedAt", "format"], {
                "recordingId": ref("Id"), "state": ref("State"), "startedAt": ISO_TIME, "stoppedAt": ISO_TIME,
                "completedAt": ISO_TIME, "format": NULLABLE_STRING})},
        "next": {"anyOf": [ref("Id"), {"type": "null"}]}}),
    "Health": _obj(["status"], {"status": {"type": "string", "enum": ["ok"]}}),
    "Checks": {"type": "object", "additionalProperties": {"type": "string", "enum": ["ok", "unavailable"]}},
    "Ready": _obj(["status", "checks", "live"], {"status": {"type": "string", "enum": ["ok"]}, "checks": ref("Checks"),
                                                 "live": ref("LiveSteps")}),
    "LiveSteps": _obj(["steps", "consumers"], {
        "steps": {"type": "string", "enum": ["running", "no_consumer", "off", "unknown"],
                  "description": "running: a worker consuming the live queue announced itself; no_consumer: none "
                                 "did, so no live step is queued and stops take the batch path; off: LIVE_FINALIZE "
                                 "is off or staging is in the object store; unknown: Redis did not answer"},
        "consumers": {"type": ["integer", "null"], "minimum": 0,
                      "description": "workers announced as consuming the live queue (null when off or unknown)"}}),
    "DevTokenBody": _obj(["room", "sub"], {
        "room": ref("Id"), "sub": ref("Id"), "role": {"type": "string", "enum": ["host", "participant"]},
        "ttl": {"type": "integer", "minimum": 60, "maximum": 86400},
    }),
    "DevToken": _obj(["token", "room", "sub", "role", "expiresIn"], {
        "token": {"type": "string"}, "room": ref("Id"), "sub": ref("Id"),
        "role": {"type": "string"}, "expiresIn": {"type": "integer"}}),
}

RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}


def error_response(status: int) -> Schema:
    """An error response whose body is the Error schema with this status's codes."""
    body = {"allOf": [ref("Error"), {"properties": {"error": {"properties": {
        "code": {"type": "string", "enum": list(ERROR_CODES[status])}}}}}]}
    response: Schema = {"description": REASONS[status], "content": {"application/json": {"schema": body}}}
    if status in (429, 503):
        response["headers"] = RETRY_AFTER
    return response


def components() -> Schema:
    responses = {f"E{status}": error_response(status) for status in ERROR_CODES}
    security = {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "HS256 JWT with claims sub, room, role (host|participant), exp"},
        "tokenQuery": {"type": "apiKey", "in": "query", "name": "token",
                       "description": "the same JWT as ?token=, for EventSource; GET routes only"},
    }
    return {"schemas": SCHEMAS, "responses": responses, "securitySchemes": security}


def errors(*statuses: int) -> dict[str, Schema]:
    """Response entries referring to the shared error responses."""
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def json_body(schema_name: str, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": ref(schema_name)}}}


def json_ok(description: str, schema_name: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": ref(schema_name)}}}

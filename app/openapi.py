"""GET /openapi.json: an OpenAPI 3.1 description of every HTTP route, written beside the routes it describes.

Hand-written rather than generated: the routes validate by hand too (ids, sequences, headers), and
a test holds this description to Flask's url_map and a schemathesis run holds the app to it.
"""
from __future__ import annotations

from functools import lru_cache

from flask import Blueprint, jsonify

from app.openapi_components import MAX_TIMESTAMP_MS, Schema, components, errors, json_body, json_ok, ref

bp = Blueprint("openapi", __name__)

HEADER_ONLY: list[Schema] = [{"bearer": []}]
"""Non-GET routes take the token in the Authorization header only (a query token would land in logs)."""
HEADER_OR_QUERY: list[Schema] = [{"bearer": []}, {"tokenQuery": []}]
OPEN: list[Schema] = []
STREAM_ID = r"^[0-9]{1,19}-[0-9]{1,19}$"
"""A Redis Stream id as the stream sent it: two 64-bit parts (19 digits always fit; the app takes up to 2**64-1)."""


def _path(name: str, schema: Schema, description: str = "") -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


ROOM = _path("room", ref("Id"), "the room")
RECORDING = _path("recordingId", ref("Id"), "from start, or GET /video-calls/{room}/recording")
PARTICIPANT = _path("participantId", ref("Id"), "must equal the token's sub unless the token is a host's")
TYPE = _path("type", ref("StreamType"))
SEQUENCE = _path("sequence", ref("Sequence"), "0 (or 1) holds the container header")
UPLOAD_ERRORS = (400, 401, 403, 404, 409, 413, 415, 429, 503)


def _op(summary: str, responses: dict[str, Schema], security: list[Schema], **extra: object) -> Schema:
    return {"summary": summary, "security": security, "responses": responses, **extra}


def _recording_paths() -> dict[str, Schema]:
    return {
        "/video-calls/{room}/recording/start": {"post": _op(
            "Start recording the room (host only)",
            {"201": json_ok("Recording started", "Started"), **errors(400, 401, 403, 409, 413, 503)},
            HEADER_ONLY, parameters=[ROOM], requestBody=json_body("StartBody", required=False),
            description="409 already_recording carries the running recording's recordingId.")},
        "/video-calls/{room}/recording": {"get": _op(
            "The room's current recording (how participants learn its id)",
            {"200": json_ok("The current recording", "Current"), **errors(400, 401, 403, 404, 503)},
            HEADER_OR_QUERY, parameters=[ROOM], description="404 not_recording when the room has none.")},
        "/video-calls/{room}/recording/stop": {"post": _op(
            "Stop recording and queue finalize (host only; repeating it is harmless)",
            {"202": json_ok("Stopping, or already stopped", "Stopped"), **errors(400, 401, 403, 404, 503)},
            HEADER_ONLY, parameters=[ROOM])},
        "/video-calls/{room}/recording/pause": {"post": _op(
            "Pause the room's recording (host only); chunks sent while paused are still accepted",
            {"200": json_ok("Paused", "Current"), **errors(400, 401, 403, 404, 409, 503)},
            HEADER_ONLY, parameters=[ROOM], description="409 invalid_state unless the recording is recording.")},
        "/video-calls/{room}/recording/resume": {"post": _op(
            "Resume the room's paused recording (host only)",
            {"200": json_ok("Recording again", "Current"), **errors(400, 401, 403, 404, 409, 503)},
            HEADER_ONLY, parameters=[ROOM], description="409 invalid_state unless the recording is paused.")},
        "/video-calls/{room}/recordings": {"get": _op(
            "The room's recordings, newest first, paginated (any token of the room)",
            {"200": json_ok("One page; next is the cursor of the following page, or null", "Listing"),
             **errors(400, 401, 403, 404, 503)}, HEADER_OR_QUERY, parameters=[
                ROOM,
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 100}, "description": "default 20"},
                {"name": "cursor", "in": "query", "required": False, "schema": ref("Id"),
                 "description": "the previous page's next"},
                {"name": "state", "in": "query", "required": False, "schema": ref("State")}])},
        "/video-calls/recordings/{recordingId}": {"delete": _op(
            "Delete an ended recording: outputs, posters, manifest, staged chunks and state (host only)",
            {"202": json_ok("Deleting (also while a purge runs)", "Current"), **errors(400, 401, 403, 404, 409, 503)},
            HEADER_ONLY, parameters=[RECORDING],
            description="409 invalid_state unless completed or failed; 404 once the purge finished."), "get": _op(
            "A recording's status: state, progress, per-participant streams, outputs with download URLs",
            {"200": json_ok("Status", "Status"), **errors(400, 401, 403, 404, 503)},
            HEADER_OR_QUERY, parameters=[RECORDING])},
        "/video-calls/recordings/{recordingId}/events": {"get": _op(
            "Server-sent events of state and progress; ends at completed or failed",
            {"200": {"description": "an event stream; `id:` resumes with Last-Event-ID",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}},
             **errors(400, 401, 403, 404, 429, 503)},
            HEADER_OR_QUERY, parameters=[
                RECORDING,
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "schema": {"type": "string", "pattern": STREAM_ID}, "example": "0-0"},
                {"name": "lastEventId", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": STREAM_ID}}])},
    }


def _chunk_paths() -> dict[str, Schema]:
    accepted = json_ok("Stored (or already held with the same bytes: duplicate true)", "ChunkAccepted")
    return {
        "/video-calls/chunks/upload": {"post": _op(
            "Upload one chunk as base64 JSON",
            {"202": accepted, **errors(*UPLOAD_ERRORS)}, HEADER_ONLY, requestBody=json_body("ChunkBody"))},
        "/video-calls/recordings/{recordingId}/participants/{participantId}/{type}/chunks/{sequence}": {"put": _op(
            "Upload one chunk as raw bytes",
            {"202": accepted, **errors(*UPLOAD_ERRORS)}, HEADER_ONLY,
            parameters=[RECORDING, PARTICIPANT, TYPE, SEQUENCE,
                        {"name": "Tapedeck-Timestamp", "in": "header", "required": False,
                         "schema": {"type": "number", "minimum": 0, "maximum": MAX_TIMESTAMP_MS},
                         "description": "client wall clock in Unix epoch milliseconds"},
                        {"name": "Repr-Digest", "in": "header", "required": False, "schema": {"type": "string"},
                         "example": "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
                         "description": "RFC 9530; a sha-256 the bytes do not match is 400 checksum_mismatch"},
                        {"name": "Content-Digest", "in": "header", "required": False, "schema": {"type": "string"},
                         "example": "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
                         "description": "RFC 9530, verified like Repr-Digest (the body is stored as sent); "
                                        "with both, both must match"},
                        {"name": "Tapedeck-Final", "in": "header", "required": False,
                         "schema": {"type": "string", "enum": ["true", "false"]},
                         "description": "true: this is the stream's last chunk"}],
            requestBody={"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary", "minLength": 1}}}})},
        "/video-calls/recordings/{recordingId}/participants/{participantId}/{type}/chunks": {"get": _op(
            "Which sequences of a stream the server holds, as runs (that participant or a host)",
            {"200": json_ok("Held runs, ascending; next pages on with ?after=", "HeldChunks"),
             **errors(400, 401, 403, 404, 503)}, HEADER_OR_QUERY,
            parameters=[RECORDING, PARTICIPANT, TYPE,
                        {"name": "after", "in": "query", "required": False, "schema": ref("Sequence"),
                         "description": "list only sequences above this (the previous answer's next)"},
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                         "description": "most runs in one answer (default 1000)"}])},
    }


def _open_paths() -> dict[str, Schema]:
    html = {"text/html": {"schema": {"type": "string"}}}
    return {
        "/healthz": {"get": _op("Liveness", {"200": json_ok("Alive", "Health")}, OPEN)},
        "/readyz": {"get": _op("Readiness: Redis and the storage provider answer", {
            "200": json_ok("Ready", "Ready"),
            "503": {"description": "Not ready; checks names what is down", "content": {"application/json": {
                "schema": {"allOf": [ref("Error"), {"required": ["checks"], "properties": {"checks": ref("Checks")}}]}}}},
        }, OPEN)},
        "/metrics": {"get": _op("Prometheus metrics of this node (every web process summed)", {
            "200": {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            OPEN)},
        "/openapi.json": {"get": _op("This description", {
            "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}},
            OPEN)},
        "/files/{key}": {"get": _op(
            "Download an output of the local storage provider through a signed, expiring link from the status",
            {"200": {"description": "the object", "content": {"*/*": {"schema": {"type": "string"}}}},
             "206": {"description": "the requested range", "content": {"*/*": {"schema": {"type": "string"}}}},
             **errors(404, 416)}, OPEN,
            parameters=[_path("key", {"type": "string", "minLength": 1}, "the object key; may contain /"),
                        {"name": "expires", "in": "query", "required": True, "schema": {"type": "integer"}},
                        {"name": "sig", "in": "query", "required": True, "schema": {"type": "string"}}],
            description="404 for a bad signature, an expired link, a missing object, or another provider.")},
        "/": {"get": _op("Redirect to the demo page", {"302": {
            "description": "to /demo", "headers": {"Location": {"schema": {"type": "string"}}}}}, OPEN)},
        "/demo": {"get": _op("Demo page (host and participant)", {
            "200": {"description": "HTML", "content": html}}, OPEN)},
        "/dev/token": {"post": _op(
            "Mint a token for the demo: TAPEDECK_ENV=development only (404 otherwise)",
            {"200": json_ok("A token", "DevToken"), **errors(400, 404, 413)}, OPEN,
            requestBody=json_body("DevTokenBody"))},
    }


@lru_cache(maxsize=1)
def spec() -> Schema:
    """The whole description; built once per process (it depends on code, not on configuration)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "tapedeck", "version": "1",
                 "description": "Recording backend for video calls. Errors are "
                                "{\"error\": {\"code\", \"message\", ...}}; see docs/api.md."},
        "paths": {**_recording_paths(), **_chunk_paths(), **_open_paths()},
        "components": components(),
    }


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(spec())

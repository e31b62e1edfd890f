"""Chunk uploads: base64 JSON (POST) or raw bytes (PUT), both through the same intake."""
from __future__ import annotations

import json
from typing import Callable

from flask import Blueprint, Response, g, request
from werkzeug.datastructures import Headers

from app.auth import authenticate
from app.digests import parse_final_header, sha256_to_verify, sha256s_from_headers
from app.limits import CHUNKS, limited
from app.metrics import count_accepted
from app.schemas import ChunkBody, decode_chunk, decoded_size, parse_json, parse_timestamp_header, strip_data_url
from app.services import services
from tasks.lifecycle import finalize_now_if_complete
from tasks.live import schedule_live_step
from workers.chunks import ChunkReceipt, ChunkUpload
from workers.resources import Resources
from workers.errors import InvalidRequest
from workers.access import Principal
from workers.chunk_index import RateCheck
from workers.ids import check_id, check_sequence, check_stream_type

bp = Blueprint("chunks", __name__, url_prefix="/video-calls")


@bp.post("/chunks/upload")
@limited(CHUNKS)
def upload_json():
    principal = authenticate()
    body = parse_json(request, ChunkBody)
    text = strip_data_url(body.chunk)
    intake = services().intake
    intake.check_size(decoded_size(text))  # 413 before decoding megabytes
    upload = ChunkUpload(
        recording_id=body.recordingId, participant_id=body.participantId, stream_type=body.type,
        sequence=body.sequence, data=decode_chunk(text), timestamp=body.timestamp,
        sha256=body.sha256.lower() if body.sha256 else None, final=bool(body.final),
    )
    return _answer(count_accepted(intake.accept(upload, principal, g.get("rate_check"))))


RAW_PATH = "/recordings/<recording_id>/participants/<participant_id>/<stream_type>/chunks/<sequence>"


@bp.put(RAW_PATH)
@limited(CHUNKS)
def upload_raw(recording_id: str, participant_id: str, stream_type: str, sequence: str):
    """The reference for app/chunk_lane.py, which answers the same requests outside Flask (app/chunk_lane.py says
    which it leaves to this view)."""
    principal = authenticate()
    req = request._get_current_object()  # type: ignore[attr-defined] - one context lookup, not one per attribute
    svc = services()
    receipt = take_raw(svc, principal, g.get("rate_check"), (recording_id, participant_id, stream_type, sequence),
                       req.headers, req.content_length, lambda: req.get_data(cache=False))
    return _answer(count_accepted(receipt), svc)


def take_raw(svc: Resources, principal: Principal, rate: RateCheck | None, ids: tuple[str, str, str, str],
             headers: Headers, content_length: int | None, read_body: Callable[[], bytes]) -> ChunkReceipt:
    """A raw PUT's checks in DESIGN §4's order after the token and rate (ids, headers, size, body), then intake."""
    recording_id, participant_id, stream_type, sequence = ids
    check_id(recording_id, "recordingId")
    check_id(participant_id, "participantId")
    check_stream_type(stream_type)
    seq = check_sequence(sequence)
    timestamp = parse_timestamp_header(headers.get("Tapedeck-Timestamp"))
    named_sha256s = sha256s_from_headers(headers)
    final = parse_final_header(headers.get("Tapedeck-Final"))
    if content_length is not None:
        svc.intake.check_size(content_length)
    data = read_body()
    if not data:
        raise InvalidRequest("chunk body must not be empty", field="body")
    upload = ChunkUpload(
        recording_id=recording_id, participant_id=participant_id, stream_type=stream_type, sequence=seq, data=data,
        timestamp=timestamp, sha256=sha256_to_verify(named_sha256s, data), final=final,
    )
    return svc.intake.accept(upload, principal, rate)


def after_accept(receipt: ChunkReceipt, svc: Resources) -> bytes:
    """The 202 body; a final chunk, or any chunk in the grace window, may complete the recording, and a new chunk
    may be due a live step."""
    if receipt.upload.final or receipt.finalizing:
        finalize_now_if_complete(svc.redis, receipt.upload.recording_id)
    elif svc.settings.live_steps and not receipt.duplicate:
        schedule_live_step(svc.redis, receipt.upload.recording_id, svc.settings.live_step_seconds,
                           svc.settings.live_transcode_step_seconds)
    return (_receipt_json(receipt.body()) + "\n").encode()


def _answer(receipt: ChunkReceipt, svc: Resources | None = None):
    """202 with the receipt."""
    return Response(after_accept(receipt, svc or services()), status=202, mimetype="application/json")


_receipt_json = json.JSONEncoder(separators=(",", ":")).encode
"""The receipt as jsonify writes it outside debug mode (compact, ASCII, keys in order), with one encoder built once:
jsonify builds an encoder and goes through the app's JSON provider on every call, twice the CPU for these bytes."""

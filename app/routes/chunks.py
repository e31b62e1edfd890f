"""Chunk uploads: base64 JSON (POST) or raw bytes (PUT), both through the same intake."""
from __future__ import annotations

import json

from flask import Blueprint, Response, g, request

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


@bp.put("/recordings/<recording_id>/participants/<participant_id>/<stream_type>/chunks/<sequence>")
@limited(CHUNKS)
def upload_raw(recording_id: str, participant_id: str, stream_type: str, sequence: str):
    principal = authenticate()
    check_id(recording_id, "recordingId")
    check_id(participant_id, "participantId")
    check_stream_type(stream_type)
    seq = check_sequence(sequence)
    req = request._get_current_object()  # type: ignore[attr-defined] - one context lookup, not one per attribute
    headers = req.headers
    timestamp = parse_timestamp_header(headers.get("Tapedeck-Timestamp"))
    named_sha256s = sha256s_from_headers(headers)
    final = parse_final_header(headers.get("Tapedeck-Final"))
    svc = services()
    if req.content_length is not None:
        svc.intake.check_size(req.content_length)
    data = req.get_data(cache=False)
    if not data:
        raise InvalidRequest("chunk body must not be empty", field="body")
    upload = ChunkUpload(
        recording_id=recording_id, participant_id=participant_id, stream_type=stream_type, sequence=seq, data=data, timestamp=timestamp,
        sha256=sha256_to_verify(named_sha256s, data), final=final,
    )
    return _answer(count_accepted(svc.intake.accept(upload, principal, g.get("rate_check"))), svc)


def _answer(receipt: ChunkReceipt, svc: Resources | None = None):
    """202 with the receipt; a final chunk, or any chunk in the grace window, may complete the recording."""
    svc = svc or services()
    if receipt.upload.final or receipt.finalizing:
        finalize_now_if_complete(svc.redis, receipt.upload.recording_id)
    elif svc.settings.live_steps and not receipt.duplicate:
        schedule_live_step(svc.redis, receipt.upload.recording_id, svc.settings.live_step_seconds)
    return Response(_receipt_json(receipt.body()) + "\n", status=202, mimetype="application/json")


_receipt_json = json.JSONEncoder(separators=(",", ":")).encode
"""The receipt as jsonify writes it outside debug mode (compact, ASCII, keys in order), with one encoder built once:
jsonify builds an encoder and goes through the app's JSON provider on every call, twice the CPU for these bytes."""

"""Every error becomes the API's JSON error shape (docs/api.md) here, once: typed errors by class, HTTP errors by code."""
from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from workers import errors as e

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[e.TapedeckError], int] = {
    e.Unauthorized: 401,
    e.InvalidRequest: 400,
    e.PayloadTooLarge: 413,
    e.NotFound: 404,
    e.Forbidden: 403,
    e.RecordingNotAccepting: 409,
    e.AlreadyRecording: 409,
    e.SequenceConflict: 409,
    e.InvalidState: 409,
    e.ParticipantLimit: 409,
    e.UnsupportedMedia: 415,
    e.RateLimited: 429,
    e.Unavailable: 503,
}

RETRY_AFTER_SECONDS = "2"
"""Sent with every 503 so clients (the browser module honours it) back off before retrying."""

CODE_BY_HTTP_STATUS = {
    400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media", 429: "rate_limited",
}


def error_response(status: int, code: str, message: str, **extra: object):
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="tapedeck"'
    return response


def status_for(error: e.TapedeckError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]  # type: ignore[index]
    return 500


def init_app(app: Flask) -> None:
    @app.errorhandler(e.TapedeckError)
    def _typed(error: e.TapedeckError):
        status = status_for(error)
        if status >= 500:
            log.error("request failed: %s", error.message)
        response = error_response(status, error.code, error.message, **error.extra)
        if status == 503:
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        if isinstance(error, e.RateLimited):
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        status = error.code or 500
        code = CODE_BY_HTTP_STATUS.get(status, "http_error")
        response = error_response(status, code, error.description or error.name)
        for name, value in error.get_headers():  # keep Allow (405) and Content-Range (416): RFC 9110 requires them
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(redis.RedisError)
    def _redis(error: redis.RedisError):
        log.error("redis unavailable: %s", type(error).__name__)
        response = error_response(503, "unavailable", "state store is unavailable; retry later")
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        log.exception("unexpected error")
        return error_response(500, "internal_error", "internal error")

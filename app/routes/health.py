"""Liveness and readiness for orchestrators and load balancers."""
from __future__ import annotations

from flask import Blueprint, jsonify

from app.services import services
from storage_providers import StorageError

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready when Redis answers and the storage provider is reachable; 503 names what is down."""
    svc = services()
    checks = {"redis": "ok", "storage": "ok"}
    try:
        svc.redis.ping()
    except Exception:  # noqa: BLE001 - any failure means not ready
        checks["redis"] = "unavailable"
    try:
        svc.provider.check()
    except (StorageError, OSError):
        checks["storage"] = "unavailable"
    if all(v == "ok" for v in checks.values()):
        return jsonify(status="ok", checks=checks)
    down = ", ".join(k for k, v in checks.items() if v != "ok")
    body = {"error": {"code": "unavailable", "message": f"not ready: {down} unavailable"}, "checks": checks}
    return jsonify(body), 503

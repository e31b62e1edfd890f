"""Liveness and readiness for orchestrators and load balancers."""
from __future__ import annotations

from flask import Blueprint, jsonify
from redis import RedisError

from app.services import services
from storage_providers import StorageError
from workers.errors import Unavailable
from workers.live.consumers import LiveConsumers
from workers.redis_persistence import Persistence, check_persistence
from workers.resources import Resources

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready when Redis answers (and, in production, persists) and storage is reachable; 503 names what is not.
    `live` says whether live steps run; a deployment without a live worker is still ready (stops take batch)."""
    svc = services()
    checks = {"redis": "ok", "storage": "ok", "staging": _staging(svc)}
    warnings: list[str] = []
    try:
        svc.redis.ping()
    except Exception:  # noqa: BLE001 - any failure means not ready
        checks["redis"] = "unavailable"
    else:
        checks["redis"] = _persistence(svc, warnings)
    try:
        svc.provider.check()
    except (StorageError, OSError):
        checks["storage"] = "unavailable"
    extra = {"live": _live(svc, checks["redis"] == "ok"), **({"warnings": warnings} if warnings else {})}
    if all(v == "ok" for v in checks.values()):
        return jsonify(status="ok", checks=checks, **extra)
    down = ", ".join(f"{k} {v.replace('_', ' ')}" for k, v in checks.items() if v != "ok")
    body = {"error": {"code": "unavailable", "message": f"not ready: {down}"}, "checks": checks, **extra}
    return jsonify(body), 503


def _staging(svc: Resources) -> str:
    """low_space below STAGING_MIN_FREE_BYTES (chunk uploads answer 503 then), unavailable when unreadable."""
    try:
        svc.staging.check_space()
    except Unavailable as exc:
        return "low_space" if exc.extra.get("reason") == "staging_full" else "unavailable"
    return "ok"


def _live(svc: Resources, redis_ok: bool) -> dict:
    """steps: off (LIVE_FINALIZE off, or object-store staging), running (some worker announced that it consumes
    `live`), no_consumer (intake queues no step; stops take the batch path), unknown (Redis did not answer)."""
    if not svc.settings.live_steps:
        return {"steps": "off", "consumers": None}
    if not redis_ok:
        return {"steps": "unknown", "consumers": None}
    try:
        consumers = LiveConsumers(svc.redis).count()
    except RedisError:
        return {"steps": "unknown", "consumers": None}
    return {"steps": "running" if consumers else "no_consumer", "consumers": consumers}


def _persistence(svc: Resources, warnings: list[str]) -> str:
    """The redis check: not_persistent when production must refuse; a tolerated risk only adds a warning."""
    verdict = check_persistence(svc.redis)
    if verdict.refused(svc.settings):
        warnings.append(verdict.detail)
        return "not_persistent"
    if verdict.persistence is not Persistence.PERSISTENT:
        warnings.append(verdict.detail)
    return "ok"

"""The browser demo page (`/demo`) and, in development only, a token route so it works right after `make run`."""
from __future__ import annotations

from typing import Literal

from flask import Blueprint, current_app, jsonify, redirect, request, send_from_directory
from pydantic import BaseModel, Field

from app.auth import DEFAULT_TTL_SECONDS, mint_token
from app.schemas import parse_json
from app.services import services
from workers.errors import NotFound
from workers.ids import check_id

bp = Blueprint("demo", __name__)

DEV_TOKEN_MAX_TTL_SECONDS = 24 * 3600
"""Development tokens live at most a day."""


class DevTokenBody(BaseModel):
    room: str
    sub: str
    role: Literal["host", "participant"] = "host"
    ttl: int = Field(default=DEFAULT_TTL_SECONDS, ge=60, le=DEV_TOKEN_MAX_TTL_SECONDS)


@bp.get("/")
def index():
    return redirect("/demo", code=302)


@bp.get("/demo")
def demo_page():
    """Static HTML: the page's script asks for a dev token, or lets the user paste one."""
    response = send_from_directory(current_app.static_folder, "demo.html", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.post("/dev/token")
def dev_token():
    """Mint any token for the demo: it exists only when TAPEDECK_ENV=development (404 otherwise)."""
    if not services().settings.development:
        raise NotFound("no such route")
    body = parse_json(request, DevTokenBody)
    check_id(body.room, "room")
    check_id(body.sub, "sub")
    token = mint_token(services().settings.jwt_secret, body.room, body.sub, body.role, body.ttl)
    return jsonify(token=token, room=body.room, sub=body.sub, role=body.role, expiresIn=body.ttl)

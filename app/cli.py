"""Operator commands: `flask --app app token|status|stop|requeue|rebuild|webhooks`."""
from __future__ import annotations

import json
import time
import uuid

import click
from flask import Flask
from flask.cli import with_appcontext

from app.auth import DEFAULT_TTL_SECONDS, mint_token
from app.cli_webhooks import webhooks
from app.services import services
from workers.access import ROLES
from workers.errors import InvalidRequest, NotFound
from workers.ids import check_id
from workers.state import State
from workers.status import build_status


def init_app(app: Flask) -> None:
    app.cli.add_command(token)
    app.cli.add_command(status)
    app.cli.add_command(requeue)
    app.cli.add_command(stop)
    app.cli.add_command(rebuild)
    app.cli.add_command(webhooks)


def _id(value: str, field: str) -> str:
    try:
        return check_id(value, field)
    except InvalidRequest as exc:
        raise click.BadParameter(exc.message) from None


@click.command()
@click.option("--room", required=True)
@click.option("--sub", required=True, help="participant id")
@click.option("--role", type=click.Choice(ROLES), default="participant", show_default=True)
@click.option("--ttl", type=click.IntRange(min=1), default=DEFAULT_TTL_SECONDS, show_default=True, help="seconds")
@with_appcontext
def token(room: str, sub: str, role: str, ttl: int) -> None:
    """Print a bearer token signed with JWT_SECRET."""
    click.echo(mint_token(services().settings.jwt_secret, _id(room, "room"), _id(sub, "sub"), role, ttl))


@click.command()
@click.argument("recording_id")
@click.option("--watch/--no-watch", default=False, help="show a progress bar until the recording finishes")
@click.option("--json", "as_json", is_flag=True, help="print the status body as JSON")
@with_appcontext
def status(recording_id: str, watch: bool, as_json: bool) -> None:
    """Show a recording's status (optionally following its progress)."""
    svc = services()
    body = build_status(svc.store, _id(recording_id, "recordingId"))
    if body is None:
        raise click.ClickException(f"no recording {recording_id}")
    if watch:
        with click.progressbar(length=100, label=body["state"], show_percent=True) as bar:
            shown = 0
            while body["state"] not in (State.COMPLETED, State.FAILED):
                time.sleep(0.5)
                body = build_status(svc.store, recording_id) or body
                target = int(body["progress"] * 100)
                bar.label = body["state"]
                bar.update(max(0, target - shown))
                shown = max(shown, target)
            bar.update(100 - shown)
    if as_json or not watch:
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo(f"{recording_id}: {body['state']}" + (f" ({body['error']})" if body["error"] else ""))


@click.command()
@click.argument("recording_id")
@with_appcontext
def requeue(recording_id: str) -> None:
    """Queue finalize again for a failed recording (its staged chunks were kept)."""
    from tasks.finalize import enqueue_finalize

    svc = services()
    rec = svc.store.get(_id(recording_id, "recordingId"))
    if rec is None:
        raise click.ClickException(f"no recording {recording_id}")
    if rec["state"] != State.FAILED:
        raise click.ClickException(f"{recording_id} is {rec['state']}; only failed recordings are requeued")
    task_id = str(uuid.uuid4())
    svc.store.requeue(recording_id, task_id)
    enqueue_finalize(recording_id, task_id, room=rec["room"], fmt=rec.get("format"))
    click.echo(f"requeued {recording_id} as task {task_id}")


@click.command()
@click.argument("recording_id")
@with_appcontext
def stop(recording_id: str) -> None:
    """Stop a recording or paused recording (stopReason operator); finalize follows after the grace window."""
    from tasks.maintenance import finalize_after_stop
    from workers.maintenance.autostop import stop_recording

    svc = services()
    recording_id, task_id = _id(recording_id, "recordingId"), str(uuid.uuid4())
    outcome = stop_recording(svc.redis, recording_id, "operator", svc.settings.finalize_grace_seconds, task_id)
    if outcome == "gone":
        raise click.ClickException(f"no recording {recording_id}")
    if outcome != "stopped":
        raise click.ClickException(f"{recording_id} is {outcome}; only a recording or paused one can be stopped")
    finalize_after_stop(svc, recording_id, task_id, svc.store.room_of(recording_id), "operator")
    click.echo(f"stopped {recording_id}; finalize is task {task_id}")


@click.command()
@click.argument("recording_id")
@with_appcontext
def rebuild(recording_id: str) -> None:
    """Rebuild a recording's chunk index from staging (after Redis lost it); then `requeue` finalizes it."""
    from workers.rebuild import rebuild as rebuild_from_staging

    svc = services()
    try:
        report = rebuild_from_staging(svc.store, svc.staging, _id(recording_id, "recordingId"))
    except NotFound as exc:
        raise click.ClickException(exc.message) from None
    if report.recreated:
        click.echo(f"{recording_id}: recreated from staging as failed (requeue it to finalize)")
    click.echo(f"{recording_id}: {report.restored} chunks restored, {report.already_indexed} already indexed")
    for path in report.corrupt:
        click.echo(f"left out (bytes do not match the hash in the name): {path}", err=True)

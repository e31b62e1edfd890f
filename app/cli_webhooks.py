"""Operator commands `flask --app app webhooks list|replay <recordingId>`: see and resend a recording's deliveries."""
from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from app.services import services
from workers.errors import InvalidRequest
from workers.ids import check_id
from workers.webhooks import list_deliveries
from workers.webhooks.outbox import replay as replay_given_up


def _id(value: str) -> str:
    try:
        return check_id(value, "recordingId")
    except InvalidRequest as exc:
        raise click.BadParameter(exc.message) from None


@click.group()
def webhooks() -> None:
    """A recording's webhook outbox."""


@webhooks.command("list")
@click.argument("recording_id")
@with_appcontext
def list_(recording_id: str) -> None:
    """One JSON line per delivery, oldest first: event, state, attempts, lastStatus, nextAttemptAt."""
    for delivery in list_deliveries(services().redis, _id(recording_id)):
        click.echo(json.dumps(delivery.public()))


@webhooks.command()
@click.argument("recording_id")
@with_appcontext
def replay(recording_id: str) -> None:
    """Send again every delivery that was given up, in order, and wake the sender."""
    from tasks.webhooks import deliver_webhooks

    count = replay_given_up(services().redis, _id(recording_id))
    if count:
        deliver_webhooks.apply_async(args=[recording_id])
    click.echo(f"replaying {count} delivery(ies) of {recording_id}")

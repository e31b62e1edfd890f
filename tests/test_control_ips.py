"""CONTROL_ALLOWED_IPS guards recording control; X-Forwarded-For counts only when the peer is in TRUSTED_PROXIES."""
from __future__ import annotations

import logging
import uuid

import pytest

from tests.conftest import JWT_SECRET

ALLOWED = "10.1.2.3"
OUTSIDER = "192.0.2.7"
PROXY = "127.0.0.1"


@pytest.fixture(scope="module")
def guarded_app(stack_env):
    from app import create_app

    return create_app({**stack_env, "CONTROL_ALLOWED_IPS": "10.1.0.0/16, 2001:db8::/32",
                       "TRUSTED_PROXIES": "127.0.0.1/32, 172.16.0.0/12"})


class Control:
    """A host of one room calling start/stop from a chosen address (the test client's REMOTE_ADDR)."""

    def __init__(self, app) -> None:
        from app.auth import mint_token

        self.client, self.room = app.test_client(), f"room-{uuid.uuid4().hex[:10]}"
        self.headers = {"Authorization": f"Bearer {mint_token(JWT_SECRET, self.room, 'host', 'host', 600)}"}

    def call(self, action: str, peer: str, forwarded: str | None = None, token: bool = True):
        headers = dict(self.headers) if token else {}
        if forwarded is not None:
            headers["X-Forwarded-For"] = forwarded
        return self.client.post(f"/video-calls/{self.room}/recording/{action}", headers=headers,
                                environ_base={"REMOTE_ADDR": peer})

    def state(self) -> int | str:
        response = self.client.get(f"/video-calls/{self.room}/recording", headers=self.headers)
        return response.get_json()["state"] if response.status_code == 200 else response.status_code


def forbidden(response) -> None:
    body = response.get_json()
    assert response.status_code == 403, body
    assert body["error"]["code"] == "forbidden" and body["error"]["message"], body


def test_allowed_address_starts_and_stops(guarded_app):
    control = Control(guarded_app)
    assert control.call("start", ALLOWED).status_code == 201
    assert control.call("stop", "2001:db8::5").status_code == 202
    assert control.state() != "recording"


def test_refused_address_is_403_audited_and_changes_nothing(guarded_app, caplog):
    control = Control(guarded_app)
    with caplog.at_level(logging.WARNING, logger="app.control"):
        forbidden(control.call("start", OUTSIDER))
    assert control.state() == 404  # nothing was started
    refused = [r for r in caplog.records if r.getMessage().startswith("control refused")]
    assert refused and (refused[0].address, refused[0].route, refused[0].room, refused[0].sub) == \
        (OUTSIDER, "recordings.start", control.room, "host")

    assert control.call("start", ALLOWED).status_code == 201
    forbidden(control.call("stop", OUTSIDER))
    assert control.state() == "recording"  # still recording: the refused stop did nothing


def test_token_is_checked_before_the_address(guarded_app):
    response = Control(guarded_app).call("start", OUTSIDER, token=False)
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"


def test_forwarded_for_from_an_untrusted_peer_is_ignored(guarded_app):
    control = Control(guarded_app)
    forbidden(control.call("start", OUTSIDER, forwarded=ALLOWED))
    assert control.state() == 404


def test_behind_a_trusted_proxy_the_forwarded_address_counts(guarded_app):
    control = Control(guarded_app)
    forbidden(control.call("start", PROXY))  # the proxy itself is not an allowed controller
    forbidden(control.call("start", PROXY, forwarded=OUTSIDER))
    # a client's own X-Forwarded-For entry is left of what the proxy appended: never believed
    forbidden(control.call("start", PROXY, forwarded=f"{ALLOWED}, {OUTSIDER}"))
    assert control.call("start", PROXY, forwarded=f"{OUTSIDER}, {ALLOWED}, 172.16.0.9").status_code == 201


def test_unset_allows_any_address(app, api):
    assert api.client.post(f"/video-calls/{api.room}/recording/start", headers=api.auth(),
                           environ_base={"REMOTE_ADDR": OUTSIDER}).status_code == 201


@pytest.mark.parametrize("name, value", [("CONTROL_ALLOWED_IPS", "10.0.0.0/33"), ("CONTROL_ALLOWED_IPS", "office"),
                                         ("TRUSTED_PROXIES", "10.0.0.1/8"), ("TRUSTED_PROXIES", "10.0.0.0/8;")])
def test_invalid_cidrs_fail_start_up_naming_the_variable(stack_env, name, value):
    from app import create_app
    from workers.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=name):
        create_app({**stack_env, name: value})


@pytest.mark.parametrize("peer, forwarded, expected", [
    ("10.1.2.3", [], "10.1.2.3"),
    ("::ffff:10.1.2.3", [], "10.1.2.3"),  # a dual-stack listener's view of an IPv4 client
    ("192.0.2.7", ["10.1.2.3"], "192.0.2.7"),
    ("127.0.0.1", ["10.1.2.3"], "10.1.2.3"),
    ("127.0.0.1", ["10.9.9.9, 10.1.2.3", "172.16.0.1"], "10.1.2.3"),  # several headers are one list
    ("127.0.0.1", ["not-an-address"], None),
    ("127.0.0.1", [], "127.0.0.1"),
])
def test_client_address(peer, forwarded, expected):
    import ipaddress

    from app.control import client_address

    trusted = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("172.16.0.0/12"))
    address = client_address(peer, forwarded, trusted)
    assert (str(address) if address is not None else None) == expected

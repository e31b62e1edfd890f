"""Schemathesis against the live app over real HTTP: no 500, every error body in the Error schema, responses as described.

Bounded and reproducible: a fixed seed, derandomized generation and a small max_examples per operation
(the whole run stays well under 3 minutes on 2 cores). Every request carries a valid host token for the
room (and as the participant) it names, so the fuzzer gets past 401 and 403 into validation and state.
"""
from __future__ import annotations

import re

import pytest
import requests
import schemathesis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from app.auth import mint_token
from app.openapi import spec
from app.openapi_components import MAX_TIMESTAMP_MS
from tests.conftest import JWT_SECRET

SEED = 20261201
MAX_EXAMPLES = 100
FALLBACK_ID = "fuzz"
"""Room and subject of the token when the generated request names no well-formed one."""
ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

pytestmark = pytest.mark.timeout(300)


def _named(case: Case, name: str) -> str:
    """A well-formed id the request names in its path or JSON body, else the fallback."""
    for source in (case.path_parameters, case.body):
        value = source.get(name) if isinstance(source, dict) else None
        if isinstance(value, str) and ID.fullmatch(value):
            return value
    return FALLBACK_ID


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.auth(refresh_interval=None)  # minting is cheap, and each request names its own room
class RoomHostToken:
    """A host token for the room the request names, with the participant it names as subject."""

    def get(self, case: Case, ctx) -> str:
        return mint_token(JWT_SECRET, _named(case, "room"), _named(case, "participantId"), "host", 600)

    def set(self, case: Case, data: str, ctx) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="session")
def api_schema(live_server):
    config = SchemathesisConfig.from_dict({
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "request-timeout": 20,
    })
    return schemathesis.openapi.from_url(f"{live_server.url}/openapi.json", config=config)


def _as_the_description_means(case: Case) -> None:
    """Two places where a generated positive case is not what the description means; fix the case, not the check.

    - schemathesis 4.32's coverage phase sends '0' for an optional header whatever its pattern: drop such a header
      (it is optional, so the case stays positive);
    - JSON Schema counts 143.0 as an integer; the API (DESIGN: ids and sequences are integers) wants 143.
    """
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    declared = spec()["paths"][case.operation.path][case.method.lower()].get("parameters", [])
    for parameter in declared:
        pattern = parameter["schema"].get("pattern")
        value = (case.headers or {}).get(parameter["name"])
        if parameter["in"] == "header" and pattern and isinstance(value, str) and not re.search(pattern, value):
            del case.headers[parameter["name"]]
    if isinstance(case.body, dict) and isinstance(case.body.get("sequence"), float):
        case.body["sequence"] = int(case.body["sequence"])


@schema.parametrize()
def test_api_conforms_to_its_description(case: Case, live_server) -> None:
    _as_the_description_means(case)
    response = case.call_and_validate(base_url=live_server.url)
    assert response.status_code != 503, f"503 while every dependency is up: {response.text[:300]}"


# What fuzzing found or was told to look for, pinned as plain requests against the same live server.

@pytest.fixture(scope="module")
def recording(live_server) -> tuple[str, dict[str, str]]:
    """A recording that accepts chunks, and a host token of its room."""
    room = f"fuzz-{SEED}"
    headers = {"Authorization": f"Bearer {mint_token(JWT_SECRET, room, 'alice', 'host', 600)}"}
    response = requests.post(f"{live_server.url}/video-calls/{room}/recording/start", headers=headers, timeout=20)
    body = response.json()
    return body.get("recordingId") or body["error"]["recordingId"], headers


def _assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("timestamp", ["1e400", "1" + "0" * 400, "Infinity", "-Infinity", "NaN", "-1",
                                       str(MAX_TIMESTAMP_MS + 1), "999999999999999"])
def test_a_timestamp_that_cannot_be_a_time_is_400(live_server, recording, timestamp: str) -> None:
    recording_id, headers = recording
    body = ('{"recordingId": "%s", "participantId": "alice", "type": "video", "sequence": 0, "chunk": "GkXfow==", '
            '"timestamp": %s}' % (recording_id, timestamp))
    response = requests.post(f"{live_server.url}/video-calls/chunks/upload", data=body, timeout=20,
                             headers={**headers, "Content-Type": "application/json"})
    _assert_error(response, 400, "invalid_request")
    url = f"{live_server.url}/video-calls/recordings/{recording_id}/participants/alice/video/chunks/0"
    response = requests.put(url, data=b"\x1a\x45\xdf\xa3", timeout=20,
                            headers={**headers, "Tapedeck-Timestamp": timestamp})
    _assert_error(response, 400, "invalid_request")


def test_json_nested_too_deep_is_400(live_server, recording) -> None:
    _, headers = recording
    response = requests.post(f"{live_server.url}/video-calls/chunks/upload", data="[" * 100_000, timeout=20,
                             headers={**headers, "Content-Type": "application/json"})
    _assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("last_event_id", ["\u0661-\u0661", "99999999999999999999-0", "0-18446744073709551616"])
def test_a_stream_id_redis_cannot_read_is_400_not_an_endless_unavailable_stream(live_server, recording,
                                                                                 last_event_id: str) -> None:
    """Arabic-Indic digits match \\d, and 20 digits overflow Redis's 64-bit parts: the stream used to open and
    say 'unavailable' forever (EventSource reconnects with the same id)."""
    recording_id, headers = recording
    response = requests.get(f"{live_server.url}/video-calls/recordings/{recording_id}/events", timeout=20,
                            params={"lastEventId": last_event_id}, headers=headers, stream=True)
    with response:
        _assert_error(response, 400, "invalid_request")


def test_a_download_signature_that_is_not_ascii_is_404_not_500(live_server) -> None:
    """hmac.compare_digest raises TypeError on non-ASCII text (a 500); the link is simply not valid."""
    response = requests.get(f"{live_server.url}/files/recordings/r/rec/alice.webm", timeout=20,
                            params={"expires": str(2**40), "sig": "\u00e9"})
    _assert_error(response, 404, "not_found")

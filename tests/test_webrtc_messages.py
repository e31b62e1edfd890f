"""Signalling message validation: every bad frame is a clear code, never an exception of its own."""
from __future__ import annotations

import json

import pytest

from workers.webrtc.messages import (
    MAX_MESSAGE_BYTES, Bye, Candidate, BadMessage, Offer, TokenRefresh, parse_message,
)


def test_good_messages_parse() -> None:
    assert parse_message('{"type":"offer","sdp":"v=0"}') == Offer(type="offer", sdp="v=0")
    assert isinstance(parse_message('{"type":"bye"}'), Bye)
    assert parse_message('{"type":"token","token":"abc"}') == TokenRefresh(type="token", token="abc")
    c = parse_message(json.dumps({"type": "candidate", "candidate": "candidate:1", "sdpMid": "0", "sdpMLineIndex": 0}))
    assert isinstance(c, Candidate) and c.sdpMLineIndex == 0


@pytest.mark.parametrize("raw,code", [
    ("not json", "bad_json"),
    ("[" * 100000 + "]" * 100000, "message_too_large"),
    ("[" * 30000 + "]" * 30000, "bad_json"),
    ("[1]", "bad_message"),
    ('{"type": 3}', "bad_message"),
    ('{"type":"dance"}', "unknown_type"),
    ('{"type":"offer"}', "bad_message"),
    ('{"type":"offer","sdp":""}', "bad_message"),
    ('{"type":"offer","sdp":"v=0","extra":1}', "bad_message"),
    ('{"type":"token","token":7}', "bad_message"),
    ('{"type":"candidate","candidate":"x","sdpMLineIndex":-1}', "bad_message"),
])
def test_bad_messages_have_codes(raw: str, code: str) -> None:
    with pytest.raises(BadMessage) as info:
        parse_message(raw)
    assert info.value.code == code and info.value.message


def test_size_bound_is_exact() -> None:
    pad = MAX_MESSAGE_BYTES - len('{"type":"bye","x":""}')
    with pytest.raises(BadMessage) as info:
        parse_message('{"type":"bye","x":"' + "a" * (pad + 1) + '"}')
    assert info.value.code == "message_too_large"
    with pytest.raises(BadMessage) as info:
        parse_message('{"type":"bye","x":"' + "a" * pad + '"}')
    assert info.value.code == "bad_message"

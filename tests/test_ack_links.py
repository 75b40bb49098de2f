"""Signed ack links: sign/verify round trip and every way a token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.ack_links import (
    AckLinkError,
    is_short_code,
    link_url,
    new_short_code,
    short_url,
    sign,
    token_of,
    unverified_expiry,
    verify,
)
from notifier.channels.templates import VARIABLE_MAX_CHARS

SECRET = "s3cret"
NOW = 1_764_000_000_000
EXPIRES = NOW + 3_600_000
ALERT = "8a6e0804-2bd0-4672-b79d-d97027f9c1c4"


def _reason(token: str, now: int = NOW, secret: str = SECRET) -> str:
    with pytest.raises(AckLinkError) as exc:
        verify(token, now, secret)
    return exc.value.reason


def test_round_trip_and_url() -> None:
    token = sign(ALERT, "grid_worker", "GW1", EXPIRES, SECRET)
    claim = verify(token, NOW, SECRET)
    assert (claim.alert_id, claim.recipient_kind, claim.recipient_id) == (
        ALERT,
        "grid_worker",
        "GW1",
    )
    assert claim.expires_ms == EXPIRES
    assert claim.actor == "grid_worker:GW1"
    assert claim.token_id == token.split(".")[1]
    assert link_url("http://h:1/", token) == f"http://h:1/ack/{token}"
    assert all(c.isalnum() or c in "-_." for c in token)  # URL-safe as is


def test_expired() -> None:
    token = sign(ALERT, "family", "7", EXPIRES, SECRET)
    assert _reason(token, now=EXPIRES) == "expired"


def test_bad_signature_from_another_key() -> None:
    token = sign(ALERT, "family", "7", EXPIRES, "other-secret")
    assert _reason(token) == "bad_signature"


def test_tampered_payload_is_a_bad_signature() -> None:
    token = sign(ALERT, "family", "7", EXPIRES, SECRET)
    payload, sig = token.split(".")
    forged = (
        base64.urlsafe_b64encode(msgspec.json.encode([ALERT, "duty_officer", "DO1", EXPIRES * 2]))
        .rstrip(b"=")
        .decode()
    )
    assert _reason(f"{forged}.{sig}") == "bad_signature"
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    assert _reason(f"{payload}.{flipped}") == "bad_signature"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "malformed"),
        ("abc", "malformed"),
        (".", "malformed"),
        ("abc.", "malformed"),
        (".abc", "malformed"),
        ("中文.签名", "malformed"),
        ("a.b.c", "bad_signature"),  # the signature part is "b.c", which does not match
    ],
)
def test_malformed(token: str, reason: str) -> None:
    assert _reason(token) == reason


def test_validly_signed_garbage_is_malformed() -> None:
    # a correctly signed payload that is not our JSON (e.g. an old format) is malformed
    payload = base64.urlsafe_b64encode(b'{"not": "a claim"}').rstrip(b"=").decode()
    sig = (
        base64.urlsafe_b64encode(
            hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).digest()
        )
        .rstrip(b"=")
        .decode()
    )
    assert _reason(f"{payload}.{sig}") == "malformed"


@given(st.text(max_size=80))
def test_arbitrary_text_never_verifies_or_crashes(token: str) -> None:
    with pytest.raises(AckLinkError):
        verify(token, NOW, SECRET)


def test_short_codes_are_short_url_safe_and_unguessable() -> None:
    codes = {new_short_code() for _ in range(1000)}
    assert len(codes) == 1000
    for code in codes:
        assert is_short_code(code) and len(code) == 12 <= VARIABLE_MAX_CHARS
        assert all(c.isascii() and (c.isalnum() or c in "-_") for c in code)
    assert short_url("https://ack.example.cn/", "Ab3_x-Yz09Qw") == (
        "https://ack.example.cn/a/Ab3_x-Yz09Qw"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Ab3_x-Yz09Q",
        "Ab3_x-Yz09Qwe",
        "Ab3_x-Yz09Q=",
        "Ab3_x-Yz0/Qw",
        "短码短码短码短码短码短码",
    ],
)
def test_what_is_not_a_short_code(text: str) -> None:
    assert not is_short_code(text)


def test_a_link_gives_back_its_token_and_expiry() -> None:
    token = sign(ALERT, "grid_worker", "GW1", EXPIRES, SECRET)
    assert token_of(link_url("https://ack.example.cn", token)) == token
    assert unverified_expiry(token) == EXPIRES
    with pytest.raises(AckLinkError):
        unverified_expiry("x.y")

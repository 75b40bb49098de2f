"""Signed acknowledgement links: who may act on which alert, until when.

A token is `{payload}.{signature}`, both base64url without padding. The payload is the
JSON array [alert_id, recipient_kind, recipient_id, expires_ms]; the signature is
HMAC-SHA256 over the encoded payload. The signature doubles as the token id recorded in
`ack_uses`, so a replayed link is recognised whatever the payload looks like.

An SMS cannot carry the token (Aliyun caps a template variable at 35 characters and
wants the link's domain fixed in the template), so it carries a short random code
instead: `/a/{code}` is resolved server-side to the token (`notifier.short_links`) and
then honoured exactly like `/ack/{token}`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

import msgspec

AckLinkReason = Literal["malformed", "bad_signature", "expired"]


class AckLinkError(ValueError):
    def __init__(self, reason: AckLinkReason) -> None:
        super().__init__(f"ack link rejected: {reason}")
        self.reason: AckLinkReason = reason


@dataclass(frozen=True, slots=True)
class AckClaim:
    alert_id: str
    recipient_kind: str
    recipient_id: str
    expires_ms: int
    token_id: str

    @property
    def actor(self) -> str:
        return f"{self.recipient_kind}:{self.recipient_id}"


_Payload = tuple[str, str, str, int]
_payload_decoder = msgspec.json.Decoder(_Payload)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(payload_b64: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), payload_b64.encode("ascii"), hashlib.sha256).digest()
    return _b64encode(digest)


def sign(
    alert_id: str, recipient_kind: str, recipient_id: str, expires_ms: int, secret: str
) -> str:
    payload = _b64encode(msgspec.json.encode((alert_id, recipient_kind, recipient_id, expires_ms)))
    return f"{payload}.{_mac(payload, secret)}"


def verify(token: str, now_ms: int, secret: str) -> AckClaim:
    """The claim a token carries; raises AckLinkError when it is not to be honoured."""
    payload_b64, dot, signature = token.partition(".")
    if not dot or not payload_b64 or not signature or not token.isascii():
        raise AckLinkError("malformed")
    # Check the signature before looking inside: a forged payload is never parsed.
    if not hmac.compare_digest(signature, _mac(payload_b64, secret)):
        raise AckLinkError("bad_signature")
    try:
        alert_id, kind, recipient_id, expires_ms = _payload_decoder.decode(_b64decode(payload_b64))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise AckLinkError("malformed") from None
    if now_ms >= expires_ms:
        raise AckLinkError("expired")
    return AckClaim(alert_id, kind, recipient_id, expires_ms, signature)


LINK_PATH = "/ack/"


def link_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}{LINK_PATH}{token}"


def token_of(url: str) -> str:
    """The token of a `link_url` (the inverse; a token never contains '/')."""
    return url.rpartition(LINK_PATH)[2]


# 9 random bytes = 12 base64url characters, 72 bits: with a million live codes an
# attacker needs ~2**52 guesses per hit, and a code alone grants no more than its token.
SHORT_CODE_BYTES = 9
SHORT_CODE_RE = re.compile(r"[A-Za-z0-9_-]{12}")
SHORT_PATH = "/a/"


def new_short_code() -> str:
    return secrets.token_urlsafe(SHORT_CODE_BYTES)


def is_short_code(text: str) -> bool:
    """Whether text has the shape of a short code (checked before any lookup)."""
    return SHORT_CODE_RE.fullmatch(text) is not None


def short_url(base_url: str, code: str) -> str:
    return f"{base_url.rstrip('/')}{SHORT_PATH}{code}"


def unverified_expiry(token: str) -> int:
    """expires_ms of a token this process has just signed, without the secret.

    Only for remembering a fresh token's expiry next to its short code; anything that
    decides whether to honour a token calls `verify`. Raises AckLinkError("malformed")."""
    payload_b64 = token.partition(".")[0]
    try:
        expires_ms: int = _payload_decoder.decode(_b64decode(payload_b64))[3]
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise AckLinkError("malformed") from None
    return expires_ms

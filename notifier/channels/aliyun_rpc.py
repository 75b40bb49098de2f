"""Aliyun RPC-style API signing (signature version 1.0, HMAC-SHA1). Pure functions.

Shared by the SMS adapter (which signs) and the fake provider (which verifies), so the
algorithm lives in one place; tests pin it to the vectors in Aliyun's documentation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def percent_encode(value: str) -> str:
    """RFC 3986 encoding of UTF-8 bytes as Aliyun specifies it.

    Only A-Z a-z 0-9 - _ . ~ stay as they are; space becomes %20 (not +), * becomes %2A
    and ~ is left unchanged, which is exactly `quote` with nothing but "~" safe.
    """
    return quote(value, safe="~")


def canonicalized_query(params: Mapping[str, str]) -> str:
    """Parameters (without Signature) sorted by name, each name and value encoded."""
    return "&".join(
        f"{percent_encode(k)}={percent_encode(v)}"
        for k, v in sorted(params.items())
        if k != "Signature"
    )


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonicalized_query(params))}"


def sign(method: str, params: Mapping[str, str], access_key_secret: str) -> str:
    """Base64 HMAC-SHA1 of the string to sign, keyed with the secret plus "&"."""
    digest = hmac.new(
        f"{access_key_secret}&".encode(),
        string_to_sign(method, params).encode(),
        hashlib.sha1,
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(method: str, params: Mapping[str, str], access_key_secret: str) -> bool:
    expected = sign(method, params, access_key_secret)
    return hmac.compare_digest(expected, params.get("Signature", ""))


def format_timestamp(epoch_ms: int) -> str:
    """ISO 8601 UTC to the second, as the Timestamp parameter wants it."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(value: str) -> int:
    """Epoch ms of a Timestamp parameter; ValueError if it is not in Aliyun's format."""
    parsed = datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def new_nonce() -> str:
    """A fresh SignatureNonce; Aliyun rejects a nonce it has seen in the last 15 minutes."""
    return secrets.token_hex(16)


def signed_params(
    method: str,
    action_params: Mapping[str, str],
    *,
    access_key_id: str,
    access_key_secret: str,
    version: str,
    epoch_ms: int,
    nonce: str,
) -> dict[str, str]:
    """The common RPC parameters plus the action's, with the Signature added."""
    params = {
        "Format": "JSON",
        "Version": version,
        "AccessKeyId": access_key_id,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": nonce,
        "Timestamp": format_timestamp(epoch_ms),
        **action_params,
    }
    params["Signature"] = sign(method, params, access_key_secret)
    return params

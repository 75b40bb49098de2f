"""Phone numbers: which ones can receive an SMS."""

from __future__ import annotations

import re

# Mainland China mobile numbers, optionally with the +86 country code.
MOBILE_RE = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$")


def is_mobile(phone: str) -> bool:
    """True for a number that can receive SMS (landlines such as 023-12345678 cannot)."""
    return MOBILE_RE.match(phone.replace(" ", "").replace("-", "")) is not None

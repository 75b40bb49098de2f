"""Phone numbers: which ones can receive an SMS, and masking them wherever they appear.

`mask_phones` is the one owner of masking: the log formatters (carewatch.logs), the
operator API (operator_api.masking) and the demo all call it.
"""

from __future__ import annotations

import re

# Mainland China mobile numbers, optionally with the +86 country code.
MOBILE_RE = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$")

# In free text. A mobile number: 1[3-9]x xxxx xxxx, optionally +86, with at most one
# space or dash between the groups of 3-4-4 ('138 1234 5678', '138-1234-5678').
_MOBILE_IN_TEXT = re.compile(
    r"(?<!\d)(?P<cc>\+?86[- ]?)?(?P<head>1[3-9]\d)(?P<sep1>[- ]?)(?P<mid>\d{4})"
    r"(?P<sep2>[- ]?)(?P<tail>\d{4})(?!\d)"
)
# A landline with its area code: 0 + 2-3 digits (023, 0851), optionally in (full-width)
# brackets, or +86 and the code without its 0; then 7-8 digits, maybe split by a space
# or dash ('023-6385 1234'), maybe an extension ('-801'). Not glued to letters, digits
# or a dash before it, so the digits of an id or a UUID ('-02312345678') are left alone.
_LANDLINE_IN_TEXT = re.compile(
    r"(?<![0-9A-Za-z-])"
    r"(?P<area>[(（]0[1-9]\d{1,2}[)）][- ]?|0[1-9]\d{1,2}?[- ]?|\+?86[- ]?[1-9]\d{1,2}[- ]?)"
    r"(?P<number>\d{3,4}[- ]?\d{4})(?P<ext>-\d{1,5})?(?![0-9A-Za-z])"
)


def is_mobile(phone: str) -> bool:
    """True for a number that can receive SMS (landlines such as 023-12345678 cannot)."""
    return MOBILE_RE.match(phone.replace(" ", "").replace("-", "")) is not None


# A fixed line: area code (0 + 2-3 digits, or +86 and the code without its 0) and a
# 7-8 digit number, or a local number alone.
_LANDLINE_RE = re.compile(r"^(?:(?:0[1-9]\d{1,2}|\+?86[1-9]\d{1,2})\d{7,8}|[2-9]\d{6,7})$")


def is_landline(phone: str) -> bool:
    """True for a fixed-line number (023-63851234, (023)63851234, 63851234): it takes
    calls, never SMS."""
    compact = re.sub(r"[\s()（）-]", "", phone)
    return not is_mobile(compact) and _LANDLINE_RE.match(compact) is not None


def _mask_mobile(m: re.Match[str]) -> str:
    return f"{m['cc'] or ''}{m['head']}{m['sep1']}****{m['sep2']}{m['tail']}"


def _mask_landline(m: re.Match[str]) -> str:
    number = m["number"]
    return f"{m['area']}{re.sub(r'[0-9]', '*', number[:-4])}{number[-4:]}{m['ext'] or ''}"


def mask_phones(text: str) -> str:
    """Every phone number in `text`, masked: '13812345678' -> '138****5678',
    '023-63851234' -> '023-****1234' (area code and last four digits kept)."""
    return _LANDLINE_IN_TEXT.sub(_mask_landline, _MOBILE_IN_TEXT.sub(_mask_mobile, text))

"""Phone numbers in responses: shown to admins, masked ('138****5678') for everyone else."""

from __future__ import annotations

from typing import Any, overload

from carewatch.logs import mask_phone
from operator_api.scope import Principal


@overload
def mask_text(principal: Principal, text: str) -> str: ...
@overload
def mask_text(principal: Principal, text: None) -> None: ...
def mask_text(principal: Principal, text: str | None) -> str | None:
    if text is None or principal.sees_phone_numbers:
        return text
    return mask_phone(text)


def mask_json(principal: Principal, value: Any) -> Any:
    """Mask every string inside a JSON value (notes and details are free text)."""
    if principal.sees_phone_numbers:
        return value
    if isinstance(value, str):
        return mask_phone(value)
    if isinstance(value, dict):
        return {k: mask_json(principal, v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_json(principal, v) for v in value]
    return value

"""Phone numbers in responses: shown to admins, masked ('138****5678', '023-****1234')
for everyone else, wherever they appear.

Which fields can hold one is declared where the responses are typed
(operator_api.models): a `FreeText` field (names, addresses, relations, WeCom userids,
error texts...) and every string inside a JSON `details` object. `mask_model` masks
them all in one walk, so an endpoint cannot forget a field. The rule itself is
carewatch.phones.mask_phones.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

from pydantic import BaseModel

from carewatch.phones import mask_phones
from operator_api.models import FREE_TEXT
from operator_api.scope import Principal

M = TypeVar("M", bound=BaseModel)


@overload
def mask_text(principal: Principal, text: str) -> str: ...
@overload
def mask_text(principal: Principal, text: None) -> None: ...
def mask_text(principal: Principal, text: str | None) -> str | None:
    if text is None or principal.sees_phone_numbers:
        return text
    return mask_phones(text)


def _mask_any(value: Any) -> Any:
    if isinstance(value, str):
        return mask_phones(value)
    if isinstance(value, dict):
        return {_mask_any(k): _mask_any(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_any(v) for v in value]
    return value


def mask_json(principal: Principal, value: Any) -> Any:
    """Mask every string inside a JSON value (notes and details are free text)."""
    return value if principal.sees_phone_numbers else _mask_any(value)


def _masked(model: M) -> M:
    changes: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            changes[name] = _masked(value)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            changes[name] = [_masked(v) for v in value]
        elif FREE_TEXT in field.metadata and value is not None:
            changes[name] = _mask_any(value)
    return model.model_copy(update=changes)


def mask_model(principal: Principal, model: M) -> M:
    """`model` with every phone number in its free text masked, unless the caller may
    see them."""
    return model if principal.sees_phone_numbers else _masked(model)


def mask_models(principal: Principal, models: list[M]) -> list[M]:
    return [mask_model(principal, m) for m in models]

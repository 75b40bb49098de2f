"""Personal data in the operator API, per role: phone numbers (mobiles and landlines) are
masked wherever they appear in free text for everyone but admins, and the OpenAPI
document and docs page need a token like the API itself."""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest
from pydantic import BaseModel

from carewatch.phones import mask_phones
from harness.services import Proc
from operator_api import models
from tests.operator_support import A1, REPORT_DAY, Tokens, seed, serving

# Phone numbers hidden in free-text fields of the registry and the alert records.
IN_NAME = "13811112222"
IN_ADDRESS = "023-63851234"
IN_RELATION = "13933334444"
CONTACT_NAME_LANDLINE = "(023)67712345"
WECOM_USERID = "13955556666"
CONTACT_PHONE_LANDLINE = "023-68886666"
STATION_LANDLINE = "023-63001234"
IN_LAST_ERROR = "13877778888"
IN_DETAILS = "0851-1234567"
SECRETS = (
    IN_NAME,
    IN_ADDRESS,
    IN_RELATION,
    CONTACT_NAME_LANDLINE,
    WECOM_USERID,
    CONTACT_PHONE_LANDLINE,
    STATION_LANDLINE,
    IN_LAST_ERROR,
    IN_DETAILS,
)
DIGITS = re.compile(r"\d")


def digits(text: str) -> str:
    return "".join(DIGITS.findall(text))


def leaks(text: str) -> list[str]:
    """The hidden numbers readable in `text` (also with separators or JSON escapes)."""
    compact = digits(text)
    return [n for n in SECRETS if n in text or digits(n) in compact]


def hide_numbers(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE elders SET name = %s, address = %s WHERE id = 'E1'",
            (f"张秀英{IN_NAME}", f"民族路1号 家中电话{IN_ADDRESS}"),
        )
        conn.execute(
            "UPDATE contacts SET name = %s, relation = %s, wecom_userid = %s, phone = %s"
            " WHERE elder_id = 'E1'",
            (
                f"张伟 {CONTACT_NAME_LANDLINE}",
                f"儿子，备用{IN_RELATION}",
                WECOM_USERID,
                CONTACT_PHONE_LANDLINE,
            ),
        )
        conn.execute("UPDATE stations SET phone = %s WHERE id = 'S1'", (STATION_LANDLINE,))
        conn.execute(
            "UPDATE notifications SET last_error = %s WHERE idempotency_key = 'k2'",
            (f"isv.MOBILE_NUMBER_ILLEGAL {IN_LAST_ERROR}",),
        )
        conn.execute(
            "UPDATE alerts SET details = jsonb_build_object('note', %s::text) WHERE id = %s",
            (f"家属来电 {IN_DETAILS}", A1),
        )
        conn.execute(
            "INSERT INTO alert_events (alert_id, at, actor, action, details)"
            " VALUES (%s, now(), 'operator:op-yz', 'note', jsonb_build_object('text', %s::text))",
            (A1, f"已联系 {IN_RELATION}"),
        )


@dataclass
class Site:
    base: str
    tokens: Tokens
    http: httpx.AsyncClient

    async def get(self, path: str, token: str | None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.http.get(self.base + path, params=params or None, headers=headers)


@pytest.fixture
async def site(db_dsn: str, redis_server: Proc) -> AsyncIterator[Site]:
    tokens = seed(db_dsn)
    hide_numbers(db_dsn)
    async with serving(db_dsn, redis_server.port) as base, httpx.AsyncClient(timeout=10) as http:
        yield Site(base, tokens, http)


READS = (
    "/api/elders",
    "/api/elders/E1",
    "/api/alerts",
    f"/api/alerts/{A1}",
    "/api/stations",
    f"/api/reports/daily?date={REPORT_DAY}",
)


async def read_everything(site: Site, token: str) -> str:
    texts = []
    for path in READS:
        response = await site.get(path, token)
        assert response.status_code == 200, (path, response.text)
        texts.append(response.text)
    return "\n".join(texts)


@pytest.mark.parametrize("role", ["gw1", "operator_yuzhong", "operator_all"])
async def test_no_phone_number_reaches_a_grid_worker_or_an_operator(site: Site, role: str) -> None:
    token = getattr(site.tokens, role)
    everything = await read_everything(site, token)
    assert leaks(everything) == []
    elder = (await site.get("/api/elders/E1", token)).json()
    assert elder["name"] == "张秀英138****2222"
    assert elder["address"] == "民族路1号 家中电话023-****1234"
    (contact,) = elder["contacts"]
    assert contact["name"] == "张伟 (023)****2345"
    assert contact["relation"] == "儿子，备用139****4444"
    assert contact["wecom_userid"] == "139****6666"
    assert contact["phone"] == "023-****6666"
    alert = (await site.get(f"/api/alerts/{A1}", token)).json()
    assert alert["elder_name"] == "张秀英138****2222"
    assert alert["details"]["note"] == "家属来电 0851-***4567"
    assert alert["events"][-1]["details"]["text"] == "已联系 139****4444"
    assert "138****8888" in alert["notifications"][1]["last_error"]
    stations = (await site.get("/api/stations", token)).json()
    assert "023-****1234" in {s["phone"] for s in stations}


async def test_the_phone_page_masks_names_too(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.base, timeout=10) as http:
        await http.get("/m", params={"token": site.tokens.gw1})
        page = await http.get("/m")
    assert page.status_code == 200
    assert "张秀英138****2222" in page.text
    assert leaks(page.text) == []


async def test_an_admin_sees_the_numbers(site: Site) -> None:
    everything = await read_everything(site, site.tokens.admin)
    assert set(leaks(everything)) == set(SECRETS)
    elder = (await site.get("/api/elders/E1", site.tokens.admin)).json()
    assert elder["contacts"][0]["wecom_userid"] == WECOM_USERID


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
async def test_schema_and_docs_need_a_token(site: Site, path: str) -> None:
    missing = await site.get(path, None)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "paths" not in missing.text and "swagger" not in missing.text.lower()
    assert (await site.get(path, "cwo_forged")).status_code == 401
    for role in ("gw1", "operator_all", "admin"):
        ok = await site.get(path, getattr(site.tokens, role))
        assert ok.status_code == 200, (role, ok.text[:200])
    assert "/api/alerts/{alert_id}" in ok.text  # the document, inline on the docs page too


# --- every string a response carries is classified -------------------------------------

# Ids, enum values and fixed labels: never free text, never masked.
NOT_FREE_TEXT = {
    ("AlertSummary", "elder_id"),
    ("AlertSummary", "district"),
    ("AlertSummary", "grid_id"),
    ("AlertSummary", "kind"),
    ("AlertSummary", "kind_label"),
    ("AlertSummary", "status_label"),
    ("AlertSummary", "device_id"),
    ("AlertEventOut", "action"),
    ("NotificationOut", "purpose"),
    ("NotificationOut", "channel"),
    ("NotificationOut", "recipient_kind"),
    ("NotificationOut", "status"),
    ("EscalationOut", "policy"),
    ("AlertDetail", "source_event_id"),
    ("AlertDetail", "rule"),
    ("DeviceOut", "id"),
    ("DeviceOut", "kind"),
    ("ElderSummary", "id"),
    ("ElderSummary", "district"),
    ("ElderSummary", "grid_id"),
    ("ElderSummary", "care_profile_id"),
    ("StationOut", "id"),
    ("StationOut", "kind"),
    ("StationOut", "district"),
    ("SilentElder", "elder_id"),
    ("SilentElder", "grid_id"),
    ("DailyReport", "district"),  # the caller's own filter, echoed
    ("DailyReport", "grid"),
    ("DailyReport", "alerts_by_kind"),  # alert kinds -> counts
    ("ActionIn", "note"),  # a request body
    ("DispatchIn", "id"),  # request bodies too
    ("FalseAlarmIn", "reason"),
    ("CheckinOut", "elder_id"),
    ("CheckinOut", "outcome_label"),
    ("VisitItemOut", "elder_id"),
    ("VisitItemOut", "grid_id"),
    ("AreaReportRow", "district"),
    ("AreaReportRow", "street"),
}
NOT_TEXT = (int, float, bool, datetime, date, time, UUID, type(None))


def carries_text(annotation: Any) -> bool:
    if annotation in NOT_TEXT:
        return False
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return False  # an enum (AlertStatus, Severity)
    if origin in (typing.Union, types.UnionType):
        return any(carries_text(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return False  # walked on its own
    if origin is list:
        return carries_text(typing.get_args(annotation)[0])
    return True  # str, dict[str, Any] ...


def test_every_response_string_is_free_text_or_an_id() -> None:
    unclassified = []
    for model in vars(models).values():
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        if model is BaseModel:
            continue
        for name, field in model.model_fields.items():
            owner = next(c for c in model.__mro__ if name in inspect.get_annotations(c))
            free = models.FREE_TEXT in field.metadata
            listed = (owner.__name__, name) in NOT_FREE_TEXT
            if carries_text(field.annotation) and not free and not listed:
                unclassified.append(f"{owner.__name__}.{name}")
    assert not unclassified, f"add FreeText or list as an id: {unclassified}"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("13812345678", "138****5678"),
        ("+86 138 1234 5678", "+86 138 **** 5678"),
        ("138-1234-5678", "138-****-5678"),
        ("电话023-63851234", "电话023-****1234"),
        ("（023）6385 1234", "（023）**** 1234"),
        ("(023)63851234", "(023)****1234"),
        ("02363851234", "023****1234"),
        ("0851-1234567", "0851-***4567"),
        ("+86-23-63851234", "+86-23-****1234"),
        ("023-63851234-801", "023-****1234-801"),
        # not phone numbers: ids, UUIDs, dates, epoch milliseconds, house numbers
        ("00000000-0000-4000-8000-023123456789", "00000000-0000-4000-8000-023123456789"),
        ("2026-11-20T10:00:00+08:00", "2026-11-20T10:00:00+08:00"),
        ("1733481234567", "1733481234567"),
        ("民族路12号3单元", "民族路12号3单元"),
    ],
)
def test_mask_phones(text: str, masked: str) -> None:
    assert mask_phones(text) == masked

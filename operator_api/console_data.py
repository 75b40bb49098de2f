"""What the dispatcher console shows, read under the caller's scope.

The alert card reuses the API's own readers (operator_api.alerts.get_alert,
operator_api.elders.get_elder), so the console shows exactly what the API would, with
the same scope checks and masking. Only the full phone numbers a dispatcher dials
(Principal.dials_contacts) are read here, for in-scope elders only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, LiteralString
from uuid import UUID

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from carewatch.care_notes import CareNotes
from notifier import targets
from operator_api import alerts as alerts_api
from operator_api import elders as elders_api
from operator_api.db import Row, Where, fetch_all, fetch_one, scope_conditions
from operator_api.elders import LAST_SIGN_OF_LIFE, LIFE_JOINS, life_horizon
from operator_api.labels import SITE_TZ_NAME, kind_label, severity_label, status_label
from operator_api.masking import mask_text
from operator_api.scope import Principal

OPEN_STATUSES = ("pending", "open", "acknowledged")
SEARCH_LIMIT = 100
LOW_BATTERY_PERCENT = 20  # the card marks it too (console.js)

# The search's device filter: code -> (Chinese label, condition on elder `e`).
DeviceState = Literal["offline", "low_battery", "no_device", "all_online"]
_DEVICE_CONDITIONS: dict[str, tuple[str, LiteralString]] = {
    "offline": (
        "有设备离线",
        "EXISTS (SELECT 1 FROM devices d WHERE d.elder_id = e.id AND NOT d.online)",
    ),
    "low_battery": (
        f"电量低于{LOW_BATTERY_PERCENT}%",
        "EXISTS (SELECT 1 FROM devices d WHERE d.elder_id = e.id AND d.battery < 20)",
    ),
    "no_device": ("未绑定设备", "NOT EXISTS (SELECT 1 FROM devices d WHERE d.elder_id = e.id)"),
    "all_online": (
        "设备全部在线",
        "EXISTS (SELECT 1 FROM devices d WHERE d.elder_id = e.id)"
        " AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.elder_id = e.id AND NOT d.online)",
    ),
}
DEVICE_STATES: dict[str, str] = {code: label for code, (label, _c) in _DEVICE_CONDITIONS.items()}
NEARBY_STATIONS = 3  # the dispatch list's stations, nearest first

# The queue: most severe first, then the longest waiting.
_QUEUE: LiteralString = (
    "SELECT a.id, a.elder_id, e.name AS elder_name, e.address, e.district, e.street,"
    " e.grid_id, g.name AS grid_name, e.care_profile_id, p.name AS care_profile_name,"
    " e.lives_alone, a.kind, a.severity, a.status, a.opened_at, a.acknowledged_at,"
    " a.acknowledged_by, a.updates, s.step AS escalation_step, s.next_step_at"
    " FROM alerts a JOIN elders e ON e.id = a.elder_id"
    " LEFT JOIN grids g ON g.id = e.grid_id"
    " LEFT JOIN care_profiles p ON p.id = e.care_profile_id"
    " LEFT JOIN escalations s ON s.alert_id = a.id"
)
_ORDER: LiteralString = (
    " ORDER BY CASE a.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,"
    " a.opened_at, a.id"
)


async def db_now(conn: AsyncConnection[Any]) -> datetime:
    row = await fetch_one(conn, "SELECT now() AS now")
    assert row is not None
    now: datetime = row["now"]
    return now


def queue_item(principal: Principal, row: Row) -> dict[str, Any]:
    """One queue row as JSON-ready values, with Chinese labels and free text masked."""
    return {
        **row,
        "id": str(row["id"]),
        "elder_name": mask_text(principal, row["elder_name"]),
        "address": mask_text(principal, row["address"]),
        "kind_label": kind_label(row["kind"]),
        "severity_label": severity_label(row["severity"]),
        "status_label": status_label(row["status"]),
        "opened_at": row["opened_at"].isoformat(),
        "acknowledged_at": _iso(row["acknowledged_at"]),
        "next_step_at": _iso(row["next_step_at"]),
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


async def open_queue(pool: AsyncConnectionPool, principal: Principal) -> list[dict[str, Any]]:
    """The open alerts the caller may see, most severe and oldest first."""
    where = Where()
    scope_conditions(where, principal)
    where.add("a.status = ANY(%s)", list(OPEN_STATUSES))
    async with pool.connection() as conn:
        rows = await fetch_all(
            conn,
            sql.SQL(_QUEUE) + where.clause() + sql.SQL(_ORDER + " LIMIT 500"),
            where.params,
        )
    return [queue_item(principal, r) for r in rows]


async def queue_entry(
    pool: AsyncConnectionPool, principal: Principal, alert_id: str
) -> dict[str, Any] | None:
    """One alert as a queue row, or None when it is not the caller's to see (or gone).
    Used by the live stream: an alert outside the scope yields nothing at all."""
    try:
        UUID(alert_id)
    except ValueError:
        return None
    where = Where()
    scope_conditions(where, principal)
    where.add("a.id = %s", alert_id)
    async with pool.connection() as conn:
        row = await fetch_one(conn, sql.SQL(_QUEUE) + where.clause(), where.params)
    return None if row is None else queue_item(principal, row)


async def _dialable(
    conn: AsyncConnection[Any], principal: Principal, elder_id: str, grid_id: str
) -> dict[str, Any]:
    """Phone numbers to call about an in-scope elder: full for a dispatcher, masked
    otherwise. The caller has already checked the elder is in scope."""
    elder = await fetch_one(conn, "SELECT phone FROM elders WHERE id = %s", (elder_id,))
    key_holder = await fetch_one(
        conn,
        "SELECT key_holder_name AS name, key_holder_phone AS phone FROM elder_care_notes"
        " WHERE elder_id = %s AND key_holder_phone IS NOT NULL",
        (elder_id,),
    )
    contacts = await fetch_all(
        conn,
        "SELECT priority, name, relation, phone FROM contacts WHERE elder_id = %s"
        " ORDER BY priority",
        (elder_id,),
    )
    workers = await fetch_all(
        conn,
        "SELECT id, name, phone FROM grid_workers WHERE grid_id = %s ORDER BY id",
        (grid_id,),
    )

    def phone(number: str | None) -> str | None:
        if number is None or principal.dials_contacts:
            return number
        return mask_text(principal, number)

    return {
        "full_numbers": principal.dials_contacts,
        "elder": phone(elder["phone"] if elder else None),
        "contacts": [
            {**c, "name": mask_text(principal, c["name"]), "phone": phone(c["phone"])}
            for c in contacts
        ],
        "grid_workers": [
            {**w, "name": mask_text(principal, w["name"]), "phone": phone(w["phone"])}
            for w in workers
        ],
        # who has the key to the door (migration 090): dialled like the contacts
        "key_holder": key_holder
        and {"name": mask_text(principal, key_holder["name"]), "phone": phone(key_holder["phone"])},
    }


def _choice(principal: Principal, person: targets.Recipient, **extra: object) -> dict[str, Any]:
    return {
        "kind": person.kind,
        "id": person.id,
        "name": mask_text(principal, person.name),
        "role": person.role,
        **extra,
    }


async def dispatch_choices(
    conn: AsyncConnection[Any], principal: Principal, elder_id: str, now: datetime
) -> list[dict[str, Any]]:
    """Whom the dispatcher can send to an in-scope elder (operator_api.actions.Dispatch):
    the grid's grid workers, the nearest staffed stations of the elder's district (with
    the distance and whether on duty now), the family contacts, the district's duty
    officers: nothing of another district. Read through the
    notifier's registry look-ups (notifier.targets), names masked like the card's."""
    elder = await targets.load_elder(conn, elder_id)
    if elder is None:
        return []
    people = await targets.resolve(
        conn, elder, ["grid_worker", "family_all", "duty_officer"], now.time()
    )
    rows = await fetch_all(
        conn,
        "SELECT id, name, kind, lat, lon, staffed, duty_start, duty_end, phone, wecom_userid,"
        " district FROM stations WHERE staffed AND district = %s",
        (elder.district,),
    )
    local = targets.local_time(int(now.timestamp() * 1000), SITE_TZ_NAME).time()
    stations = sorted(
        (targets.Station(**r) for r in rows),
        key=lambda st: (targets.haversine_km(elder.lat, elder.lon, st.lat, st.lon), st.id),
    )[:NEARBY_STATIONS]
    by_kind = {kind: [p for p in people if p.kind == kind] for kind in ("grid_worker", "family")}
    return [
        *(_choice(principal, p) for p in by_kind["grid_worker"]),
        *(
            _choice(
                principal,
                st.as_recipient(),
                km=round(targets.haversine_km(elder.lat, elder.lon, st.lat, st.lon), 1),
                on_duty=targets.on_duty(st.duty_start, st.duty_end, local),
            )
            for st in stations
        ),
        *(_choice(principal, p) for p in by_kind["family"]),
        *(_choice(principal, p) for p in people if p.kind == "duty_officer"),
    ]


async def alert_card(
    pool: AsyncConnectionPool, principal: Principal, alert_id: UUID
) -> dict[str, Any]:
    """Everything a dispatcher needs about one alert: the alert with its timeline,
    escalation and notifications, the elder with devices and contacts, who to call.
    Raises HTTPException(404) or OutOfScope like the API's readers it uses."""
    alert = await alerts_api.get_alert(alert_id, principal, pool)
    elder = await elders_api.get_elder(alert.elder_id, principal, pool)
    notes = CareNotes(**elder.care_notes.model_dump())
    async with pool.connection() as conn:
        now = await db_now(conn)
        grid = await fetch_one(
            conn, "SELECT id, name, district, street FROM grids WHERE id = %s", (elder.grid_id,)
        )
        dial = await _dialable(conn, principal, elder.id, elder.grid_id)
        person = await person_of(conn, elder.id)
        receipts = await _receipts(conn, alert_id)
        choices = await dispatch_choices(conn, principal, elder.id, now)
    alert_json = alert.model_dump(mode="json")
    for n in alert_json["notifications"]:  # what the provider reported (migration 050)
        n.update(receipts.get(n["id"], {}))
    return {
        "now": now.isoformat(),
        "alert": alert_json,
        # medical notes and care needs (masked like the elder endpoint); the page names
        # the essential ones not recorded
        "care_needs": None if notes.is_empty() else elder.care_notes.model_dump(mode="json"),
        "care_needs_missing": notes.missing(),
        "severity_label": severity_label(alert.severity),
        "elder": elder.model_dump(mode="json"),
        "grid": grid,
        "dial": dial,
        "person": person,
        "dispatch": choices,
    }


async def _receipts(conn: AsyncConnection[Any], alert_id: UUID) -> dict[int, dict[str, Any]]:
    """The provider's report on each notification of the alert (checked in scope by the
    caller): delivered / failed (SMS), answered / unanswered / key1 / key2 (voice)."""
    rows = await fetch_all(
        conn,
        "SELECT id, receipt, receipt_code, receipt_at, calls_unanswered FROM notifications"
        " WHERE alert_id = %s",
        (alert_id,),
    )
    return {
        r["id"]: {
            "receipt": r["receipt"],
            "receipt_code": r["receipt_code"],
            "receipt_at": _iso(r["receipt_at"]),
            "calls_unanswered": r["calls_unanswered"],
        }
        for r in rows
    }


async def care_profiles(pool: AsyncConnectionPool) -> list[Row]:
    """The care profiles the search filters by."""
    async with pool.connection() as conn:
        return await fetch_all(conn, "SELECT id, name FROM care_profiles ORDER BY name, id")


async def person_of(conn: AsyncConnection[Any], elder_id: str) -> Row:
    """The office ledger's gender and community of an elder (checked in scope by the
    caller); never the ID card number, not even masked: a dispatcher does not need it."""
    row = await fetch_one(conn, "SELECT gender, community FROM elders WHERE id = %s", (elder_id,))
    return row or {"gender": None, "community": None}


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_elders(
    pool: AsyncConnectionPool,
    principal: Principal,
    q: str | None,
    grid: str | None,
    district: str | None,
    *,
    profile: str | None = None,
    device: DeviceState | None = None,
) -> dict[str, Any]:
    """Elders in scope whose name, address, grid id or grid name contains `q`,
    optionally in one grid, of one care profile (独居 also matches who lives alone), in
    one device state; by name, at most SEARCH_LIMIT."""
    principal.check_filters(district, grid)
    where = Where()
    scope_conditions(where, principal)
    if q:
        pattern = _like(q)
        where.add(
            "(e.name ILIKE %s OR e.address ILIKE %s OR e.grid_id ILIKE %s OR g.name ILIKE %s)",
            pattern,
            pattern,
            pattern,
            pattern,
        )
    if grid:
        where.add("e.grid_id = %s", grid)
    if district:
        where.add("e.district = %s", district)
    if profile == "alone":
        where.add("(e.care_profile_id = %s OR e.lives_alone)", profile)
    elif profile:
        where.add("e.care_profile_id = %s", profile)
    if device:
        where.add(_DEVICE_CONDITIONS[device][1])
    async with pool.connection() as conn:
        now = await db_now(conn)
        horizon = life_horizon(now)
        rows = await fetch_all(
            conn,
            sql.SQL(
                "SELECT e.id, e.name, e.address, e.district, e.street, e.grid_id,"
                " g.name AS grid_name, p.name AS care_profile_name, e.lives_alone, "
            )
            + LAST_SIGN_OF_LIFE
            + sql.SQL(
                " AS last_sign_of_life,"
                " (SELECT count(*) FILTER (WHERE NOT d.online) FROM devices d"
                "   WHERE d.elder_id = e.id) AS devices_offline,"
                " (SELECT min(d.battery) FROM devices d WHERE d.elder_id = e.id)"
                "   AS lowest_battery,"
                " (SELECT count(*) FROM alerts a WHERE a.elder_id = e.id"
                "   AND a.status IN ('pending', 'open', 'acknowledged')) AS open_alerts"
                " FROM elders e LEFT JOIN grids g ON g.id = e.grid_id"
                " LEFT JOIN care_profiles p ON p.id = e.care_profile_id"
            )
            + LIFE_JOINS
            + where.clause()
            + sql.SQL(" ORDER BY e.name, e.id LIMIT %s"),
            [horizon, horizon, *where.params, SEARCH_LIMIT + 1],
        )
    return {
        "now": now.isoformat(),
        "truncated": len(rows) > SEARCH_LIMIT,
        "items": [
            {
                **r,
                "name": mask_text(principal, r["name"]),
                "address": mask_text(principal, r["address"]),
                "last_sign_of_life": _iso(r["last_sign_of_life"]),
            }
            for r in rows[:SEARCH_LIMIT]
        ],
    }


async def grids_in_scope(pool: AsyncConnectionPool, principal: Principal) -> list[Row]:
    """The grids the caller may filter by."""
    where = Where()
    scope_conditions(where, principal, "g.id")
    async with pool.connection() as conn:
        return await fetch_all(
            conn,
            sql.SQL("SELECT g.id, g.name, g.district, g.street FROM grids g")
            + where.clause()
            + sql.SQL(" ORDER BY g.district, g.street, g.name, g.id"),
            where.params,
        )


async def elder_alerts(
    pool: AsyncConnectionPool, principal: Principal, elder_id: str
) -> list[dict[str, Any]]:
    """The elder's 20 latest alerts (the caller has checked the elder is in scope)."""
    where = Where()
    scope_conditions(where, principal)
    where.add("a.elder_id = %s", elder_id)
    async with pool.connection() as conn:
        rows = await fetch_all(
            conn,
            sql.SQL(_QUEUE) + where.clause() + sql.SQL(" ORDER BY a.opened_at DESC LIMIT 20"),
            where.params,
        )
    return [queue_item(principal, r) for r in rows]

"""One owner of alert state (carewatch.alerts): the only writer of `alerts` and
`alert_events`, one version rule, and one notifier reaction whoever acknowledges."""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from carewatch import alerts
from carewatch.alert_lifecycle import TransitionError
from carewatch.alert_outbox import AlertPublisher
from carewatch.bus import make_bus
from carewatch.clock import ManualClock
from carewatch.db.pool import open_pool
from carewatch.messages import AlertChange
from carewatch.settings import Settings
from harness.services import await_until, free_port
from notifier.ack_links import sign
from operator_api.actions import act_and_announce
from operator_api.scope import Principal
from tests.fake_provider_server import running_fake_providers
from tests.support.ack import running_ack_app
from tests.support.notifier import (
    GRID_WORKER_ID,
    change,
    insert_alert,
    notifier_settings,
    publish_changes,
    query,
    running_notifier,
    seed_registry,
    wait_consumed,
)
from tests.support.source import parse_source

ROOT = Path(__file__).resolve().parent.parent
OWNER = ROOT / "carewatch" / "alerts.py"
# Folders of project code (tests set up their rows by hand and are not checked).
PRODUCTION = ("carewatch", "ingest", "rules_engine", "notifier", "operator_api", "registry",
              "simulators", "bench", "tools")  # fmt: skip
WRITES = ("insert into alerts", "update alerts", "insert into alert_events", "update alert_events",
          "delete from alerts", "delete from alert_events")  # fmt: skip


def _sql_strings(path: Path) -> list[str]:
    """Every string literal of a module (implicitly joined ones as one), lower-cased and
    with whitespace runs folded, so a statement split over lines is found too."""
    tree = parse_source(path.read_text("utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append(" ".join(node.value.lower().split()))
        elif isinstance(node, ast.JoinedStr):
            parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
            found.append(" ".join("".join(str(p) for p in parts).lower().split()))
    return found


def test_only_the_owner_writes_alerts_and_their_timeline() -> None:
    writers = set()
    for folder in PRODUCTION:
        for path in (ROOT / folder).rglob("*.py"):
            if any(w in s for s in _sql_strings(path) for w in WRITES):
                writers.add(path.relative_to(ROOT).as_posix())
    assert writers == {"carewatch/alerts.py"}


def test_the_writer_check_sees_a_statement_split_over_lines(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text('Q = (\n    "UPDATE   alerts"\n    " SET status = %s"\n)\n', "utf-8")
    assert any("update alerts" in s for s in _sql_strings(sneaky))


def test_change_id_is_alert_status_version() -> None:
    assert alerts.change_id("a1", "acknowledged", 3) == "a1:acknowledged:3"


# --- the owner on PostgreSQL ---------------------------------------------------------------


async def _loaded(settings: Settings, alert_id: str) -> alerts.Alert:
    pool = await open_pool(settings.database_url, max_size=1)
    try:
        async with pool.connection() as conn:
            found = await alerts.load(conn, alert_id)
    finally:
        await pool.close()
    assert found is not None
    return found


async def test_version_goes_up_exactly_when_a_change_is_published(settings: Settings) -> None:
    seed_registry(settings.database_url)
    alert_id = insert_alert(settings.database_url)  # open, version 1
    clock = ManualClock()
    pool = await open_pool(settings.database_url, max_size=1)
    made: list[AlertChange | None] = []
    try:
        for action, actor in (
            ("acknowledge", "grid_worker:GW1"),
            ("acknowledge", "operator:OP1"),  # allowed, recorded, no change
            ("arrive", "grid_worker:GW1"),  # recorded, no change
            ("resolve", "operator:OP1"),
        ):
            async with pool.connection() as conn, conn.transaction():
                alert = await alerts.load(conn, alert_id, for_update=True)
                assert alert is not None
                made.append(
                    await alerts.transition(
                        conn,
                        alert,
                        action,
                        actor,
                        clock.now_ms(),
                        source="test",  # type: ignore[arg-type]
                    )
                )
            clock.advance(1)
        with pytest.raises(TransitionError):
            async with pool.connection() as conn, conn.transaction():
                alert = await alerts.load(conn, alert_id, for_update=True)
                assert alert is not None
                await alerts.transition(conn, alert, "acknowledge", "x:y", 0, source="test")
    finally:
        await pool.close()
    assert [c.id if c else None for c in made] == [
        f"{alert_id}:acknowledged:2",
        None,
        None,
        f"{alert_id}:resolved:3",
    ]
    after = await _loaded(settings, alert_id)
    assert (after.status, after.version, after.acknowledged_by) == (
        "resolved",
        3,
        "grid_worker:GW1",  # the first acknowledgement is the one kept
    )
    timeline = query(
        settings.database_url,
        "SELECT actor, action, details->>'from', details->>'to' FROM alert_events"
        " WHERE alert_id = %s ORDER BY id",
        alert_id,
    )
    assert timeline == [
        ("grid_worker:GW1", "acknowledged", "open", "acknowledged"),
        ("operator:OP1", "acknowledged", "acknowledged", "acknowledged"),
        ("grid_worker:GW1", "arrived", "acknowledged", "acknowledged"),
        ("operator:OP1", "resolved", "acknowledged", "resolved"),
    ]
    outbox = query(settings.database_url, "SELECT change_id FROM rules_outbox ORDER BY change_id")
    assert outbox == [(f"{alert_id}:acknowledged:2",), (f"{alert_id}:resolved:3",)]


# --- the operator API and the ack link: one path ----------------------------------------------

# The timeline fields that say what happened (times, and the note only the API takes, aside).
_SAID = ("from", "to", "reason", "notifications", "handler", "step", "targets", "recipients")


def _timeline(dsn: str, alert_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The decisions on the alert, in order; deliveries ('notified'), which the senders
    record whenever a provider answers, are compared apart."""
    rows = query(
        dsn,
        "SELECT actor, action, details FROM alert_events WHERE alert_id = %s"
        " AND action <> 'notified' ORDER BY id",
        alert_id,
    )
    return [(actor, action, {k: d[k] for k in _SAID if k in d}) for actor, action, d in rows]


def _deliveries(dsn: str, alert_id: str) -> list[tuple[Any, ...]]:
    return query(
        dsn,
        "SELECT actor, count(*) FROM alert_events WHERE alert_id = %s AND action = 'notified'"
        " GROUP BY actor",
        alert_id,
    )


def _notifications(dsn: str, alert_id: str) -> list[tuple[Any, ...]]:
    return query(
        dsn,
        "SELECT purpose, step, recipient_kind, recipient_id, channel, status FROM notifications"
        " WHERE alert_id = %s ORDER BY purpose, step, recipient_kind, recipient_id, channel",
        alert_id,
    )


async def test_operator_acknowledge_and_ack_link_leave_the_same_trace(settings: Settings) -> None:
    """The same grid worker acknowledges two escalating alerts alike, one through the
    signed link of the SMS, one through the operator API: same version, same timeline
    (the escalation stopped, the others told), same notifications, same change."""
    dsn = settings.database_url
    seed_registry(dsn)
    by_link = insert_alert(dsn, kind="sos")
    by_api = insert_alert(dsn, kind="fall")  # another kind: one open alert per kind
    port = free_port()
    s = notifier_settings(
        settings, escalation_wait_s=60.0, ack_port=port, ack_base_url=f"http://127.0.0.1:{port}"
    )
    async with running_fake_providers(s) as fake, running_notifier(fake.settings):
        s = fake.settings
        async with running_ack_app(s) as http:
            await publish_changes(s, change(by_link), change(by_api, kind="fall"))

            async def sent(purpose: str, n: int) -> bool:
                rows = query(
                    dsn,
                    "SELECT count(*) FROM notifications WHERE purpose = %s AND status = 'sent'",
                    purpose,
                )
                return bool(rows[0][0] == n)

            await await_until(lambda: sent("alert", 8), 10, "step 0 of both alerts sent")

            future = int(time.time() * 1000) + 3_600_000
            secret = s.ack_secret.get_secret_value()
            token = sign(by_link, "grid_worker", GRID_WORKER_ID, future, secret)
            acked = await http.post(f"/ack/{token}", json={"action": "acknowledge"})
            assert acked.status_code == 200, acked.text

            pool = await open_pool(dsn, max_size=2)
            broker = make_bus(s)
            await broker.start()
            try:

                async def announce(c: AlertChange) -> None:
                    await AlertPublisher(broker, pool).publish([c])

                grid_worker = Principal(role="grid_worker", subject_id=GRID_WORKER_ID)
                result = await act_and_announce(
                    pool, announce, grid_worker, UUID(by_api), "acknowledge", ""
                )
                assert result.status == "acknowledged"
            finally:
                await broker.stop()
                await pool.close()

            await await_until(lambda: sent("handled", 6), 10, "both alerts' handled messages")
            await wait_consumed(s)

    versions = dict(query(dsn, "SELECT id::text, version FROM alerts"))
    assert versions == {by_link: 2, by_api: 2}
    link_timeline = _timeline(dsn, by_link)
    assert [a for _, a, _ in link_timeline] == [
        "escalation_step",
        "acknowledged",
        "escalation_stopped",
        "handled_enqueued",
    ]
    assert link_timeline == _timeline(dsn, by_api)
    assert link_timeline[2][2] == {"reason": f"acknowledged by grid_worker:{GRID_WORKER_ID}"}
    assert _notifications(dsn, by_link) == _notifications(dsn, by_api)
    assert _deliveries(dsn, by_link) == _deliveries(dsn, by_api) == [("notifier", 7)]
    assert _deliveries(dsn, by_link) == _deliveries(dsn, by_api) == [("notifier", 7)]
    assert len(_notifications(dsn, by_link)) == 7  # 4 alert + 3 handled (family, wristband)
    published = query(
        dsn, "SELECT change_id, published_at IS NOT NULL FROM rules_outbox ORDER BY source"
    )
    assert sorted(published) == sorted(
        [(f"{by_link}:acknowledged:2", True), (f"{by_api}:acknowledged:2", True)]
    )

"""One contract for applying decisions, run by every runner of rules_engine.apply: the
applier alone in memory, the store on PostgreSQL (its effects as SQL), the evaluation
engine (evaluation/sim_engine.py) and the detector test harness
(tests/detector_sim.py). Each scenario is a list of batches, one event each; every
runner must report the same failed batches and leave the same alerts, and those that
report changes the same changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from carewatch.clock import ManualClock
from carewatch.db.pool import open_pool
from carewatch.messages import OPEN_STATUSES, AlertKind, Event
from carewatch.settings import Settings
from evaluation.sim_engine import SimRulesEngine
from rules_engine import store
from rules_engine.apply import AlertState, Opened, Renotified, Transitioned, apply
from rules_engine.decisions import (
    Annotate,
    CancelAlert,
    ConfirmAlert,
    Decision,
    OpenAlert,
    RenotifyAlert,
    RepeatAlert,
    ResolveAlert,
    UpdateAlert,
    alert_id_for,
)
from rules_engine.detectors.base import ElderView
from rules_engine.detectors.sos import SosDetector
from rules_engine.engine import Engine
from simulators.days import SimElder
from tests.detector_sim import Sim

ELDER = "E1"
T0 = 1_764_000_000_000


def _open(
    kind: AlertKind, source: str, status: str = "open", severity: str = "critical"
) -> OpenAlert:
    return OpenAlert(
        alert_id_for(kind, source),
        kind,
        severity,  # type: ignore[arg-type]
        status,  # type: ignore[arg-type]
        kind,
        {},
        0.5,
        "W1",
        source,
        T0,
    )


def _id(kind: AlertKind, source: str) -> str:
    return alert_id_for(kind, source)


SOS, FALL, INACT = _id("sos", "W1:1"), _id("fall", "W1:2"), _id("inactivity", "W1:3")

SCENARIOS: dict[str, list[list[Decision]]] = {
    "sos opened then cancelled by the elder": [
        [_open("sos", "W1:1")],
        [CancelAlert(SOS, "sos", "sos", "W1:9")],
    ],
    "fall pending, confirmed with a confidence, resolved": [
        [_open("fall", "W1:2", status="pending")],
        [ConfirmAlert(FALL, "fall", "fall", "timer-1", confidence=0.875, details={"moved": False})],
        [ResolveAlert(FALL, "fall", "fall", "W1:7")],
    ],
    "pending and confirmed in one batch": [
        [_open("fall", "W1:2", status="pending"), ConfirmAlert(FALL, "fall", "fall", "t")],
    ],
    "the same alert opened twice, once": [
        [_open("sos", "W1:1")],
        [_open("sos", "W1:1"), RepeatAlert(SOS, "sos", "W1:1", "W1", T0)],
    ],
    "an alert of an active kind is refused, the batch rolled back": [
        [_open("sos", "W1:1")],
        [Annotate(SOS, "note"), _open("sos", "W1:5")],
    ],
    "confirming an open alert breaks the lifecycle": [
        [_open("sos", "W1:1")],
        [ConfirmAlert(SOS, "sos", "sos", "t")],
    ],
    "cancelling an alert that is not active fails": [
        [CancelAlert(SOS, "sos", "sos", "W1:9")],
    ],
    "a closed alert is not active any more": [
        [_open("sos", "W1:1")],
        [ResolveAlert(SOS, "sos", "sos", "W1:8")],
        [ResolveAlert(SOS, "sos", "sos", "W1:9")],
        [_open("sos", "W1:1")],  # its id again (a late redelivery): nothing happens
    ],
    "a warning escalated, then a reminder, details merged": [
        [_open("inactivity", "W1:3", severity="warning")],
        [RenotifyAlert(INACT, "inactivity", "escalated", "inactivity", "t1", severity="critical")],
        [UpdateAlert(INACT, "refined", confidence=0.25, details={"k": 1})],
        [RenotifyAlert(INACT, "inactivity", "reminder", "inactivity", "t2")],
    ],
}

Change = tuple[str, str, str]  # alert id, status, severity
Row = tuple[str, str, str, float | None]  # kind, status, severity, confidence


@dataclass
class Run:
    changes: list[list[Change]] = field(default_factory=list)  # per batch; [] when failed
    failed: list[int] = field(default_factory=list)  # batch numbers
    alerts: set[Row] = field(default_factory=set)


def in_memory(batches: Sequence[Sequence[Decision]]) -> Run:
    run = Run()
    state = AlertState()
    rows: dict[str, Row] = {}
    for n, decisions in enumerate(batches):
        try:
            after, effects = apply(state, decisions, T0 + n)
        except (KeyError, ValueError):
            run.failed.append(n)
            run.changes.append([])
            continue
        made: list[Change] = []
        known = set()  # opened again after they closed: the row stays (ON CONFLICT)
        for e in effects:
            match e:
                case Opened(alert=a) if a.alert_id in rows and a.alert_id not in state.alerts:
                    known.add(a.alert_id)
                case Opened(alert=a) | Transitioned(after=a) | Renotified(after=a):
                    made.append((a.alert_id, a.status, a.severity))
        kept = {i: a for i, a in after.alerts.items() if i not in known}
        rows.update({i: (a.kind, a.status, a.severity, a.confidence) for i, a in kept.items()})
        state = AlertState({i: a for i, a in kept.items() if a.status in OPEN_STATUSES})
        run.changes.append(made)
    run.alerts = set(rows.values())
    return run


async def on_postgres(dsn: str, batches: Sequence[Sequence[Decision]]) -> Run:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO grids (id, name, district, street)"
            " VALUES ('G1', '民族路网格', '渝中区', '解放碑街道')"
        )
        conn.execute(
            "INSERT INTO elders (id, name, district, street, address, lat, lon, grid_id)"
            " VALUES (%s, '王秀英', '渝中区', '解放碑街道', '民族路1号', 29.56, 106.57, 'G1')",
            (ELDER,),
        )
    settings = Settings(database_url=dsn, _env_file=None)  # type: ignore[call-arg]
    run = Run()
    pool = await open_pool(dsn, max_size=2)
    try:
        for n, decisions in enumerate(batches):
            event = Event(
                id=f"contract:{n}", elder_id=ELDER, device_id="W1", device_kind="wristband",
                type="event", device_time_ms=T0 + n, received_ms=T0 + n,
            )  # fmt: skip

            def decide(_view: ElderView, d: Sequence[Decision] = decisions) -> Sequence[Decision]:
                return d

            try:
                outcome = await store.apply_event(
                    pool, event, decide, settings, ManualClock(T0 + n)
                )
            except (KeyError, ValueError):
                run.failed.append(n)
                run.changes.append([])
                continue
            assert outcome.result == "applied"
            run.changes.append([(c.alert_id, c.status, c.severity) for c in outcome.changes])
    finally:
        await pool.close()
    with psycopg.connect(dsn) as conn:
        found: list[Any] = conn.execute(
            "SELECT kind, status, severity, confidence FROM alerts"
        ).fetchall()
    run.alerts = {(k, s, sev, c) for k, s, sev, c in found}
    return run


# The evaluation engine records what happened to an alert; the status it left:
_RECORDED_STATUS = {"opened": "open", "pending": "pending", "confirmed": "open",
                    "cancelled": "cancelled", "resolved": "resolved"}  # fmt: skip


def in_evaluation(batches: Sequence[Sequence[Decision]]) -> Run:
    elder = SimElder(ELDER, (29.56, 106.57), {"wristband": "W1"})
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    sim = SimRulesEngine([elder], settings, Engine([]), start_ms=T0)
    run = Run()
    for n, decisions in enumerate(batches):
        failed, recorded = sim.counters.failed, len(sim.records)
        sim.apply_decisions(ELDER, f"contract:{n}", decisions, T0 + n)
        if sim.counters.failed > failed:
            run.failed.append(n)
        run.changes.append(
            [
                (r.alert_id, _RECORDED_STATUS.get(r.action, "open"), r.severity)
                for r in sim.records[recorded:]
            ]
        )
    run.alerts = {
        (a.alert.kind, a.alert.status, a.alert.severity, a.alert.confidence)
        for a in sim.alerts.values()
    }
    return run


def in_detector_harness(batches: Sequence[Sequence[Decision]]) -> tuple[list[int], set[Row]]:
    """The failed batches and the alerts left active (the harness keeps only those)."""
    sim = Sim(detector=SosDetector())
    failed = []
    for n, decisions in enumerate(batches):
        try:
            sim.apply(decisions)
        except (KeyError, ValueError):
            failed.append(n)
    active = {(a.kind, a.status, a.severity, a.confidence) for a in sim.active.values()}
    return failed, active


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_evaluation_engine_and_the_detector_harness_keep_the_contract(name: str) -> None:
    batches = SCENARIOS[name]
    memory = in_memory(batches)
    evaluation = in_evaluation(batches)
    assert evaluation.failed == memory.failed
    assert evaluation.changes == memory.changes
    assert evaluation.alerts == memory.alerts
    failed, active = in_detector_harness(batches)
    assert failed == memory.failed
    assert active == {row for row in memory.alerts if row[1] in OPEN_STATUSES}


@pytest.mark.parametrize("name", SCENARIOS)
async def test_the_same_decisions_do_the_same_in_memory_and_on_postgres(
    name: str, db_dsn: str
) -> None:
    batches = SCENARIOS[name]
    memory = in_memory(batches)
    postgres = await on_postgres(db_dsn, batches)
    assert postgres.failed == memory.failed
    assert postgres.changes == memory.changes
    assert postgres.alerts == memory.alerts  # confidences chosen exact in float32


def test_every_scenario_changes_or_fails_something() -> None:
    for name, batches in SCENARIOS.items():
        run = in_memory(batches)
        assert any(run.changes) or run.failed, name

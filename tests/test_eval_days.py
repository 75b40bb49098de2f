"""The in-memory rules engine on simulated days (evaluation.days/sim_engine).

Pure: the worker's detectors, ingest's validation and simulated device time; no server
is involved because none takes part in what is measured (the store's SQL semantics are
re-implemented in memory and their timer rules are tested here).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from carewatch.cli import main
from carewatch.messages import Event
from carewatch.settings import Settings, get_settings
from evaluation.days import (
    DaysEvaluation,
    default_scenarios,
    default_start_ms,
    evaluate,
    make_elders,
    parse_injections,
)
from evaluation.sim_engine import SimRulesEngine
from rules_engine.decisions import (
    CancelTimer,
    ConfirmAlert,
    Decision,
    OpenAlert,
    ScheduleTimer,
    alert_id_for,
)
from rules_engine.detectors.base import DueTimer, ElderView, EventDetector
from rules_engine.engine import Engine
from rules_engine.thresholds import resolve_thresholds
from simulators.days import SimElder, SimMessage

TZ = ZoneInfo("Asia/Shanghai")
START = default_start_ms(TZ)


# --- timer semantics -----------------------------------------------------------------


class _TimerProbe(EventDetector):
    """Steps telemetry schedules (or, with steps 0, cancels) one timer; firing it opens
    an 'inactivity' alert named after the due time, so each firing is visible."""

    timer_kinds = frozenset({"probe"})

    def __init__(self, replace: bool, delay_ms: int = 60_000) -> None:
        self.replace = replace
        self.delay_ms = delay_ms
        self.fired: list[int] = []

    def wants(self, event: Event) -> bool:
        return "steps" in event.data

    def decide(self, event: Event, elder: ElderView, now_ms: int) -> Sequence[Decision]:
        if event.data["steps"] == 0:
            return [CancelTimer("probe:1")]
        due = event.device_time_ms + self.delay_ms
        return [ScheduleTimer("probe:1", "probe", due, replace=self.replace)]

    def on_timer(self, timer: DueTimer, elder: ElderView, now_ms: int) -> Sequence[Decision]:
        self.fired.append(now_ms)
        source = f"{timer.timer_id}@{timer.due_ms}"
        return [
            OpenAlert(
                alert_id_for("inactivity", source), "inactivity", "warning", "open",
                "probe", {}, None, None, source, timer.due_ms,
            )
        ]  # fmt: skip


ELDER = SimElder("E1", (29.56, 106.55), {"wristband": "WB1"})


def _steps(seq: int, at_ms: int, steps: int) -> SimMessage:
    payload = json.dumps({"v": 1, "seq": seq, "ts": at_ms, "steps": steps}).encode()
    return SimMessage("WB1", "telemetry", payload, at_ms)


def _engine(probe: _TimerProbe) -> SimRulesEngine:
    return SimRulesEngine([ELDER], get_settings(), Engine([probe]), start_ms=START)


def test_a_timer_pushed_back_does_not_fire_at_its_old_time() -> None:
    probe = _TimerProbe(replace=True)
    sim = _engine(probe)
    sim.feed(_steps(1, START, 10))  # due START + 60 s
    sim.feed(_steps(2, START + 50_000, 11))  # pushed back to START + 110 s
    sim.advance(START + 100_000)
    assert probe.fired == []
    sim.advance(START + 500_000)
    assert probe.fired == [START + 110_000]
    assert [r.action for r in sim.records] == ["opened"]


def test_a_due_timer_fires_once() -> None:
    probe = _TimerProbe(replace=False)
    sim = _engine(probe)
    sim.feed(_steps(1, START, 10))
    sim.advance(START + 60_000)
    sim.advance(START + 3_600_000)
    sim.feed(_steps(2, START + 3_700_000, 11))  # same id, not replacing: the fired row stays
    sim.advance(START + 7_200_000)
    assert probe.fired == [START + 60_000]
    assert [r.action for r in sim.records] == ["opened"]


def test_a_replacing_schedule_rearms_a_fired_timer_and_a_cancel_stops_it() -> None:
    probe = _TimerProbe(replace=True)
    sim = _engine(probe)
    sim.feed(_steps(1, START, 10))
    sim.feed(_steps(2, START + 120_000, 11))  # fired at +60 s; armed again for +180 s
    sim.feed(_steps(3, START + 150_000, 0))  # cancelled before it is due
    sim.advance(START + 3_600_000)
    assert probe.fired == [START + 60_000]


def test_the_responder_acknowledges_what_a_rule_clears_and_closes_the_rest() -> None:
    probe = _TimerProbe(replace=False)  # its timer opens an 'inactivity' alert
    sim = SimRulesEngine(
        [ELDER], get_settings(), Engine([probe]), start_ms=START, respond_after_s=600
    )
    sim.feed(_steps(1, START, 10))
    sim.advance(START + 60_000 + 599_000)
    assert [r.action for r in sim.records] == ["opened"]
    sim.advance(START + 60_000 + 600_000)
    assert [r.action for r in sim.records] == ["opened", "acknowledged"]
    (alert,) = sim.alerts.values()
    assert alert.alert.status == "acknowledged"  # still active: the rule resolves it


def test_a_decision_that_fails_rolls_the_whole_event_back() -> None:
    class Broken(EventDetector):
        def wants(self, event: Event) -> bool:
            return True

        def decide(self, event: Event, elder: ElderView, now_ms: int) -> Sequence[Decision]:
            opened = OpenAlert("a1", "sos", "critical", "open", "x", {}, None, None, event.id, 0)
            # confirming an alert that is already open is not a legal transition
            illegal = ConfirmAlert("a1", "sos", "x", "c")
            return [opened, ScheduleTimer("t", "t", 0), CancelTimer("t"), illegal]

    sim = SimRulesEngine([ELDER], get_settings(), Engine([Broken()]), start_ms=START)
    sim.feed(_steps(1, START, 10))
    assert sim.counters.failed == 1
    assert sim.alerts == {} and sim.records == [] and sim.timers.rows == {}


# --- a short simulated run -----------------------------------------------------------


@pytest.fixture(scope="module")
def short_run() -> DaysEvaluation:
    elders = make_elders(3)  # alone (with home sensors), cognitive, standard (band only)
    injections = parse_injections(
        ["0=fall@d1/14:05", "1=wander@d1/02:30+90m", "2=charger@d1/10:00+2h"], elders, START, TZ
    )
    return evaluate(elders, START, 2, seed=0, injections=injections, settings=get_settings(), tz=TZ)


def test_normal_days_raise_no_critical_alert(short_run: DaysEvaluation) -> None:
    assert short_run.normal_elder_days == 3  # day 0 of each elder; day 1 is injected
    assert short_run.counters.rejected == 0  # every simulated payload passes ingest
    assert short_run.counters.failed == 0
    assert sum(k.critical for k in short_run.kinds) == 0
    assert not [a for a in short_run.false_alarms if a["critical"]]


def test_an_injected_fall_is_caught_and_confirmed(short_run: DaysEvaluation) -> None:
    settings: Settings = get_settings()
    fall = next(c for c in short_run.injections if c.kind == "fall")
    assert fall.detected and fall.alert_kind == "fall" and fall.severity == "critical"
    assert fall.delay_s is not None and 0 <= fall.delay_s <= 60  # within its fusion window
    assert fall.confirmed_delay_s is not None
    assert fall.confirmed_delay_s == pytest.approx(
        fall.delay_s + settings.fall_confirm_window_s, abs=1
    )


def test_a_night_wander_raises_a_critical_geofence_alert(short_run: DaysEvaluation) -> None:
    wander = next(c for c in short_run.injections if c.kind == "wander")
    assert wander.detected and wander.alert_kind == "geofence"
    assert wander.severity == "critical"  # at night
    assert wander.delay_s is not None and wander.delay_s < 90 * 60


def test_a_band_on_the_charger_by_day_raises_off_wrist(short_run: DaysEvaluation) -> None:
    charger = next(c for c in short_run.injections if c.kind == "charger")
    assert charger.detected and charger.alert_kind == "off_wrist"
    assert charger.delay_s is not None
    assert charger.delay_s == pytest.approx(
        resolve_thresholds(get_settings(), {}).off_wrist_s, abs=120
    )
    at = datetime.fromisoformat(charger.at).timestamp() + charger.delay_s
    assert 8 <= datetime.fromtimestamp(at, TZ).hour < 21  # by day


# --- scenarios and the command line --------------------------------------------------


def test_the_default_scenarios_cover_every_injection_kind() -> None:
    specs = default_scenarios(make_elders(20), 7)
    kinds = {s.split("@")[0].split(":")[0] for texts in specs.values() for s in texts}
    assert kinds == {"fall", "wander", "charger", "offline", "decline"}
    assert len(specs) < 20  # some elders live normal days only


def test_cli_writes_the_figures(tmp_path: Path) -> None:
    out = tmp_path / "days.json"
    argv = ["eval", "days", "--elders", "1", "--days", "1", "--inject", "0=offline@d0/15:00+1h"]
    assert main([*argv, "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    (offline,) = figures["injections"]
    assert offline["detected"] and offline["alert_kind"] == "device_offline"
    assert offline["delay_s"] == pytest.approx(45, abs=5)  # the broker's last will
    assert main(["eval", "days", "--elders", "1", "--days", "1", "--inject", "9=fall@10:00"]) == 2

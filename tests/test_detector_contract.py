"""The detector contract (rules_engine/detectors/base.py) holds for every detector.

- `wants()` is a pure predicate: asking it any number of times changes nothing;
- `observe()` runs once per event id: a redelivery, or a transaction retried after a
  database outage, gets the observation made the first time (here with the real store
  and the worker's batch handler);
- `telemetry_fields`, where a detector names them, cover every telemetry it wants;
- `decide()` is pure: called twice on the same observation and view it gives the same
  decisions, and it changes no detector state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from carewatch.alert_outbox import AlertPublisher
from carewatch.clock import SystemClock
from carewatch.db.pool import open_pool
from carewatch.messages import Event, encode, encode_events
from carewatch.settings import Settings, get_settings
from rules_engine import store
from rules_engine.decisions import Decision
from rules_engine.detectors.base import Detector, ElderView
from rules_engine.detectors.fall.detector import FallDetector
from rules_engine.engine import Engine, default_engine
from rules_engine.geo import LatLon
from rules_engine.thresholds import resolve_thresholds
from rules_engine.worker import EventHandler
from simulators.accel_trials import HZ, generate_trial
from tests.events import device_event, telemetry_event
from tests.support import rules as support
from tests.support.rules import ELDER, RulesBusIO, alerts

rules_settings = support.rules_settings
bus_io = support.bus_io

T0 = 1_764_000_000_000  # 2025-11-24 16:00 UTC, day time in Chongqing
HOME = LatLon(29.56, 106.57)


def accel_windows(code: str, start_ms: int, seq0: int, device: str = "W1") -> list[Event]:
    """A synthetic trial cut into the one-second windows a wristband publishes."""
    acc = generate_trial(code, subject=1, rep=2, seed=7)
    out = []
    for n, i in enumerate(range(0, len(acc), HZ)):
        chunk = acc[i : i + HZ]
        accel = {"hz": float(HZ), **{k: chunk[:, j].tolist() for j, k in enumerate("xyz")}}
        t = start_ms + round(i * 1000 / HZ)
        out.append(telemetry_event({"accel": accel}, t, seq=seq0 + n, device=device))
    return out


def a_day_of_signals() -> list[Event]:
    """Something for every detector: a fall in accelerometer windows and movement after
    it, vital signs out of range, fixes outside the home circle, signs of life, a water
    meter, battery and worn changes, an SOS and its cancel, a smoke alarm."""
    events = accel_windows("F01", T0, 1)
    n = 1000

    def t(data: dict[str, object], s: float, device: str = "W1", kind: str = "wristband") -> None:
        nonlocal n
        n += 1
        events.append(telemetry_event(data, T0 + round(s * 1000), seq=n, device=device, kind=kind))

    def e(name: Any, s: float, device: str = "W1", kind: str = "wristband") -> None:
        nonlocal n
        n += 1
        events.append(device_event(name, T0 + round(s * 1000), seq=n, device=device, kind=kind))

    t({"steps": 100}, 15)
    t({"motion": True}, 16, "P1", "pir")
    t({"steps": 130}, 75)
    for k in range(7):
        t({"hr": 140, "spo2": 97}, 100 + 60 * k)
    for k in range(4):
        t({"lat": HOME.lat + 0.02, "lon": HOME.lon}, 600 + 60 * k, "W2")
    t({"water_flow": 2.0}, 900, "M1", "water_meter")
    t({"water_flow": 0.0}, 960, "M1", "water_meter")
    t({"battery": 15}, 1000)
    t({"worn": False}, 1010)
    t({"worn": True}, 1100)
    e("door_open", 1200, "D1", "door")
    e("sos", 1300)
    e("sos_cancel", 1302)
    e("smoke", 1400, "S1", "smoke")
    e("fall", 1500, "R1", "radar")
    e("fall_cancel", 1505)
    return events


def profile_view(active: dict[str, Any] | None = None) -> ElderView:
    th = resolve_thresholds(get_settings(), {})
    return ElderView(ELDER, th, active or {}, profile_id="cognitive", home=HOME)


def run_all(
    engine: Engine, events: Sequence[Event], before: Callable[[Event], None]
) -> list[Decision]:
    out: list[Decision] = []
    for ev in events:
        before(ev)
        out += engine.run(ev, profile_view, ev.received_ms) or []
    return out


def test_every_detector_has_something_to_decide_in_the_scenario() -> None:
    engine = default_engine(get_settings())
    deciding: set[str] = set()
    for ev in a_day_of_signals():
        wanting = engine.wanting(ev)
        if engine.needs_profile(ev, wanting):
            engine.learn(profile_view(), ev.device_time_ms)
        deciding |= {type(d).__name__ for d, _ in engine.observe(ev, wanting).seen}
    names = {type(d).__name__ for d in engine.detectors}
    assert deciding == names - {"HomeSensorHealthDetector"}  # needs days of silence


def test_wants_is_a_pure_predicate() -> None:
    """Asking every detector three times per event changes nothing they decide."""
    events = a_day_of_signals()
    once = run_all(default_engine(get_settings()), events, lambda ev: None)
    asked = default_engine(get_settings())

    def ask_thrice(ev: Event) -> None:
        for _ in range(3):
            asked.wanting(ev)
            asked.wants(ev)

    assert run_all(asked, events, ask_thrice) == once
    assert any(d.kind == "fall" for d in once if hasattr(d, "kind"))  # it decides something


def test_decide_twice_gives_the_same_decisions_and_changes_nothing() -> None:
    engine = default_engine(get_settings())
    decided = 0
    for ev in a_day_of_signals():
        wanting = engine.wanting(ev)
        if engine.needs_profile(ev, wanting):
            engine.learn(profile_view(), ev.device_time_ms)
        observed = engine.observe(ev, wanting)
        first = engine.decide(observed, profile_view(), ev.received_ms)
        again = engine.decide(observed, profile_view(), ev.received_ms)
        assert again == first, type(observed.seen[0][0]).__name__
        decided += bool(first)
    assert decided >= 8


def test_decide_reads_no_state_observe_did_not_leave() -> None:
    """Decisions on one event do not depend on how often earlier ones were decided."""
    events = a_day_of_signals()

    def decisions(times: int) -> list[Decision]:
        engine = default_engine(get_settings())
        out: list[Decision] = []
        for ev in events:
            wanting = engine.wanting(ev)
            if engine.needs_profile(ev, wanting):
                engine.learn(profile_view(), ev.device_time_ms)
            observed = engine.observe(ev, wanting)
            for _ in range(times):
                last = engine.decide(observed, profile_view(), ev.received_ms)
            out += last
        return out

    assert decisions(3) == decisions(1)


class Counting(FallDetector):
    """The fall detector, counting observe() calls per event id."""

    def __init__(self) -> None:
        super().__init__()
        self.observed: dict[str, int] = {}

    def observe(self, event: Event, known: ElderView | None) -> Any:
        self.observed[event.id] = self.observed.get(event.id, 0) + 1
        return super().observe(event, known)


def test_the_engine_observes_an_event_once_however_often_it_is_delivered() -> None:
    counting = Counting()
    engine = Engine([counting])
    windows = accel_windows("F01", T0, 1)
    first = [engine.run(ev, profile_view, ev.received_ms) for ev in windows]
    again = [engine.run(ev, profile_view, ev.received_ms) for ev in windows]
    assert again == first and any(first)  # the detection is not lost on redelivery
    assert set(counting.observed.values()) == {1}


@pytest.mark.parametrize("batched", [False, True], ids=["one per message", "one batch"])
async def test_a_delivery_retried_after_a_database_outage_is_observed_once(
    rules_settings: Settings,
    bus_io: RulesBusIO,
    monkeypatch: pytest.MonkeyPatch,
    batched: bool,
) -> None:
    """The worker's handler with the real store: the transaction of the detecting window
    fails (the database is unreachable), the bus delivers the batch again, and again
    after it succeeded. The streaming model saw each window once, the fall is still
    found, and opened once; the same when the windows travel as one batch message."""
    counting = Counting()
    engine = Engine([counting])
    now = SystemClock().now_ms()
    windows = accel_windows("F01", now - 60_000, 5_000)
    bodies = [encode(w) for w in windows]
    if batched:
        bodies = [encode_events(bodies)]
    real_apply = store.apply_event
    failures = [1]

    async def flaky(*args: Any, **kwargs: Any) -> store.Outcome:
        if failures:
            failures.pop()
            raise psycopg.OperationalError("connection lost")
        return await real_apply(*args, **kwargs)

    monkeypatch.setattr(store, "apply_event", flaky)
    pool: AsyncConnectionPool = await open_pool(rules_settings.database_url, max_size=2)
    try:
        handler = EventHandler(
            rules_settings, pool, engine, AlertPublisher(bus_io.bus, pool), SystemClock()
        )
        with pytest.raises(psycopg.OperationalError):
            await handler.handle_batch("telemetry.0", bodies)  # the entry stays pending
        assert not failures
        await handler.handle_batch("telemetry.0", bodies)  # delivered again
        await handler.handle_batch("telemetry.0", bodies)  # and once more, after success
    finally:
        await pool.close()
    assert set(counting.observed.values()) == {1}
    assert len(counting.observed) == len(windows)
    falls = [a for a in await alerts(rules_settings) if a["kind"] == "fall"]
    assert [(a["status"], a["rule"]) for a in falls] == [("pending", "fall.accel")]


def test_a_stateless_detector_observes_the_event_itself() -> None:
    class Probe(Detector[Event]):
        def wants(self, event: Event) -> bool:
            return True

    probe = Probe()
    ev = device_event("sos", T0, seq=1)
    assert probe.observe(ev, None) is None  # the base: nothing to decide
    assert Engine([probe]).run(ev, profile_view, T0) is None


async def test_an_event_a_detector_cannot_observe_is_dead_lettered_and_the_batch_goes_on(
    rules_settings: Settings, bus_io: RulesBusIO
) -> None:
    class Broken(Detector[Event]):
        def wants(self, event: Event) -> bool:
            return event.type == "telemetry"

        def observe(self, event: Event, known: ElderView | None) -> Event | None:
            if event.data.get("bad"):
                raise RuntimeError("detector bug")
            return event

    engine = Engine([Broken(), FallDetector()])
    now = SystemClock().now_ms()
    bad = telemetry_event({"bad": True}, now, seq=9_001)
    fall = device_event("fall", now, seq=9_002)
    pool: AsyncConnectionPool = await open_pool(rules_settings.database_url, max_size=2)
    try:
        handler = EventHandler(
            rules_settings, pool, engine, AlertPublisher(bus_io.bus, pool), SystemClock()
        )
        await handler.handle_batch("telemetry.0", [encode(bad), encode(fall)])
    finally:
        await pool.close()
    letters = await support.rows(rules_settings, "SELECT reason, device_id FROM dead_letters")
    assert [(r["reason"], r["device_id"]) for r in letters] == [("rules_failed", "W1")]
    assert [a["kind"] for a in await alerts(rules_settings)] == ["fall"]


async def test_an_invalid_event_in_a_batch_is_dead_lettered_alone(
    rules_settings: Settings, bus_io: RulesBusIO
) -> None:
    """One event of a telemetry batch message does not decode: it is kept as it came, on
    its own, and the events around it (a fall among them) are handled as usual. A body
    that is not even a JSON array, or an empty one, is kept whole."""
    now = SystemClock().now_ms()
    windows = accel_windows("F01", now - 60_000, 6_000)
    bad = b'{"id": "W1:1:2", "elder_id": "' + ELDER.encode() + b'"}'
    parts = [encode(w) for w in windows]
    body = encode_events([*parts[:2], bad, *parts[2:]])
    pool: AsyncConnectionPool = await open_pool(rules_settings.database_url, max_size=2)
    try:
        handler = EventHandler(
            rules_settings,
            pool,
            Engine([FallDetector()]),
            AlertPublisher(bus_io.bus, pool),
            SystemClock(),
        )
        await handler.handle_batch("telemetry.0", [body, b"[{not json", b" []"])
    finally:
        await pool.close()
    letters = await support.rows(
        rules_settings, "SELECT reason, payload FROM dead_letters ORDER BY id"
    )
    assert [(r["reason"], bytes(r["payload"])) for r in letters] == [
        ("rules_invalid_event", bad),
        ("rules_invalid_event", b"[{not json"),
        ("rules_invalid_event", b" []"),
    ]
    falls = [a for a in await alerts(rules_settings) if a["kind"] == "fall"]
    assert [(a["status"], a["rule"]) for a in falls] == [("pending", "fall.accel")]


_FIELDS = (
    "hr", "spo2", "temp", "steps", "battery", "worn", "lat", "lon", "motion", "presence",
    "water_flow", "power_w", "energy_kwh", "accel", "other",
)  # fmt: skip
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200),
    st.floats(-5, 200, allow_nan=False),
    st.just({"hz": 50.0, "x": [0.0], "y": [0.0], "z": [1.0]}),
)


@settings(max_examples=300, deadline=None)
@given(
    data=st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=6),
    kind=st.sampled_from(["wristband", "pir", "water_meter", "plug", "power_meter", "radar"]),
)
def test_telemetry_fields_name_every_field_wants_reads(data: dict[str, object], kind: str) -> None:
    """A detector with `telemetry_fields` wants no telemetry that has none of them, so
    the engine, which does not ask it about such telemetry, wants what it always did."""
    engine = default_engine(get_settings())
    ev = telemetry_event(data, T0, seq=1, kind=kind)
    for detector in engine.detectors:
        if detector.telemetry_fields is not None and detector.wants(ev):
            assert not detector.telemetry_fields.isdisjoint(data), type(detector).__name__
    for _ in range(2):  # the second time from the engine's memory of the shape
        assert engine.wanting(ev) == tuple(d for d in engine.detectors if d.wants(ev))
        assert engine.wants(ev) == any(d.wants(ev) for d in engine.detectors)

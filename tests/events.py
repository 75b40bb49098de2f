"""Typed bus Events for detector tests, built the way ingest builds them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from carewatch.messages import Event, EventType
from rules_engine.apply import AlertState, apply
from rules_engine.decisions import Decision
from rules_engine.detectors.base import ActiveAlert, ElderView
from rules_engine.engine import Engine


def _event(t_ms: int, seq: int, device: str, kind: str, lag_ms: int, **fields: object) -> Event:
    return Event(
        id=f"{device}:{seq}",
        elder_id="E1",
        device_id=device,
        device_kind=kind,
        device_time_ms=t_ms,
        received_ms=t_ms + lag_ms,
        seq=seq,
        **fields,  # type: ignore[arg-type]
    )


def device_event(
    event: EventType,
    t_ms: int,
    *,
    seq: int,
    device: str = "W1",
    kind: str = "wristband",
    lag_ms: int = 50,
) -> Event:
    """A device event (SOS, fall flag, cancel...) at device time t_ms."""
    return _event(t_ms, seq, device, kind, lag_ms, type="event", event=event)


def telemetry_event(
    data: Mapping[str, object],
    t_ms: int,
    *,
    seq: int,
    device: str = "W1",
    kind: str = "wristband",
    lag_ms: int = 50,
) -> Event:
    """A telemetry sample at device time t_ms."""
    return _event(t_ms, seq, device, kind, lag_ms, type="telemetry", data=dict(data))


@dataclass
class EngineRun:
    """Runs events through an engine and keeps the active alerts as the store would
    (rules_engine.apply, the store's applier); counts the events that would have reached
    the database (the engine wanted them)."""

    engine: Engine
    active: dict[str, ActiveAlert] = field(default_factory=dict)
    to_db: int = 0

    def view(self) -> ElderView:
        raise NotImplementedError

    def feed(self, events: Sequence[Event]) -> list[Decision]:
        out: list[Decision] = []
        for e in events:
            decisions = self.engine.run(e, self.view, e.received_ms)
            if decisions is None:
                continue
            self.to_db += 1
            after, _ = apply(AlertState.of(self.active), decisions, e.received_ms)
            self.active = after.active_by_kind()
            out.extend(decisions)
        return out

"""Helpers for streaming detectors: state kept in memory between telemetry samples.

Telemetry is frequent and mostly uneventful, so a streaming detector decides in
`wants()` (no I/O) whether a sample needs the database at all. Two things make that
safe:

- `EventMemo`: `wants()` runs more than once per delivery (the worker's pre-check, then
  `Engine.on_event`, and again when a transaction is retried), so whatever a sample did to
  the detector's state is computed once and remembered by event id.
- `ViewCache`: what a detector needs from the elder's view (care profile thresholds,
  zones) is learned whenever one of its events reaches `on_event`, and considered stale
  after `max_age_ms` of device time, so a profile edit applies within that time without
  a restart. An elder never seen (or stale) makes `wants()` say yes once, to learn.

All of it is per worker and lost on restart; each detector says what that costs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from rules_engine.detectors.base import ElderView

T = TypeVar("T")

DEFAULT_MAX_AGE_MS = 10 * 60 * 1000


class EventMemo(Generic[T]):
    """A bounded map event id -> what the detector concluded about that event."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[str, T] = OrderedDict()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._items

    def __getitem__(self, event_id: str) -> T:
        return self._items[event_id]

    def put(self, event_id: str, value: T) -> T:
        self._items[event_id] = value
        self._items.move_to_end(event_id)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
        return value


@dataclass(frozen=True, slots=True)
class _Known(Generic[T]):
    value: T
    learned_ms: int


class ViewCache(Generic[T]):
    """Per elder: a value derived from the last ElderView seen, and when (device time)."""

    def __init__(
        self, derive: Callable[[ElderView], T], max_age_ms: int = DEFAULT_MAX_AGE_MS
    ) -> None:
        self._derive = derive
        self._max_age_ms = max_age_ms
        self._known: dict[str, _Known[T]] = {}

    def get(self, elder_id: str, device_ms: int) -> T | None:
        """The value if it is fresh at `device_ms`, else None (the caller must learn it)."""
        known = self._known.get(elder_id)
        if known is None or abs(device_ms - known.learned_ms) > self._max_age_ms:
            return None
        return known.value

    def learn(self, elder: ElderView, device_ms: int) -> T:
        value = self._derive(elder)
        self._known[elder.elder_id] = _Known(value, device_ms)
        return value

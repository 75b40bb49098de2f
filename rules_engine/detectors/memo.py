"""Per-worker memory that keeps hot telemetry away from the database.

Detectors see every sample they want in `observe()` (no I/O, once per event: the engine
answers a redelivery with the observation it made the first time). Most samples change
nothing: a motion report that pushes an inactivity deadline back by a few seconds, a
battery level equal to the last one. This memory lets `observe()` return nothing for
them. It is only an optimisation: after a restart (empty memory) the first sample of
each key goes to the database again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

import msgspec

V = TypeVar("V")

MAX_KEYS = 500_000  # bounded: the least recently used keys are forgotten first


class _Lru(Generic[V]):
    def __init__(self, max_keys: int) -> None:
        self._items: OrderedDict[str, V] = OrderedDict()
        self._max = max_keys

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: str, item: V) -> None:
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def swap(self, key: str, item: V) -> V | None:
        """put(), returning what get() would have: one reordering instead of two."""
        items = self._items
        previous = items.get(key)
        items[key] = item
        if previous is None:
            while len(items) > self._max:
                items.popitem(last=False)
        else:
            items.move_to_end(key)
        return previous


# The records below are made for every telemetry sample a memo sees: frozen msgspec
# structs build ~0.2 us faster than frozen dataclasses, which set each field through
# object.__setattr__. gc=False: they hold only ints, strings and the values memoised.


class _Deadline(msgspec.Struct, frozen=True, gc=False):
    due_ms: int
    span_ms: int  # due - sign time when it was written: the next due is about at + span


class DeadlineMemo:
    """The last sliding deadline this worker wrote per key (e.g. per elder)."""

    def __init__(
        self,
        slack_ms: int = 60_000,
        max_keys: int = MAX_KEYS,
        *,
        slack_fraction: float | None = None,
    ) -> None:
        self.slack_ms = slack_ms
        # with a fraction, short deadlines get a proportionally shorter slack
        self.slack_fraction = slack_fraction
        self._last: _Lru[_Deadline] = _Lru(max_keys)

    def worth_writing(self, key: str, at_ms: int) -> bool:
        """Would a sign at `at_ms` move the deadline by at least the slack?"""
        last = self._last.get(key)
        if last is None:
            return True
        slack = self.slack_ms
        if self.slack_fraction is not None:
            slack = min(slack, int(last.span_ms * self.slack_fraction))
        return abs(at_ms + last.span_ms - last.due_ms) >= slack

    def wrote(self, key: str, at_ms: int, due_ms: int) -> None:
        self._last.put(key, _Deadline(due_ms, due_ms - at_ms))


class ValueMemo(Generic[V]):
    """The last value seen per key, to act on changes only (worn, battery, flow band)."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._seen: _Lru[V] = _Lru(max_keys)

    def swap(self, key: str, value: V) -> V | None:
        """Record `value`: what it was before (None: not seen since this worker started;
        a change is `previous != value`)."""
        return self._seen.swap(key, value)


class LatestTimes:
    """The latest time seen per key (e.g. the elder's last door event): idempotent."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._latest: _Lru[int] = _Lru(max_keys)

    def saw(self, key: str, at_ms: int) -> None:
        latest = self._latest.get(key)
        if latest is None:
            self._latest.put(key, at_ms)
        elif at_ms > latest:
            self._latest._items[key] = at_ms  # get() moved it to the end already

    def get(self, key: str) -> int | None:
        return self._latest.get(key)

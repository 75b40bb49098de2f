"""Per-worker cache of ElderViews, so telemetry that decides nothing needs no database.

A shard has one owner (rules_engine.shards), so the elder's view changes mostly through
this worker's own writes, after which the worker invalidates the elder's entry. Other
writers exist (operator acks and resolves, care-profile and zone edits, registry
edits, timers fired by any worker): an entry is trusted for at most `ttl_ms` after it
was loaded, which bounds how late those reach a decision that writes nothing. Anything
that writes still decides again on a fresh, locked view (store.apply_event), so the
cache never changes what is written, only whether a no-op is recognised without I/O.

A load runs concurrently with the other lane of the same shard, whose apply may
invalidate the elder meanwhile: a fill only lands if nothing invalidated its elder since
the load began (`begin` hands out the ticket `put` checks), so a view read before a
write is never cached after it. Pure: time comes from the injected Clock, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from carewatch.clock import Clock
from rules_engine.detectors.base import ElderView

DEFAULT_MAX_ELDERS = 20_000


@dataclass(frozen=True, slots=True)
class _Entry:
    view: ElderView
    shard: int
    loaded_ms: int


class Ticket:
    """Proof that a load of one elder's view began after its last invalidation."""

    __slots__ = ("elder_id",)

    def __init__(self, elder_id: str) -> None:
        self.elder_id = elder_id


class ViewCache:
    """ElderViews by elder id: at most `max_elders` (least recently used go first),
    each trusted for `ttl_ms` after its load; `ttl_ms` 0 disables the cache."""

    def __init__(
        self,
        clock: Clock,
        ttl_ms: int,
        shard_of: Callable[[str], int],
        max_elders: int = DEFAULT_MAX_ELDERS,
    ) -> None:
        self._clock = clock
        self._ttl_ms = ttl_ms
        self._shard_of = shard_of
        self._max = max_elders
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # loads in flight, by elder: the ticket of the latest one that may still land
        self._loading: dict[str, Ticket] = {}

    @property
    def enabled(self) -> bool:
        return self._ttl_ms > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, elder_id: str) -> ElderView | None:
        """The elder's view if loaded within the TTL, else None (load it, then `put`)."""
        entry = self._entries.get(elder_id)
        if entry is None:
            return None
        if self._clock.now_ms() - entry.loaded_ms >= self._ttl_ms:
            del self._entries[elder_id]
            return None
        self._entries.move_to_end(elder_id)
        return entry.view

    def begin(self, elder_id: str) -> Ticket:
        """Call before reading the view from the database; hand the ticket to `put`."""
        ticket = Ticket(elder_id)
        self._loading[elder_id] = ticket
        return ticket

    def put(self, ticket: Ticket, view: ElderView | None, loaded_ms: int) -> None:
        """Keep `view` (None: nothing to keep, the load only ends) unless the elder was
        invalidated, or loaded again, since `ticket` began. `loaded_ms` is the clock's
        time when the load began: the TTL counts from when the data was read."""
        elder_id = ticket.elder_id
        if self._loading.get(elder_id) is not ticket:
            return
        del self._loading[elder_id]
        if view is None or not self.enabled:
            return
        self._entries[elder_id] = _Entry(view, self._shard_of(elder_id), loaded_ms)
        self._entries.move_to_end(elder_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def invalidate(self, elder_id: str) -> None:
        """The elder's state changed (this worker wrote it): forget the view, and any
        load in flight, which may have read it before the write."""
        self._entries.pop(elder_id, None)
        self._loading.pop(elder_id, None)

    def clear_shard(self, shard: int) -> None:
        """Ownership of `shard` was gained or lost: another worker may have written its
        elders meanwhile."""
        for elder_id in [e for e, entry in self._entries.items() if entry.shard == shard]:
            del self._entries[elder_id]
        for elder_id in [e for e in self._loading if self._shard_of(e) == shard]:
            del self._loading[elder_id]

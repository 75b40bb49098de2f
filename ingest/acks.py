"""In-order QoS 1 acknowledgement once a message's side effects are durable.

Each received message is tracked with a Ticket (the messages of one ingest micro-batch
share one); a ticket is done when all its parts are (e.g. "published on the bus" and
"row COPYed"). PUBACKs go out strictly in the order the PUBLISH packets arrived (MQTT
4.6 asks clients to keep that order), so the head of the queue gates everything behind
it. A redelivered copy of a message still in flight shares the original's ticket, so it
is acknowledged only when the original is durable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

M = TypeVar("M")


class Ticket:
    __slots__ = ("_parts",)

    def __init__(self, parts: int = 1) -> None:
        self._parts = parts

    @property
    def done(self) -> bool:
        return self._parts <= 0

    def complete(self, parts: int = 1) -> None:
        self._parts -= parts


DONE_TICKET = Ticket(0)  # for messages with nothing left to make durable


class AckTracker(Generic[M]):
    """`ack_all` is called with runs of messages, in arrival order. Consecutive messages
    under one ticket (a micro-batch's) are kept as one run: one check, one call."""

    def __init__(self, ack_all: Callable[[list[M]], None]) -> None:
        self._ack_all = ack_all
        self._pending: deque[tuple[list[M], Ticket]] = deque()
        self._count = 0

    def track(self, message: M, ticket: Ticket) -> None:
        self._count += 1
        if self._pending:
            run, last = self._pending[-1]
            if last is ticket:
                run.append(message)
                return
        self._pending.append(([message], ticket))

    def release(self) -> int:
        """Acknowledge the done prefix of the queue; return how many were acknowledged."""
        released = 0
        while self._pending and self._pending[0][1].done:
            run, _ = self._pending.popleft()
            self._ack_all(run)
            released += len(run)
        self._count -= released
        return released

    def __len__(self) -> int:
        return self._count

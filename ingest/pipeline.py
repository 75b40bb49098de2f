"""Validate -> dedup -> publish (fast path) -> add to the batch, per micro-batch.

Messages are taken from the source queue in micro-batches (whatever has arrived, up
to ingest_batch_size) so Redis sees one round trip per micro-batch for dedup and one
for publishing. Every accepted event, SOS included, is published as soon as its
micro-batch is processed, never held back for the telemetry COPY; its PUBACK waits
until the row is durable too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from carewatch.alarm_priority import AlarmPriority
from carewatch.messages import Event
from carewatch.metrics import DEAD_LETTERS_NOT_KEPT, DUPLICATES, MESSAGES_IN, REJECTS
from carewatch.settings import Settings
from ingest.acks import DONE_TICKET, AckTracker, Ticket
from ingest.batch import Batch
from ingest.dead_letters import DeadLetter, DeadLetterLimit
from ingest.dedup import Claim, Deduplicator
from ingest.flusher import Flusher
from ingest.mqtt_source import Incoming
from ingest.publisher import BusPublisher
from ingest.registry_cache import DeviceRegistry
from ingest.retry import GaveUp, with_retry
from ingest.validate import Accepted, Rejection, validate

log = logging.getLogger(__name__)

# An accepted message is durable once published on the bus AND stored by a flush.
_ACCEPTED_PARTS = 2


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        registry: DeviceRegistry,
        dedup: Deduplicator,
        publisher: BusPublisher,
        tracker: AckTracker[Incoming],
        pending: dict[str, Ticket],
        flusher: Flusher,
        deadline: Callable[[], float | None],
        priority: AlarmPriority | None = None,
        alarm_lane: bool = False,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._dedup = dedup
        self._publisher = publisher
        self._tracker = tracker
        self._pending = pending
        self._flusher = flusher
        self._deadline = deadline
        self._batch = Batch()
        self._batch_s = settings.ingest_batch_ms / 1000
        self._publishing: asyncio.Future[None] | None = None  # the last micro-batch's publish
        # the events lane's work goes first; the telemetry lane stands aside for it
        self._priority = priority or AlarmPriority()
        self._alarm_lane = alarm_lane
        self._dead_letter_limit = DeadLetterLimit(
            settings.ingest_dead_letters_per_device_hour, settings.ingest_dead_letters_per_hour
        )

    async def run(self, source: asyncio.Queue[Incoming | None]) -> None:
        """Process until the None sentinel, then hand the last batch and a sentinel on."""
        limit = self._settings.ingest_batch_size
        linger_s = 0.0 if self._alarm_lane else self._settings.ingest_telemetry_linger_ms / 1000
        try:
            while True:
                try:
                    first = await asyncio.wait_for(source.get(), self._time_left())
                except TimeoutError:
                    await self._seal()
                    continue
                messages = [first]
                while len(messages) < limit and not source.empty():
                    messages.append(source.get_nowait())
                finished = messages[-1] is None
                await self.process([m for m in messages if m is not None])
                if finished:
                    await self._seal()
                    return
                if len(messages) < limit and linger_s:
                    await asyncio.sleep(linger_s)  # pacing the next take, not waiting for anything
        except GaveUp:
            log.error(
                "shutting down while Redis is unavailable: unprocessed messages stay unacknowledged"
            )
        finally:
            if self._publishing is not None:
                self._publishing.cancel()
            await self._flusher.queue.put(None)

    def _time_left(self) -> float | None:
        if not len(self._batch):
            return None
        if len(self._batch) >= self._settings.ingest_batch_size:
            return 0.0
        return max(0.0, self._batch.started_at + self._batch_s - time.monotonic())

    async def _settle(self) -> None:
        """Wait for the previous micro-batch's publish (raises what it raised)."""
        if self._publishing is not None:
            publishing, self._publishing = self._publishing, None
            await publishing

    async def _seal(self) -> None:
        """Hand the batch to the flusher once everything in it is on the bus: a flush marks
        dedup keys done, which must never happen for a message not yet published."""
        await self._settle()
        if len(self._batch):
            batch, self._batch = self._batch, Batch()
            await self._flusher.queue.put(batch)  # blocks when flushing falls behind

    async def process(self, messages: list[Incoming]) -> None:
        """Validate and claim this micro-batch while the previous one is still being
        published, then start publishing this one (not awaited: the next call, or the
        seal, waits for it). Publishes go out in order, one at a time."""
        with self._alarm():
            await self._process(messages)

    def _alarm(self) -> contextlib.AbstractContextManager[None]:
        return self._priority.alarm() if self._alarm_lane else contextlib.nullcontext()

    async def _process(self, messages: list[Incoming]) -> None:
        results: list[tuple[Incoming, Accepted | Rejection]] = []
        check, priority = self._check, self._priority
        for message in messages:
            if not self._alarm_lane and priority.due():
                await priority.pause()  # nothing is held here: no claim, no batch
            result = check(message)
            if (
                type(result) is Rejection
                and result.reason == "unknown_device"
                and await self._registry.refresh_on_miss()
            ):
                result = check(message)  # the device may have been registered a moment ago
            results.append((message, result))
        keys = [r.dedup_key for _, r in results if isinstance(r, Accepted) and r.dedup_key]
        claiming = asyncio.ensure_future(
            with_retry("dedup claim", lambda: self._dedup.claim(keys), deadline=self._deadline)
        )
        try:
            if self._time_left() == 0:
                await self._seal()
            else:
                await self._settle()
            claims = iter(await claiming)
        finally:
            claiming.cancel()  # no-op once done
        to_publish: list[tuple[Event, float]] = []
        accepted: dict[str, int] = {}  # counted once per micro-batch: inc() takes a lock
        # Every message of this micro-batch that is not a copy, rejections included, shares
        # one ticket: the accepted ones are published together (the first part), and all
        # are stored by the same flush (the second, dead letters included).
        ticket = Ticket(_ACCEPTED_PARTS)
        under_ticket = 0
        batch, pending, track = self._batch, self._pending, self._tracker.track
        # Tracked in arrival order, so PUBACKs keep the order PUBLISHes came in.
        for message, result in results:
            if type(result) is Rejection:
                self._reject(message, result)
                track(message, ticket)
                under_ticket += 1
                continue
            assert type(result) is Accepted
            key = result.dedup_key
            claim = next(claims) if key is not None else Claim.NEW
            if claim is Claim.OWN_PENDING and key not in pending:
                # Our claim, but no message of ours holds it: an earlier attempt of this
                # very call wrote it and lost the reply (Redis died mid-call; found by
                # tests/test_chaos.py). Taking it for a duplicate would drop the message.
                claim = Claim.NEW
            if claim is Claim.DUPLICATE or claim is Claim.OWN_PENDING:
                DUPLICATES.inc()
                # A copy of a message still in flight is acknowledged with the original.
                track(message, pending.get(key, DONE_TICKET) if key is not None else DONE_TICKET)
                continue
            event = result.event
            accepted[event.type] = accepted.get(event.type, 0) + 1
            if key is not None:
                pending[key] = ticket
            batch.add_accepted(result)
            track(message, ticket)
            under_ticket += 1
            to_publish.append((event, message.received_at))
        if under_ticket:
            batch.add_ticket(ticket, under_ticket)
        for event_type, n in accepted.items():
            MESSAGES_IN.labels(event_type).inc(n)
        self._publishing = asyncio.ensure_future(self._publish(to_publish, ticket))

    async def _publish(self, to_publish: list[tuple[Event, float]], ticket: Ticket) -> None:
        with self._alarm():
            await with_retry(
                "bus publish",
                lambda: self._publisher.publish(to_publish),
                deadline=self._deadline,
                items=len(to_publish),
            )
        ticket.complete()
        self._tracker.release()

    def _check(self, message: Incoming) -> Accepted | Rejection:
        return validate(
            message.topic,
            message.payload,
            self._registry.devices,
            received_ms=message.received_ms,
            max_payload_bytes=self._settings.max_payload_bytes,
        )

    def _reject(self, message: Incoming, rejection: Rejection) -> None:
        REJECTS.labels(rejection.reason).inc()
        log.info(
            "device message rejected",
            extra={
                "reason": rejection.reason,
                "device_id": rejection.device_id,
                "topic": message.topic[:200],
                "detail": rejection.detail[:200],
            },
        )
        if not self._dead_letter_limit.keep(rejection.device_id or message.topic):
            DEAD_LETTERS_NOT_KEPT.labels(rejection.reason).inc()
            return
        letter = DeadLetter(message.received_ms, message.topic, rejection, message.payload)
        self._batch.add_dead_letter(letter)

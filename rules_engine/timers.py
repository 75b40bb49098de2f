"""The timer loop: fires due durable timers (rule_timers) exactly once.

Each timer fires in its own transaction that applies its effect and sets fired_at,
so a worker killed at any point either fired it (committed) or left it due for the
next poll of any worker. The same loop republishes alert changes a crash left
unpublished, prunes old idempotency bookkeeping and runs the periodic reads the
detectors need (rules_engine.inputs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg
from psycopg_pool import AsyncConnectionPool

from carewatch.alert_outbox import AlertPublisher
from carewatch.clock import Clock
from carewatch.metrics import ALERTS
from carewatch.settings import Settings
from rules_engine import store
from rules_engine.engine import Engine
from rules_engine.inputs import Inputs

log = logging.getLogger(__name__)

# A change normally leaves the outbox milliseconds after commit; one still there after
# this long was orphaned by a crash (republishing early would only duplicate it).
REPUBLISH_AFTER_MS = 5_000
PRUNE_EVERY_S = 600.0


async def fire_due(
    pool: AsyncConnectionPool,
    engine: Engine,
    publisher: AlertPublisher,
    settings: Settings,
    clock: Clock,
    *,
    on_fired: Callable[[str], None] | None = None,
) -> int:
    """Fire every timer due now; returns how many this worker fired. `on_fired(elder_id)`
    follows every timer whose transaction ran (the elder's state may have changed)."""
    fired = 0
    for timer in await store.due_timers(pool, clock.now_ms()):
        try:
            outcome = await store.fire_timer(
                pool,
                timer.timer_id,
                timer.elder_id,
                lambda due, view: engine.on_timer(due, view, clock.now_ms()),
                settings,
                clock,
            )
        except psycopg.OperationalError:
            raise  # database unreachable: every due timer stays due for the next poll
        except Exception as exc:
            # fails the same way on every poll: keep it, and do not let it starve the rest
            log.exception("timer failed, dead-lettered", extra={"timer_id": timer.timer_id})
            await store.abandon_timer(pool, timer, repr(exc))
            continue
        if outcome.result == "gone":
            continue
        if on_fired is not None:
            on_fired(timer.elder_id)
        fired += 1
        log.info(
            "timer fired",
            extra={"timer_id": timer.timer_id, "result": outcome.result},
        )
        for change in outcome.changes:
            ALERTS.labels(change.kind, change.status).inc()
        await publisher.publish(outcome.changes)
    return fired


async def run_timer_loop(
    pool: AsyncConnectionPool,
    engine: Engine,
    publisher: AlertPublisher,
    settings: Settings,
    clock: Clock,
    stop: asyncio.Event,
    *,
    inputs: Inputs | None = None,
    on_fired: Callable[[str], None] | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    next_prune = loop.time()
    while not stop.is_set():
        try:
            await fire_due(pool, engine, publisher, settings, clock, on_fired=on_fired)
            await publisher.sweep(REPUBLISH_AFTER_MS)
            if loop.time() >= next_prune:
                await store.prune(pool, settings.dedup_ttl_s)
                next_prune = loop.time() + PRUNE_EVERY_S
            if inputs is not None:
                await inputs.refresh(pool, clock)  # routines, silence sweep
        except Exception:  # a DB or bus outage must not end the loop: retry next poll
            log.exception("timer loop iteration failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.timer_poll_ms / 1000)

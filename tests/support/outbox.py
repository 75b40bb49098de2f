"""Outbox set-up shared by the outbox and delivery tests: a sender on a real pool, a
step-0 SMS to the grid worker, and the row's status."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from carewatch.db.pool import open_pool
from carewatch.settings import Settings
from notifier import outbox
from notifier.ack_links import link_url, new_short_code, sign
from notifier.channels.registry import build_channels
from notifier.outbox import NewNotification, OutboxSender
from notifier.targets import Recipient
from tests.support.notifier import ELDER_NAME, GRID_WORKER_ID, GRID_WORKER_PHONE, query

GRID_WORKER = Recipient("grid_worker", GRID_WORKER_ID, "张三", "网格员", GRID_WORKER_PHONE)


def sms_to(alert_id: str, phone: str = GRID_WORKER_PHONE) -> NewNotification:
    params = {
        "alert_id": alert_id,
        "elder_name": ELDER_NAME,
        "kind_label": "紧急呼叫",
        "address": "民族路1号",
        "time": "08:30",
        "link": link_url(
            "http://127.0.0.1:1", sign(alert_id, "grid_worker", "GW1", 4_000_000_000_000, "s")
        ),
        "code": new_short_code(),
    }
    return NewNotification(alert_id, 0, "alert", "sms", GRID_WORKER, phone, params)


@contextlib.asynccontextmanager
async def sender_for(settings: Settings) -> AsyncIterator[OutboxSender]:
    pool = await open_pool(settings.database_url)
    async with httpx.AsyncClient() as client:
        try:
            yield OutboxSender(pool, build_channels(settings, client), settings)
        finally:
            await pool.close()


@contextlib.asynccontextmanager
async def polling(sender: OutboxSender) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def enqueue(sender: OutboxSender, *items: NewNotification) -> list[int]:
    async with sender.pool.connection() as conn:
        return await outbox.enqueue(conn, items, sender.clock.now_ms())


def status_of(dsn: str, row_id: int) -> tuple[object, ...]:
    return query(dsn, "SELECT status, attempts FROM notifications WHERE id = %s", row_id)[0]

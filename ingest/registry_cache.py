"""In-memory device registry (device id -> elder, kind), refreshed from PostgreSQL.

Validation needs it for every message, so it lives in memory: refreshed periodically,
and on a miss (a device registered a moment ago) at most once every few seconds, so a
flood of unknown ids cannot hammer the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import psycopg
from psycopg_pool import AsyncConnectionPool

from carewatch.db.registry import DeviceInfo, load_devices

log = logging.getLogger(__name__)

PERIODIC_REFRESH_S = 60.0
MISS_REFRESH_MIN_INTERVAL_S = 5.0
# A refresh on a miss runs inline in the pipeline: never let a sick database stall it long.
REFRESH_TIMEOUT_S = 3.0


class DeviceRegistry:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self.devices: dict[str, DeviceInfo] = {}
        self._last_refresh = -float("inf")

    async def refresh(self) -> bool:
        """Reload all devices; on a database error keep the old view and return False."""
        self._last_refresh = time.monotonic()
        try:
            self.devices = await asyncio.wait_for(load_devices(self._pool), REFRESH_TIMEOUT_S)
        except (psycopg.Error, TimeoutError) as exc:
            log.warning("device registry refresh failed", extra={"error": str(exc)})
            return False
        log.debug("device registry refreshed", extra={"devices": len(self.devices)})
        return True

    async def refresh_on_miss(self) -> bool:
        """Refresh unless one happened less than MISS_REFRESH_MIN_INTERVAL_S ago."""
        if time.monotonic() - self._last_refresh < MISS_REFRESH_MIN_INTERVAL_S:
            return False
        return await self.refresh()

    async def keep_fresh(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=PERIODIC_REFRESH_S)
            if not stop.is_set():
                await self.refresh()

"""Which carewatch device a protocol id is: the ledger's devices.protocol/imei, in memory.

A watch logs in with its IMEI (or 10-digit id); a platform push names the device by IMEI
or platform id. The gateway looks it up here; an id not in the ledger is refused. The
view is reloaded periodically and, on a miss, at most every few seconds (a flood of
unknown ids cannot hammer the database), like ingest's device registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from gateways.translate import FieldRule

log = logging.getLogger(__name__)

PERIODIC_REFRESH_S = 30.0
MISS_REFRESH_MIN_INTERVAL_S = 5.0
REFRESH_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class GatewayDevice:
    device_id: str
    elder_id: str
    kind: str
    protocol: str
    imei: str
    product: str | None


_DEVICES = (
    "SELECT id, elder_id, kind, protocol, imei, product FROM devices"
    " WHERE protocol IS NOT NULL AND imei IS NOT NULL"
)
_RULES = "SELECT platform, product, field, meaning, alarm_values FROM gateway_product_fields"
_CONTACTS = (
    "SELECT name, phone FROM contacts WHERE elder_id = %s AND phone IS NOT NULL"
    " ORDER BY priority LIMIT 10"
)


class Directory:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self.devices: dict[tuple[str, str], GatewayDevice] = {}
        self.rules: dict[tuple[str, str], dict[str, FieldRule]] = {}
        self._last_refresh = -float("inf")

    async def refresh(self) -> bool:
        self._last_refresh = time.monotonic()
        try:
            devices, rules = await asyncio.wait_for(self._load(), REFRESH_TIMEOUT_S)
        except (psycopg.Error, TimeoutError) as exc:
            log.warning("gateway directory refresh failed", extra={"error": str(exc)})
            return False
        self.devices, self.rules = devices, rules
        return True

    async def _load(
        self,
    ) -> tuple[dict[tuple[str, str], GatewayDevice], dict[tuple[str, str], dict[str, FieldRule]]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(_DEVICES)
            device_rows: list[dict[str, Any]] = await cur.fetchall()  # type: ignore[assignment]
            cur = await conn.execute(_RULES)
            rule_rows: list[dict[str, Any]] = await cur.fetchall()  # type: ignore[assignment]
        devices: dict[tuple[str, str], GatewayDevice] = {}
        for r in device_rows:
            d = GatewayDevice(
                r["id"], r["elder_id"], r["kind"], r["protocol"], r["imei"], r["product"]
            )
            devices[(d.protocol, d.imei)] = d
        rules: dict[tuple[str, str], dict[str, FieldRule]] = {}
        for r in rule_rows:
            rules.setdefault((r["platform"], r["product"]), {})[r["field"]] = FieldRule(
                r["meaning"], frozenset(r["alarm_values"] or ())
            )
        return devices, rules

    async def find(self, protocol: str, imei: str) -> GatewayDevice | None:
        found = self.devices.get((protocol, imei))
        if found is None and time.monotonic() - self._last_refresh >= MISS_REFRESH_MIN_INTERVAL_S:
            await self.refresh()
            found = self.devices.get((protocol, imei))
        return found

    def field_rules(self, platform: str, product: str | None) -> dict[str, FieldRule]:
        return self.rules.get((platform, product or ""), {})

    async def contacts(self, elder_id: str) -> list[tuple[str, str]]:
        """(name, phone) of the elder's family contacts, in the ledger's order."""
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(_CONTACTS, (elder_id,))
                rows: list[dict[str, Any]] = await cur.fetchall()  # type: ignore[assignment]
        except psycopg.Error as exc:
            log.warning("cannot read contacts", extra={"error": str(exc)})
            return []
        return [(r["name"] or "", r["phone"]) for r in rows]

    async def keep_fresh(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=PERIODIC_REFRESH_S)
            if not stop.is_set():
                await self.refresh()

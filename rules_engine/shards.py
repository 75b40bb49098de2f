"""Shard ownership: each events.{shard} stream is consumed by exactly one rules worker.

Two workers reading one shard would split one elder's events between them and could
apply an SOS after the cancel that followed it. So every shard has an owner, recorded
as a lease in Redis (`cw:rules:shard:{n}` = worker id, SET NX PX), which its owner
renews every lease/3. Live workers announce themselves with a heartbeat key with the
same TTL. Each worker takes free shards up to its fair share, ceil(shards / live
workers), and hands back the ones above it when others join; a dead worker's leases
expire and the survivors take its shards over.

`plan` (which shards to take and release) is pure; `LeaseStore` is the Redis I/O and
`ShardOwner` the loop that drives both and tells the worker which shards to consume.
Leases live in Redis whichever bus backend runs (Redis is always there for ingest dedup).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from carewatch.redis_lease import KEEP, RELEASE

log = logging.getLogger(__name__)

KEY_PREFIX = "cw:rules"


def fair_share(shards: int, workers: int) -> int:
    """The most shards one worker should own; the shares of all workers cover every shard."""
    return math.ceil(shards / max(workers, 1))


def preference(me: str, shards: int) -> list[int]:
    """The order in which `me` takes free shards: rotated by a hash of its id, so that
    workers starting together reach for different shards rather than race for shard 0."""
    start = zlib.crc32(me.encode()) % shards
    return [(start + i) % shards for i in range(shards)]


@dataclass(frozen=True)
class Plan:
    take: tuple[int, ...]
    release: tuple[int, ...]


def plan(me: str, owners: Sequence[str | None], live: Collection[str]) -> Plan:
    """What `me` should do given each shard's current owner (None: free) and the live workers.

    Takes free shards while under the fair share; releases the shards it owns above it
    (the last ones in its preference order, so it keeps the same ones across rounds).
    """
    shards = len(owners)
    if shards == 0:
        return Plan((), ())
    ceiling = fair_share(shards, len(set(live) | {me}))
    order = preference(me, shards)
    mine = [s for s in order if owners[s] == me]
    if len(mine) > ceiling:
        return Plan((), tuple(mine[ceiling:]))
    free = [s for s in order if owners[s] is None]
    return Plan(tuple(free[: ceiling - len(mine)]), ())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LeaseStore:
    """Shard leases and worker heartbeats in Redis."""

    def __init__(self, redis: Redis, shards: int, lease_ms: int, prefix: str = KEY_PREFIX) -> None:
        self._redis = redis
        self._shards = shards
        self._lease_ms = lease_ms
        self._prefix = prefix

    def shard_key(self, shard: int) -> str:
        return f"{self._prefix}:shard:{shard}"

    def worker_key(self, worker: str) -> str:
        return f"{self._prefix}:worker:{worker}"

    async def heartbeat(self, worker: str) -> None:
        await self._redis.set(self.worker_key(worker), b"1", px=self._lease_ms)

    async def live_workers(self) -> set[str]:
        prefix = self.worker_key("")
        found: set[str] = set()
        async for key in self._redis.scan_iter(match=f"{prefix}*", count=1000):
            found.add(_text(key)[len(prefix) :])
        return found

    async def owners(self) -> list[str | None]:
        values = await self._redis.mget([self.shard_key(s) for s in range(self._shards)])
        return [_text(v) if v is not None else None for v in values]

    async def acquire(self, shard: int, worker: str) -> bool:
        return bool(
            await self._redis.set(self.shard_key(shard), worker, nx=True, px=self._lease_ms)
        )

    async def keep(self, shard: int, worker: str) -> bool:
        result = await self._redis.eval(KEEP, 1, self.shard_key(shard), worker, self._lease_ms)
        return bool(result)

    async def release(self, shard: int, worker: str) -> None:
        await self._redis.eval(RELEASE, 1, self.shard_key(shard), worker)

    async def leave(self, worker: str) -> None:
        await self._redis.delete(self.worker_key(worker))


ShardCallback = Callable[[int], Awaitable[None]]


class ShardOwner:
    """Keeps this worker's leases and its set of consumed shards in step.

    `on_take(shard)` starts consuming a shard; it is called only once the lease is held.
    `on_release(shard)` stops consuming it; the lease is given back only after it returns,
    so the next owner never overlaps with an in-flight message of this one.
    """

    def __init__(
        self,
        leases: LeaseStore,
        me: str,
        *,
        lease_ms: int,
        on_take: ShardCallback,
        on_release: ShardCallback,
    ) -> None:
        self._leases = leases
        self.me = me
        self._lease_ms = lease_ms
        self._on_take = on_take
        self._on_release = on_release
        self.owned: set[int] = set()
        self._last_ok = time.monotonic()

    async def tick(self) -> None:
        """One round: heartbeat, keep what is ours, then take or release toward the fair share."""
        await self._leases.heartbeat(self.me)
        owners = await self._leases.owners()
        # ours locally or per Redis (a restored Redis may still hold leases of this run)
        claimed = self.owned | {s for s, o in enumerate(owners) if o == self.me}
        held = {s for s in sorted(claimed) if await self._leases.keep(s, self.me)}
        for shard in sorted(self.owned - held):
            log.warning("shard lease lost", extra={"shard": shard, "worker": self.me})
            await self._drop(shard)
        for shard in sorted(held - self.owned):
            await self._adopt(shard)
        self._last_ok = time.monotonic()
        owners = [
            self.me if s in held else (None if o == self.me else o) for s, o in enumerate(owners)
        ]
        decision = plan(self.me, owners, await self._leases.live_workers())
        for shard in decision.release:
            await self._drop(shard)
            await self._leases.release(shard, self.me)
            log.info("shard handed back", extra={"shard": shard, "worker": self.me})
        for shard in decision.take:
            if await self._leases.acquire(shard, self.me):
                await self._adopt(shard)
                log.info("shard taken", extra={"shard": shard, "worker": self.me})

    async def run(self, stop: asyncio.Event) -> None:
        interval = self._lease_ms / 3000
        try:
            while not stop.is_set():
                try:
                    await self.tick()
                except Exception:  # Redis or the bus unreachable: never end the loop,
                    # or this worker would keep consuming shards whose leases lapse
                    log.exception("shard lease round failed", extra={"worker": self.me})
                    await self._expire_if_stale()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        finally:
            await self.leave()

    async def _expire_if_stale(self) -> None:
        # unrenewed for a whole lease: another worker may own our shards by now
        if self.owned and time.monotonic() - self._last_ok > self._lease_ms / 1000:
            log.warning("leases unrenewable, consuming no shards", extra={"worker": self.me})
            for shard in sorted(self.owned):
                await self._drop(shard)

    async def leave(self) -> None:
        """Stop consuming, then hand every shard back at once (a clean shutdown)."""
        for shard in sorted(self.owned):
            await self._drop(shard)
            with contextlib.suppress(RedisError, OSError):
                await self._leases.release(shard, self.me)
        with contextlib.suppress(RedisError, OSError):
            await self._leases.leave(self.me)

    async def _adopt(self, shard: int) -> None:
        await self._on_take(shard)
        self.owned.add(shard)

    async def _drop(self, shard: int) -> None:
        self.owned.discard(shard)
        await self._on_release(shard)

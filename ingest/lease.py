"""Which ingest instance holds a lane's MQTT session: a lease in Redis.

Each lane of ingest (events, telemetry) reads the broker through ONE persistent MQTT
session with a plain (non-shared) subscription, whose client id belongs to the lane and
the deployment (`{namespace}.ingest.{lane}`), not to a host or process. Why not a shared
subscription over per-instance sessions: Mosquitto 2.0 does not restore `$share`
subscriptions after a restart (uplinks before ingest resubscribes are dropped), and it
keeps routing a share of the messages to members that are offline, so an instance that
leaves for good takes its share of presses with it until its session expires. A plain
subscription of a persistent session is restored with the session, and a session that
belongs to the lane is resumed by whichever instance runs the lane next, with every
message queued for it meanwhile.

Only one instance may be connected with a client id at a time (the broker disconnects
the older connection when a second one arrives), so the instances agree through this
lease: `{namespace}:ingest:lease:{client_id}` = holder, SET NX PX, renewed every
lease/3. The others wait as hot standbys and take the lease once it lapses (the holder
died) or is given back (the holder stopped). A holder that finds the lease taken by
someone else (it stalled for longer than the lease) drops its connection at once; the
broker redelivers what it had not acknowledged to the new holder.

While Redis is unreachable the holder keeps its lease (nobody else can take it then, and
ingest cannot deduplicate without Redis anyway); a standby waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

from carewatch.redis_lease import KEEP, RELEASE

log = logging.getLogger(__name__)


def lease_key(namespace: str, client_id: str) -> str:
    return f"{namespace}:ingest:lease:{client_id}"


def holder_id() -> str:
    """Unique per process and start: who holds a lease (for logs and the key's value)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class SessionLease:
    """`held` is set while this process holds the lease, `not_held` while it does not."""

    def __init__(self, redis: Redis, key: str, holder: str, lease_ms: int) -> None:
        self._redis = redis
        self.key = key
        self.holder = holder
        self._lease_ms = lease_ms
        self._keep = redis.register_script(KEEP)
        self._release = redis.register_script(RELEASE)
        self.held = asyncio.Event()
        self.not_held = asyncio.Event()
        self.not_held.set()

    @property
    def period_s(self) -> float:
        return self._lease_ms / 3000

    async def check(self) -> bool:
        """Take or renew the lease now; on a Redis error keep what we believed."""
        try:
            ours = bool(await self._keep(keys=[self.key], args=[self.holder, self._lease_ms]))
        except (RedisError, OSError) as exc:
            log.warning(
                "cannot renew the ingest session lease, keeping the current state",
                extra={"lease": self.key, "error": str(exc)},
            )
            return self.held.is_set()
        if ours and not self.held.is_set():
            log.info("ingest session lease taken", extra={"lease": self.key})
            self.not_held.clear()
            self.held.set()
        elif not ours and self.held.is_set():
            log.warning(
                "ingest session lease taken over by another instance, dropping the session",
                extra={"lease": self.key},
            )
            self.held.clear()
            self.not_held.set()
        return ours

    async def run(self, stop: asyncio.Event) -> None:
        """Take the lease when free and renew it while held, until `stop`."""
        while not stop.is_set():
            await self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.period_s)

    async def release(self) -> None:
        """Give the lease back (after the session was drained), so a standby takes over at
        once instead of after the lease runs out."""
        if not self.held.is_set():
            return
        self.held.clear()
        self.not_held.set()
        with contextlib.suppress(RedisError, OSError):
            await self._release(keys=[self.key], args=[self.holder])


DEPLOYMENT_KEY = "carewatch:namespace"


class RedisOfAnotherDeployment(RuntimeError):
    pass


async def claim_redis_for(redis: Redis, namespace: str) -> None:
    """Mark this Redis database as the bus of deployment `namespace`, or refuse if another
    deployment's workers use it: their streams (events.*, alerts), consumer groups and
    rules leases would mix with ours. Two deployments on one Redis server use two
    databases (CAREWATCH_REDIS_URL=redis://host:6379/1)."""
    await redis.set(DEPLOYMENT_KEY, namespace, nx=True)
    value = await redis.get(DEPLOYMENT_KEY)
    owner = value.decode() if isinstance(value, bytes) else value
    if owner is not None and owner != namespace:
        raise RedisOfAnotherDeployment(
            f"this Redis database is the bus of deployment {owner!r}, not"
            f" {namespace!r} (CAREWATCH_NAMESPACE): give each deployment its own database"
            f" (CAREWATCH_REDIS_URL=redis://host:6379/N), or, when renaming a deployment,"
            f" delete the key {DEPLOYMENT_KEY!r} first"
        )

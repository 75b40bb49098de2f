"""The smallest registry the ingest tests need."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiomqtt
import psycopg
import redis
from faststream.redis.parser.binary import BinaryMessageFormatV1
from prometheus_client import REGISTRY
from psycopg import sql

from carewatch import topics
from carewatch.bus import shard_of, shard_streams
from carewatch.messages import Event, decode_events
from carewatch.settings import Settings
from harness.services import ADMIN_DSN, await_until
from ingest.worker import run

TS = 1_764_000_000_000
ELDER = "E1"
WRISTBAND = "W1"
DOOR = "D1"


def insert_registry(dsn: str) -> None:
    """The smallest registry: one grid, one elder, a wristband and a door sensor."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO grids (id, name, district, street) VALUES (%s, %s, %s, %s)",
            ("G1", "解放碑网格一", "渝中区", "解放碑街道"),
        )
        conn.execute(
            "INSERT INTO elders (id, name, district, street, lat, lon, grid_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (ELDER, "张桂英", "渝中区", "解放碑街道", 29.557, 106.577, "G1"),
        )
        for device_id, kind in ((WRISTBAND, "wristband"), (DOOR, "door")):
            conn.execute(
                "INSERT INTO devices (id, elder_id, kind) VALUES (%s, %s, %s)",
                (device_id, ELDER, kind),
            )


# --- a worker on a private broker, as the ingest tests drive it -------------------------


@dataclass
class Harness:
    settings: Settings

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.settings.database_url) as conn:
            return conn.execute(sql, params).fetchall()

    def query_commit(self, statement: str) -> None:
        with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
            conn.execute(statement)

    def telemetry_seqs(self, device_id: str = WRISTBAND) -> list[int]:
        rows = self.query(
            "SELECT seq FROM telemetry WHERE device_id = %s ORDER BY seq", (device_id,)
        )
        return [int(r[0]) for r in rows]

    def bus_events(self) -> list[Event]:
        """Everything published for the elder's shard, both lanes, in publish order."""
        client = redis.Redis.from_url(self.settings.redis_url)
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        for stream in shard_streams(shard_of(ELDER, self.settings.bus_shards)):
            entries += client.xrange(stream)  # type: ignore[arg-type]
        entries.sort(key=lambda e: tuple(int(p) for p in e[0].split(b"-")))
        # Entries are FastStream-framed: the frame's body is one Event's JSON or, on the
        # telemetry lane, a batch of them
        return [
            event
            for _, f in entries
            for event in decode_events(BinaryMessageFormatV1.parse(f[b"__data__"])[0])
        ]

    async def publish(self, *messages: tuple[str, bytes]) -> None:
        async with aiomqtt.Client(
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            for topic, payload in messages:
                await client.publish(topic, payload, qos=1)


def event_id(seq: int) -> str:
    """The event id ingest gives the wristband's message `seq` (device, seq, device time)."""
    return f"{WRISTBAND}:{seq}:{TS + seq * 1000}"


def sos(seq: int) -> tuple[str, bytes]:
    body = {"v": 1, "seq": seq, "ts": TS + seq * 1000, "type": "sos"}
    return topics.topic(WRISTBAND, "event"), json.dumps(body).encode()


def telemetry(seq: int, **fields: object) -> tuple[str, bytes]:
    body = {"v": 1, "seq": seq, "ts": TS + seq * 1000, **fields}
    return topics.topic(WRISTBAND, "telemetry"), json.dumps(body).encode()


def counter(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def eventually(cond: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    async def check() -> object:
        return cond()

    await await_until(check, timeout=timeout, what=what)


async def start_worker(
    settings: Settings, client_id: str | None = None
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop, ready = asyncio.Event(), asyncio.Event()
    client_id = client_id or f"ingest-test-{uuid.uuid4().hex[:8]}"
    task = asyncio.create_task(run(settings, stop, client_id=client_id, ready=ready))
    await asyncio.wait_for(ready.wait(), timeout=15)
    return stop, task


@contextmanager
def database_down(dsn: str) -> Iterator[None]:
    """Refuse new connections to this test's database and drop the open ones."""
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    assert isinstance(dbname, str)
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(dbname))
        )
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (dbname,),
        )
        try:
            yield
        finally:
            admin.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(dbname))
            )

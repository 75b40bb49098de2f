"""A grid worker's in-person visit reaches the rules engine as a sign of life: the
operator API publishes a `visit_checkin` event on the elder's events shard after the
check-in commits, and a running rules worker moves the elder's inactivity deadline from
it. A phone call is a sign of life on the operator side only (docs/visits.md)."""

from __future__ import annotations

from datetime import datetime

import httpx
import psycopg
import redis

from carewatch import bus
from carewatch.settings import Settings
from harness.services import Proc
from operator_api.tokens import create_token
from tests.operator_support import serving
from tests.support import rules as support
from tests.support.rules import ELDER, rows, until, worker

# fixtures of the support module, used here by name
rules_settings = support.rules_settings


async def test_an_in_person_visit_moves_the_inactivity_deadline(
    rules_settings: Settings, redis_server: Proc
) -> None:
    dsn = rules_settings.database_url
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO grid_workers (id, name, phone, grid_id) VALUES"
            " ('GW1', '周敏', '13800000001', 'G1')"
        )
    token = create_token(dsn, "grid_worker", "GW1")
    headers = {"Authorization": f"Bearer {token}"}
    shards = rules_settings.bus_shards
    async with (
        serving(dsn, redis_server.port, bus_shards=shards) as base,
        worker(rules_settings),
        httpx.AsyncClient(base_url=base, timeout=20) as http,
    ):
        phoned = await http.post(
            f"/api/visits/{ELDER}/checkins", json={"outcome": "phoned"}, headers=headers
        )
        assert phoned.status_code == 201
        visited = await http.post(
            f"/api/visits/{ELDER}/checkins",
            json={"outcome": "visited", "note": "精神不错"},
            headers=headers,
        )
        assert visited.status_code == 201
        at_ms = int(datetime.fromisoformat(visited.json()["at"]).timestamp() * 1000)

        async def deadline_from_the_visit() -> bool:
            found = await rows(
                rules_settings,
                "SELECT payload FROM rule_timers WHERE id = %s",
                f"inactivity:{ELDER}",
            )
            return bool(found) and found[0]["payload"].get("sign") == "visit"

        await until(deadline_from_the_visit, "the inactivity deadline moved by the visit")
    [timer] = await rows(
        rules_settings,
        "SELECT payload, due_at FROM rule_timers WHERE id = %s",
        f"inactivity:{ELDER}",
    )
    assert timer["payload"]["sign_ms"] == at_ms
    assert timer["due_at"].timestamp() * 1000 > at_ms
    # only the visit went to the rules: the call is no bus event
    stream = bus.events_stream(bus.shard_of(ELDER, shards))
    assert redis.Redis(port=redis_server.port).xlen(stream) == 1

"""Shard ownership: the pure plan, and leases between workers on a real (private) Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from harness.services import Proc, await_until
from rules_engine.shards import LeaseStore, Plan, ShardOwner, fair_share, plan, preference


def test_fair_share_covers_every_shard() -> None:
    assert fair_share(8, 1) == 8
    assert fair_share(8, 2) == 4
    assert fair_share(8, 3) == 3
    assert fair_share(2, 5) == 1
    assert fair_share(8, 0) == 8


def test_preference_is_a_rotation_of_all_shards() -> None:
    order = preference("rules-a-1", 8)
    assert sorted(order) == list(range(8))
    assert order == preference("rules-a-1", 8)


def test_alone_takes_every_free_shard() -> None:
    result = plan("a", [None] * 8, {"a"})
    assert sorted(result.take) == list(range(8)) and result.release == ()


def test_takes_only_free_shards_up_to_the_fair_share() -> None:
    owners: list[str | None] = ["b", "b", None, None, None, None, None, None]
    result = plan("a", owners, {"a", "b"})
    assert len(result.take) == 4 and not {0, 1} & set(result.take)


def test_hands_back_the_shards_above_its_share_when_another_joins() -> None:
    owners: list[str | None] = ["a"] * 8
    result = plan("a", owners, {"a", "b"})
    assert len(result.release) == 4 and result.take == ()
    # the newcomer takes nothing until they are free, then up to its share
    assert plan("b", owners, {"a", "b"}) == Plan((), ())
    after = [None if s in result.release else "a" for s in range(8)]
    assert sorted(plan("b", after, {"a", "b"}).take) == sorted(result.release)


def test_a_dead_owners_shards_wait_for_its_leases_to_expire() -> None:
    owners: list[str | None] = ["a", "a", "a", "a", "dead", "dead", "dead", "dead"]
    assert plan("a", owners, {"a"}) == Plan((), ())
    expired: list[str | None] = ["a", "a", "a", "a", None, None, None, None]
    assert sorted(plan("a", expired, {"a"}).take) == [4, 5, 6, 7]


@settings(max_examples=60, deadline=None)
@given(
    shards=st.integers(1, 32),
    workers=st.integers(1, 6),
    held=st.lists(st.integers(0, 5), max_size=32),
)
def test_rounds_converge_to_one_owner_per_shard_within_the_share(
    shards: int, workers: int, held: list[int]
) -> None:
    names = [f"w{i}" for i in range(workers)]
    # any starting point: some shards owned by some of the (live) workers
    owners: list[str | None] = [None] * shards
    for shard, w in enumerate(held[:shards]):
        owners[shard] = names[w] if w < workers else None
    for _ in range(4 * workers + 4):
        for me in names:
            decision = plan(me, owners, names)
            for s in decision.release:
                owners[s] = None
            for s in decision.take:
                assert owners[s] is None  # the lease (SET NX) would refuse anything else
                owners[s] = me
    assert all(o is not None for o in owners)
    share = fair_share(shards, workers)
    assert all(owners.count(n) <= share for n in names)


@pytest.fixture
async def redis_client(redis_server: Proc) -> AsyncIterator[Redis]:
    client = Redis(port=redis_server.port)
    await client.flushall()
    yield client
    await client.aclose()


class Recorder:
    """Stands in for the shard consumers: which shards a worker consumes right now."""

    def __init__(self) -> None:
        self.consuming: set[int] = set()

    async def take(self, shard: int) -> None:
        assert shard not in self.consuming
        self.consuming.add(shard)

    async def release(self, shard: int) -> None:
        self.consuming.discard(shard)


def owner(redis: Redis, me: str, lease_ms: int, rec: Recorder) -> ShardOwner:
    return ShardOwner(
        LeaseStore(redis, 8, lease_ms),
        me,
        lease_ms=lease_ms,
        on_take=rec.take,
        on_release=rec.release,
    )


async def test_two_workers_split_the_shards_and_a_survivor_takes_over(redis_client: Redis) -> None:
    lease_ms = 600
    rec_a, rec_b = Recorder(), Recorder()
    a = owner(redis_client, "a", lease_ms, rec_a)
    b = owner(redis_client, "b", lease_ms, rec_b)
    await a.tick()
    assert rec_a.consuming == set(range(8))
    await b.tick()  # b announces itself; nothing is free yet
    assert rec_b.consuming == set()

    async def split() -> bool:
        await a.tick()
        await b.tick()
        assert not rec_a.consuming & rec_b.consuming  # never two consumers of one shard
        return len(rec_a.consuming) == 4 and len(rec_b.consuming) == 4

    await await_until(split, 5, "an even split")
    owners = await LeaseStore(redis_client, 8, lease_ms).owners()
    assert {s for s, o in enumerate(owners) if o == "a"} == rec_a.consuming
    assert {s for s, o in enumerate(owners) if o == "b"} == rec_b.consuming

    # b dies without a word: its heartbeat and leases expire, a takes everything
    async def taken_over() -> bool:
        await a.tick()
        return rec_a.consuming == set(range(8))

    await await_until(taken_over, 5, "a to take b's shards")


async def test_a_lease_taken_by_another_stops_consumption(redis_client: Redis) -> None:
    rec = Recorder()
    a = owner(redis_client, "a", 5000, rec)
    await a.tick()
    store = LeaseStore(redis_client, 8, 5000)
    await redis_client.set(store.shard_key(3), "intruder")
    await a.tick()
    assert 3 not in rec.consuming and 3 not in a.owned


async def test_clean_shutdown_hands_every_shard_back(redis_client: Redis) -> None:
    rec = Recorder()
    a = owner(redis_client, "a", 5000, rec)
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop))

    async def started() -> bool:
        return rec.consuming == set(range(8))

    await await_until(started, 5, "all shards owned")
    stop.set()
    await task
    assert rec.consuming == set()
    assert await LeaseStore(redis_client, 8, 5000).owners() == [None] * 8
    assert await LeaseStore(redis_client, 8, 5000).live_workers() == set()


async def test_a_consumer_that_fails_to_start_is_started_next_round(redis_client: Redis) -> None:
    rec = Recorder()
    failures = [RuntimeError("bus unreachable")]

    async def flaky_take(shard: int) -> None:
        if failures:
            raise failures.pop()
        await rec.take(shard)

    a = ShardOwner(
        LeaseStore(redis_client, 8, 5000),
        "a",
        lease_ms=5000,
        on_take=flaky_take,
        on_release=rec.release,
    )
    with pytest.raises(RuntimeError):
        await a.tick()
    await a.tick()  # the lease it took is still its own: it consumes it now
    assert rec.consuming == set(range(8)) == a.owned

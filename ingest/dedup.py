"""Redelivery dedup by message id (device, seq, device time; ingest.validate.message_id)
in Redis, one pipelined round trip per batch. Keys are prefixed with the deployment's
namespace.

A plain `SET NX` taken when a message arrives would lose it if this worker crashed
before the row was durable: the broker redelivers the unacknowledged message, but the
key already says "seen". So a key first holds a *claim* naming its owner
("{client_id}|{boot_id}"; the client id is the lane's MQTT session, which one ingest
instance at a time holds, ingest.lease) and only becomes "done" once the message is
durable:

- no previous value: new, ours now;
- "done", or a claim by another client: duplicate (the other worker delivers it);
- our own claim from this boot: a duplicate of a message still in our batch;
- our client id but an older boot: a crashed earlier holder of this session (this
  process before a restart, or another instance) never finished it, so take it over
  (the broker redelivered it to the same persistent session).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis

from carewatch.bus import large_arg

DONE = b"done"


class Claim(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    OWN_PENDING = "own_pending"
    TAKEOVER = "takeover"


def classify(previous: bytes | None, client_id: str, token: bytes) -> Claim:
    """Pure decision from the key's previous value (see module docstring)."""
    if previous is None:
        return Claim.NEW
    if previous == token:
        return Claim.OWN_PENDING
    if previous != DONE and previous.split(b"|", 1)[0] == client_id.encode():
        return Claim.TAKEOVER
    return Claim.DUPLICATE


# One command per batch instead of one per key: redis-py spends far more time packing
# and parsing commands than Redis spends running them. The keys go as one MessagePack
# argument (packed in C) rather than as KEYS (packed by redis-py one by one): carewatch
# runs one Redis, not a cluster, so no key needs routing. Returns the previous values.
_CLAIM = """
local keys = cmsgpack.unpack(ARGV[3])
local previous = {}
for i, key in ipairs(keys) do
    previous[i] = redis.call('SET', key, ARGV[1], 'NX', 'GET', 'EX', ARGV[2]) or false
end
return previous
"""
_SET_ALL = """
local keys = cmsgpack.unpack(ARGV[3])
for _, key in ipairs(keys) do
    redis.call('SET', key, ARGV[1], 'EX', ARGV[2])
end
return #keys
"""


class Deduplicator:
    def __init__(
        self, redis: Redis, *, ttl_s: int, client_id: str, boot_id: str, namespace: str = "cw"
    ) -> None:
        self._prefix = f"{namespace}:"  # one deployment's keys never meet another's
        self._ttl_s = ttl_s
        self._client_id = client_id
        self._token = f"{client_id}|{boot_id}".encode()
        self._claim = redis.register_script(_CLAIM)
        self._set_all_script = redis.register_script(_SET_ALL)

    async def claim(self, keys: Sequence[str]) -> list[Claim]:
        """Claim every key (SET NX GET EX), one round trip; results in input order."""
        if not keys:
            return []
        previous: list[bytes | None] = await self._claim(
            args=[self._token, self._ttl_s, large_arg(self._encode(keys))]
        )
        claims = [classify(p or None, self._client_id, self._token) for p in previous]
        takeovers = [k for k, c in zip(keys, claims, strict=True) if c is Claim.TAKEOVER]
        if takeovers:
            await self._set_all(takeovers, self._token)
        return claims

    async def mark_done(self, keys: Sequence[str]) -> None:
        """The messages behind `keys` are durable: later copies are plain duplicates."""
        await self._set_all(keys, DONE)

    async def _set_all(self, keys: Sequence[str], value: bytes) -> None:
        if keys:
            await self._set_all_script(args=[value, self._ttl_s, large_arg(self._encode(keys))])

    def _encode(self, keys: Sequence[str]) -> bytes:
        prefix = self._prefix
        return msgspec.msgpack.encode([prefix + key for key in keys])

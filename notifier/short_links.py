"""Short SMS ack codes: `code -> signed token`, stored in `ack_short_links`.

A code is created with its notification's parameters (`notifier.content`) and stored in
the transaction that writes the notification (`notifier.outbox.enqueue`), so a code in a
sent SMS always resolves. Resolving gives back the token, which the ack app then verifies
as if it had come in `/ack/{token}`: a code never bypasses the signature, expiry or
single-use checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from notifier import ack_links, sql, timeline
from notifier.sql import Conn

# Expired codes are kept this long so that a late tap still says "expired" rather than
# "invalid", then pruned.
KEEP_EXPIRED_S = 7 * 24 * 3600


async def remember_all(conn: Conn, params: Sequence[Mapping[str, str]]) -> int:
    """Store the codes of notifications' parameters (those that have one), in one
    statement; call inside the transaction that inserts the notifications. How many."""
    codes, tokens, expiries = [], [], []
    for p in params:
        code, link = p.get("code"), p.get("link")
        if code and link:
            token = ack_links.token_of(link)
            codes.append(code)
            tokens.append(token)
            expiries.append(timeline.from_ms(ack_links.unverified_expiry(token)))
    if codes:
        await conn.execute(
            "INSERT INTO ack_short_links (code, token, expires_at)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[])"
            " ON CONFLICT (code) DO NOTHING",
            (codes, tokens, expiries),
        )
    return len(codes)


async def resolve(conn: Conn, code: str) -> str | None:
    """The token behind a code, None for a code never issued (or pruned)."""
    if not ack_links.is_short_code(code):
        return None
    row = await sql.one(conn, "SELECT token FROM ack_short_links WHERE code = %s", (code,))
    return None if row is None else str(row["token"])


async def prune(conn: Conn, now_ms: int) -> int:
    """Forget codes expired more than KEEP_EXPIRED_S ago; the number removed."""
    cur = await conn.execute(
        "DELETE FROM ack_short_links WHERE expires_at < %s",
        (timeline.from_ms(now_ms - KEEP_EXPIRED_S * 1000),),
    )
    return max(cur.rowcount, 0)

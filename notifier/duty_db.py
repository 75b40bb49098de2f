"""Load imported policies, rosters and channel preferences (the edge of the pure
notifier.policies / notifier.rosters decisions)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

from carewatch.messages import Severity
from notifier import sql
from notifier.policies import ChannelName, ScopedPolicy, Step, TargetKind
from notifier.rosters import ChannelPreference, Leave, MemberKind, Roster, Shift
from notifier.sql import Conn


def policies_from_rows(found: Iterable[dict[str, Any]]) -> list[ScopedPolicy]:
    """escalation_policy_steps rows (ordered by step) as whole policies."""
    grouped: dict[tuple[str, str, str], list[Step]] = {}
    for r in found:
        step = Step(
            tuple(cast(list[TargetKind], r["targets"])),
            tuple(cast(list[ChannelName], r["channels"])),
            r["wait_s"],
        )
        grouped.setdefault((r["severity"], r["district"], r["care_profile"]), []).append(step)
    return [
        ScopedPolicy(cast(Severity, severity), district or None, profile or None, tuple(steps))
        for (severity, district, profile), steps in grouped.items()
    ]


_POLICY_SQL = (
    "SELECT district, care_profile, severity, step, targets, channels, wait_s"
    " FROM escalation_policy_steps"
)


async def load_policies(
    conn: Conn, severity: str | None = None, district: str | None = None
) -> list[ScopedPolicy]:
    """The imported policies (of one severity and district, with the any-district ones)."""
    if severity is None:
        query, params = f"{_POLICY_SQL} ORDER BY severity, district, care_profile, step", ()
    else:
        query = f"{_POLICY_SQL} WHERE severity = %s AND district IN ('', %s) ORDER BY step"
        params = (severity, district or "")  # type: ignore[assignment]
    return policies_from_rows(await sql.rows(conn, query, params))


def roster_from_rows(shifts: Iterable[dict[str, Any]], leaves: Iterable[dict[str, Any]]) -> Roster:
    return Roster(
        tuple(
            Shift(
                cast(MemberKind, r["member_kind"]),
                r["member_id"],
                frozenset(r["weekdays"]),
                r["start_time"],
                r["end_time"],
            )
            for r in shifts
        ),
        tuple(
            Leave(
                cast(MemberKind, r["member_kind"]),
                r["member_id"],
                r["first_day"],
                r["last_day"],
                r["substitute_id"],
            )
            for r in leaves
        ),
    )


async def load_roster(
    conn: Conn, kind: MemberKind | None = None, member_ids: Sequence[str] | None = None
) -> Roster:
    """Shifts and leaves of these members (and of everyone a leave may pass on to:
    substitutes' own leaves are loaded too); everything without arguments."""
    if kind is None or member_ids is None:
        shifts = await sql.rows(conn, "SELECT * FROM duty_shifts ORDER BY id")
        leaves = await sql.rows(conn, "SELECT * FROM duty_leaves ORDER BY id")
        return roster_from_rows(shifts, leaves)
    shifts = await sql.rows(
        conn,
        "SELECT * FROM duty_shifts WHERE member_kind = %s AND member_id = ANY(%s) ORDER BY id",
        (kind, list(member_ids)),
    )
    # leaves are few: all of this kind, so a chain of substitutes is complete
    leaves = await sql.rows(
        conn, "SELECT * FROM duty_leaves WHERE member_kind = %s ORDER BY id", (kind,)
    )
    return roster_from_rows(shifts, leaves)


async def load_preferences(
    conn: Conn, phones: Sequence[str] | None = None
) -> dict[str, ChannelPreference]:
    query = "SELECT phone, channels, voice_for_all FROM channel_preferences"
    found = await (
        sql.rows(conn, f"{query} WHERE phone = ANY(%s)", (list(phones),))
        if phones is not None
        else sql.rows(conn, query)
    )
    return {
        r["phone"]: ChannelPreference(
            r["phone"], frozenset(cast(list[ChannelName], r["channels"])), r["voice_for_all"]
        )
        for r in found
    }

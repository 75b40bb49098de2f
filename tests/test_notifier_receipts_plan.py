"""A provider's report finds its notification through indexes, never a sequential scan
of notifications (PostgreSQL, the migrated schema)."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from carewatch.settings import Settings
from notifier import receipts


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def test_a_report_is_matched_by_index_on_out_id_or_the_provider_s_message_id(
    settings: Settings,
) -> None:
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        # on an empty table any plan is cheap: forbid the scan, so only a missing index
        # leaves the planner with it
        conn.execute("SET LOCAL enable_seqscan = off")
        row = conn.execute(
            "EXPLAIN (FORMAT JSON) " + receipts._FIND, ("sms", "out-1", "1234^0")
        ).fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    nodes = _nodes(plan[0]["Plan"])
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], nodes
    used = {n.get("Index Name") for n in nodes}
    assert {"notifications_out_id", "notifications_provider_message_id"} <= used, nodes

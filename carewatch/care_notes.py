"""Medical notes and care needs of an elder (医疗与照护需求, migration 090).

One owner for what responders are shown: the console's alert card and the elder
endpoint (operator_api), and the ack page of the person who acknowledged (notifier).
The registry import writes the rows (registry.importer); this module only reads them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

# 行动能力, as offices write it; English ledgers may use the English words.
MOBILITY_LEVELS: tuple[str, ...] = ("自理", "需搀扶", "轮椅", "卧床")
MOBILITY_ALIASES: dict[str, str] = {
    "independent": "自理",
    "assisted": "需搀扶",
    "wheelchair": "轮椅",
    "bedridden": "卧床",
}
# Stored columns, in the order responders read them, with their Chinese labels.
FIELDS: tuple[tuple[str, str], ...] = (
    ("allergies", "过敏史"),
    ("medications", "用药"),
    ("conditions", "慢性病/病史"),
    ("mobility", "行动能力"),
    ("key_holder_name", "钥匙保管人"),
    ("key_holder_phone", "钥匙保管人电话"),
    ("notes", "备注"),
)
# What a responder most needs before going in: said to be missing when not recorded.
ESSENTIAL: tuple[tuple[str, str], ...] = (
    ("allergies", "过敏史"),
    ("medications", "用药"),
    ("mobility", "行动能力"),
    ("key_holder_name", "钥匙保管人"),
)


@dataclass(frozen=True, slots=True)
class CareNotes:
    allergies: str | None = None
    medications: str | None = None
    conditions: str | None = None
    mobility: str | None = None
    key_holder_name: str | None = None
    key_holder_phone: str | None = None
    notes: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def missing(self) -> list[str]:
        """Chinese names of the essential items not recorded."""
        return [label for name, label in ESSENTIAL if not getattr(self, name)]

    def is_empty(self) -> bool:
        return not any(self.as_dict().values())


_COLUMNS = ", ".join(name for name, _ in FIELDS)


async def load(conn: AsyncConnection[Any], elder_id: str) -> CareNotes:
    """The elder's notes (all None when none are recorded); the caller checks scope."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM elder_care_notes WHERE elder_id = %s",  # noqa: S608
            (elder_id,),
        )
        row = await cur.fetchone()
    return CareNotes(**row) if row else CareNotes()

"""Rooms of a home, as the ledger names them (the `sensors` column: kind:device_id@room).

The inactivity rules know three rooms by name (the bedroom, the bathroom, the entrance);
any other room a ledger names is kept as given and learned like the others.
"""

from __future__ import annotations

BEDROOM, BATHROOM, ENTRANCE = "卧室", "卫生间", "门口"
# The rooms a ledger names (docs/registry.md); others are kept as given.
ROOMS: tuple[str, ...] = ("卧室", "卫生间", "客厅", "厨房", "餐厅", "书房", "门口", "阳台", "其他")
ROOM_ALIASES: dict[str, str] = {
    "bedroom": "卧室",
    "bathroom": "卫生间",
    "toilet": "卫生间",
    "洗手间": "卫生间",
    "厕所": "卫生间",
    "浴室": "卫生间",
    "living": "客厅",
    "livingroom": "客厅",
    "living_room": "客厅",
    "kitchen": "厨房",
    "dining": "餐厅",
    "study": "书房",
    "entrance": "门口",
    "door": "门口",
    "玄关": "门口",
    "入户": "门口",
    "balcony": "阳台",
    "other": "其他",
}


def normalise_room(raw: str) -> str:
    """A ledger's room name: the canonical Chinese one where known, else as given."""
    text = raw.strip()
    return ROOM_ALIASES.get(text.lower().replace(" ", ""), text)

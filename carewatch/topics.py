"""MQTT topic contract: cw/v1/dev/{device_id}/{telemetry|event|status|cmd}."""

from __future__ import annotations

import functools
import re
from typing import Literal

TopicKind = Literal["telemetry", "event", "status", "cmd"]
UPLINK_KINDS: tuple[TopicKind, ...] = ("telemetry", "event", "status")
PREFIX = "cw/v1/dev"
_DEVICE_ID = r"[A-Za-z0-9_-]{1,64}"
DEVICE_ID_RE = re.compile(rf"{_DEVICE_ID}\Z")  # with .match: "$" would let "id\n" through
# One match checks the whole topic, device id included (one per message in ingest).
_TOPIC_RE = re.compile(rf"{PREFIX}/({_DEVICE_ID})/(telemetry|event|status|cmd)")


def topic(device_id: str, kind: TopicKind) -> str:
    return f"{PREFIX}/{device_id}/{kind}"


def uplink_filter(share_group: str | None = None) -> str:
    """One filter for every device topic (uplinks and the cmd downlink), for tools."""
    base = f"{PREFIX}/+/+"
    return f"$share/{share_group}/{base}" if share_group else base


def uplink_filters(
    share_group: str | None = None, kinds: tuple[TopicKind, ...] = UPLINK_KINDS
) -> list[str]:
    """Filters for the device uplinks only (not our own cmd downlinks), as MQTT v5
    shared subscriptions when a group is given."""
    share = f"$share/{share_group}/" if share_group else ""
    return [f"{share}{PREFIX}/+/{kind}" for kind in kinds]


# Ingest parses a topic per message, and a device uses the same few topics all day: a
# cache hit is a dict lookup instead of a regex match. Bounded, so a flood of made-up
# topics cannot grow it.
@functools.lru_cache(maxsize=1 << 16)
def parse(topic_name: str) -> tuple[str, TopicKind] | None:
    """Return (device_id, kind) or None when the topic is not ours or the id is not valid."""
    match = _TOPIC_RE.fullmatch(topic_name)
    if match is None:
        return None
    kind: TopicKind = match.group(2)  # type: ignore[assignment]
    return match.group(1), kind

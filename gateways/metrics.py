"""Prometheus metrics of the gateways (served on the worker's /metrics like the others)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FRAMES = Counter(
    "carewatch_gateway_frames_total",
    "Protocol messages received by a gateway and handled",
    ["protocol", "kind"],
)
REJECTS = Counter(
    "carewatch_gateway_rejects_total",
    "Protocol input a gateway refused, by reason",
    ["protocol", "reason"],
)
PUBLISHED = Counter(
    "carewatch_gateway_published_total",
    "Payloads a gateway published as the device on cw/v1/dev/{id}/...",
    ["protocol", "kind"],
)
DOWNLINKS = Counter(
    "carewatch_gateway_downlinks_total",
    "Commands a gateway sent to devices",
    ["protocol", "command"],
)
CONNECTIONS = Gauge("carewatch_gateway_connections", "Open device TCP connections", ["protocol"])

"""Prometheus metrics shared by every worker; each worker serves them on /metrics."""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)

MESSAGES_IN = Counter(
    "carewatch_ingest_messages_total", "Device messages accepted by ingest", ["type"]
)
REJECTS = Counter(
    "carewatch_ingest_rejects_total", "Device messages rejected by ingest", ["reason"]
)
DEAD_LETTERS_NOT_KEPT = Counter(
    "carewatch_ingest_dead_letters_not_kept_total",
    "Rejected device messages counted but not kept: their device (or all devices) reached"
    " the hourly dead-letter limit",
    ["reason"],
)
DUPLICATES = Counter("carewatch_ingest_duplicates_total", "Redelivered device messages dropped")
TELEMETRY_ROWS = Counter("carewatch_telemetry_rows_total", "Telemetry rows written with COPY")
BUS_PUBLISHED = Counter(
    "carewatch_bus_published_total", "Events published (a telemetry batch counts each)", ["stream"]
)
BUS_LAG = Gauge(
    "carewatch_bus_lag_messages",
    "Bus messages not yet consumed by a group (a telemetry message holds a batch of readings)",
    ["stream", "group"],
)
EVENTS_CONSUMED = Counter("carewatch_rules_events_total", "Events consumed by rules", ["type"])
RULES_DECIDED = Counter(
    "carewatch_rules_decided_total",
    "Events the detectors wanted, by where they were settled: cache (no effect, decided on"
    " the cached view without a database write) or db (applied in a transaction)",
    ["path"],
)
RULES_VIEW_CACHE = Counter(
    "carewatch_rules_view_cache_total", "Lookups in the rules view cache", ["result"]
)
ALERTS = Counter("carewatch_alerts_total", "Alert state changes", ["kind", "status"])
NOTIFICATIONS = Counter(
    "carewatch_notifications_total", "Provider requests by outcome", ["channel", "outcome"]
)
ESCALATION_STEPS = Counter(
    "carewatch_escalation_steps_total", "Escalation steps carried out", ["policy", "step"]
)
# Policies are data (imported per district / care profile) with any number of steps: the
# alert on "nobody acknowledged before the last step" reads this, not a step number.
ESCALATION_LAST_STEP = Counter(
    "carewatch_escalation_last_step_total",
    "Escalations that reached their policy's last step (once per round; repeats not counted)",
    ["policy"],
)
STAGE_LATENCY = Histogram(
    "carewatch_stage_latency_seconds",
    "Latency of one pipeline stage",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
E2E_LATENCY = Histogram(
    "carewatch_e2e_latency_seconds",
    "Device time of the alerting event to the provider request, first step of an alert",
    ["kind", "channel"],
    buckets=LATENCY_BUCKETS,
)


def serve_metrics(port: int, host: str | None = None) -> None:
    """Start the /metrics listener (port 0: disabled) on CAREWATCH_METRICS_HOST by default:
    loopback unless a deployment lets Prometheus scrape from another host."""
    if port:
        from carewatch.settings import get_settings

        start_http_server(port, addr=host or get_settings().metrics_host)


def observe_many(histogram: Histogram, amounts: Iterable[float]) -> None:
    """`histogram.observe(a)` for every amount, with one lock per bucket touched instead
    of two per amount: ingest observes a latency per message. Uses prometheus_client's
    per-bucket values (tests/test_metrics_observe_many.py checks it against observe)."""
    upper_bounds: list[float] = histogram._upper_bounds
    per_bucket: collections.Counter[int] = collections.Counter()
    total = 0.0
    for amount in amounts:
        per_bucket[bisect.bisect_left(upper_bounds, amount)] += 1
        total += amount
    if not per_bucket:
        return
    histogram._sum.inc(total)
    for bucket, n in per_bucket.items():
        histogram._buckets[bucket].inc(n)

"""Counted rejection of samples a streaming detector cannot use (the raw sample itself is
kept: ingest stored it in the telemetry table before publishing it)."""

from __future__ import annotations

from prometheus_client import Counter

REJECTED_SAMPLES = Counter(
    "carewatch_rules_rejected_samples_total",
    "Telemetry samples a detector could not use",
    ["detector", "reason"],
)


def count_reject(detector: str, reason: str) -> None:
    REJECTED_SAMPLES.labels(detector, reason).inc()

"""Notifier-only metrics (the shared ones live in carewatch.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

ACK_REJECTS = Counter(
    "carewatch_ack_rejects_total",
    "Ack link requests refused (malformed, bad_signature, expired, replay, transition)",
    ["reason"],
)
ACKS = Counter("carewatch_acks_total", "Ack link actions carried out", ["action"])
ALERT_CHANGE_REJECTS = Counter(
    "carewatch_notifier_rejects_total",
    "Alert changes the notifier could not act on, kept in dead_letters",
    ["reason"],
)
OUTBOX_OUTCOMES = Counter(
    "carewatch_outbox_outcomes_total",
    "Outbox decisions after a send attempt (sent, retry, failed); provider requests are"
    " counted by the adapters in carewatch_notifications_total",
    ["channel", "outcome"],
)
SMS_LOOKUPS = Counter(
    "carewatch_sms_resend_lookups_total",
    "Before resending an SMS whose earlier attempt may have been accepted, QuerySendDetails"
    " looked its OutId up: found (not sent again), not_found (sent), failed (for now: the"
    " resend waits for the next attempt), unavailable (the lookup cannot work: sent anyway,"
    " maybe twice)",
    ["result"],
)
OUTBOX_OVERDUE = Counter(
    "carewatch_outbox_overdue_retries_total",
    "Retries of alert messages past outbox_max_attempts, kept going because their alert is"
    " still open: a provider has been failing for minutes while an elder waits",
    ["channel"],
)
LATENCY_SKIPPED = Counter(
    "carewatch_e2e_latency_skipped_total",
    "First alert messages left out of carewatch_e2e_latency_seconds because the device's"
    " clock was off (ahead of the server, or behind by more than device_clock_max_skew_s)",
    ["kind", "reason"],
)
PROVIDER_CALLBACKS = Counter(
    "carewatch_provider_callbacks_total",
    "Items pushed by a provider (sms_report, voice_report, sms_up) and what became of them:"
    " recorded, moved_on, redial, acknowledge, duplicate, unmatched...; refused pushes as"
    " outcome forbidden (wrong secret) or bad_push (not the provider's format)",
    ["kind", "outcome"],
)
SMS_FAILOVERS = Counter(
    "carewatch_sms_failovers_total",
    "SMS the primary provider (Aliyun) refused or timed out on, sent by the secondary"
    " (Tencent Cloud): sent, failed; found: the primary had sent it after all (not sent"
    " again); waiting: it may have been sent and cannot be looked up yet",
    ["result"],
)

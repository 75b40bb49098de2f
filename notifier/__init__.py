"""Notifier: escalation policies, the outbox, channel adapters and the ack web app."""

"""Moved to carewatch.alert_outbox (the ack app and operator API write it too)."""

from carewatch.alert_outbox import AlertPublisher, for_source, write

__all__ = ["AlertPublisher", "for_source", "write"]

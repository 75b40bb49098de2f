"""Ingest: MQTT uplinks -> validate -> dedup -> telemetry store + events bus."""

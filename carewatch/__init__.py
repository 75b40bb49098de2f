"""Shared contracts of carewatch: message types, settings, topics, bus and database access."""

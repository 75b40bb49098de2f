"""Moved to harness/services.py (bench/ imports it too, and bench imports nothing from
tests/). These names stay for branches written against the old path; import from
harness.services."""

from harness.services import (
    ADMIN_DSN,
    Databases,
    Proc,
    await_until,
    free_port,
    start_mosquitto,
    start_redis,
    start_shipped_mosquitto,
    wait_port,
    wait_until,
)

__all__ = [
    "ADMIN_DSN",
    "Databases",
    "Proc",
    "await_until",
    "free_port",
    "start_mosquitto",
    "start_redis",
    "start_shipped_mosquitto",
    "wait_port",
    "wait_until",
]

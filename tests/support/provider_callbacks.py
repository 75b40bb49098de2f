"""The provider callbacks app of the notifier tests, served on a real socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from carewatch.settings import Settings
from harness.services import free_port
from notifier import provider_callbacks
from tests.support.ack import running_server
from tests.support.notifier import notifier_settings


@contextlib.asynccontextmanager
async def running_callbacks(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The provider callbacks app on settings.callbacks_port, ready once it answers."""
    base = f"http://127.0.0.1:{settings.callbacks_port}"
    async with (
        httpx.AsyncClient(base_url=base, timeout=10) as http,
        running_server(
            lambda stop: provider_callbacks.run(settings, stop),
            http,
            "/healthz",
            "provider callbacks app listening",
        ),
    ):
        yield http


def receipt_settings(settings: Settings, **overrides: Any) -> Settings:
    """Long steps, so that only a receipt can move an escalation on within a test."""
    values: dict[str, Any] = {
        "callbacks_port": free_port(),
        "escalation_wait_s": 120.0,
        "voice_redial_s": 0.1,
    }
    return notifier_settings(settings, **{**values, **overrides})

"""Every worker in one process: ingest, rules, notifier, ack server, provider callbacks
and operator API.

Small sites and the demo run this; larger ones run each worker as its own process
(`carewatch ingest`, `carewatch rules`, ...) with the same code and settings. The
workers are found by name in the CLI's table (carewatch.cli.WORKERS) and imported
when the command runs: the contracts package imports no worker.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, cast

from carewatch.cli import WORKERS
from carewatch.metrics import serve_metrics
from carewatch.settings import Settings

log = logging.getLogger(__name__)

Runner = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]
IN_ONE_PROCESS = (
    "ingest",
    "rules",
    "notifier",
    "ack-server",
    "provider-callbacks",
    "operator-api",
)


def _runner(name: str) -> Runner:
    module, _, attr = WORKERS[name][0].partition(":")
    return cast(Runner, getattr(importlib.import_module(module), attr))


async def run(settings: Settings, stop: asyncio.Event) -> None:
    # one /metrics listener for the whole process; the workers must not open their own
    serve_metrics(settings.metrics_port)
    inner = settings.model_copy(update={"metrics_port": 0})
    tasks = [asyncio.create_task(_runner(name)(inner, stop), name=name) for name in IN_ONE_PROCESS]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        if task.exception() is not None:
            log.error(
                "worker %s failed: %r; stopping the others", task.get_name(), task.exception()
            )
            stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

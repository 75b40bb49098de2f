"""Every worker in one process: ingest, rules, notifier, ack server, provider callbacks
and operator API.

Small sites and the demo run this; larger ones run each worker as its own process
(`carewatch ingest`, `carewatch rules`, ...) with the same code and settings.
"""

from __future__ import annotations

import asyncio
import logging

from carewatch.metrics import serve_metrics
from carewatch.settings import Settings

log = logging.getLogger(__name__)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    from ingest.worker import run as run_ingest
    from notifier.ack_app import run as run_ack
    from notifier.provider_callbacks import run as run_callbacks
    from notifier.worker import run as run_notifier
    from operator_api.app import run as run_operator_api
    from rules_engine.worker import run as run_rules

    # one /metrics listener for the whole process; the workers must not open their own
    serve_metrics(settings.metrics_port)
    inner = settings.model_copy(update={"metrics_port": 0})
    tasks = [
        asyncio.create_task(runner(inner, stop), name=name)
        for name, runner in (
            ("ingest", run_ingest),
            ("rules", run_rules),
            ("notifier", run_notifier),
            ("ack-server", run_ack),
            ("provider-callbacks", run_callbacks),
            ("operator-api", run_operator_api),
        )
    ]
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

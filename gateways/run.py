"""`carewatch gateway [watch-tcp] [iw-tcp] [ctwing] [onenet]`: one process, several gateways.

All gateways of a process share one MQTT connection (gateways.mqtt_link), one view of
the ledger (gateways.directory) and one connection budget. With no protocol named,
CAREWATCH_GATEWAY_SERVE says which to serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from functools import partial

from carewatch.db.pool import open_pool
from carewatch.metrics import serve_metrics
from carewatch.settings import Settings
from gateways.directory import Directory
from gateways.http_server import PushProcessor, create_app, serve
from gateways.mqtt_link import MqttLink
from gateways.sessions import IwSession, WatchSession
from gateways.tcp_server import ConnectionLimit, TcpGateway

log = logging.getLogger(__name__)

PROTOCOLS = ("watch-tcp", "iw-tcp", "ctwing", "onenet")


def chosen(settings: Settings, names: Sequence[str]) -> list[str]:
    picked = list(names) or [n.strip() for n in settings.gateway_serve.split(",") if n.strip()]
    unknown = [n for n in picked if n not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown gateway(s): {', '.join(unknown)}; known: {', '.join(PROTOCOLS)}")
    return picked


async def run(
    settings: Settings,
    stop: asyncio.Event,
    protocols: Sequence[str] = (),
    ready: asyncio.Event | None = None,
) -> None:
    names = chosen(settings, protocols)
    serve_metrics(settings.metrics_port)
    pool = await open_pool(settings.database_url, min_size=1, max_size=4)
    directory = Directory(pool)
    while not await directory.refresh():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        if stop.is_set():
            await pool.close()
            return
    link = MqttLink(settings)
    tasks = [
        asyncio.create_task(link.run(stop), name="gateway-mqtt"),
        asyncio.create_task(directory.keep_fresh(stop), name="gateway-directory"),
    ]
    servers: list[TcpGateway] = []
    processor: PushProcessor | None = None
    try:
        await link.wait_connected(10.0)
        limit = ConnectionLimit(settings.gateway_max_connections)
        if "watch-tcp" in names:
            servers.append(
                TcpGateway(
                    "watch3g",
                    settings.gateway_watch_port,
                    settings,
                    limit,
                    partial(WatchSession, settings, directory=directory, link=link),
                )
            )
        if "iw-tcp" in names:
            servers.append(
                TcpGateway(
                    "iw",
                    settings.gateway_iw_port,
                    settings,
                    limit,
                    partial(IwSession, settings, directory=directory, link=link),
                )
            )
        for server in servers:
            await server.start()
        if "ctwing" in names or "onenet" in names:
            processor = PushProcessor(pool, directory, link)
            tasks.append(asyncio.create_task(processor.run(), name="gateway-push"))
            tasks.append(
                asyncio.create_task(
                    serve(settings, create_app(settings, processor), stop), name="gateway-http"
                )
            )
        log.info("gateways started", extra={"gateways": names})
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for server in servers:
            await server.stop()
        if processor is not None:
            with contextlib.suppress(asyncio.QueueFull):
                processor.queue.put_nowait(None)  # after what was already accepted
            push_tasks = [t for t in tasks if t.get_name() == "gateway-push"]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*push_tasks), 5)
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)
        for task in tasks:
            task.cancel()
        await pool.close()
        log.info("gateways stopped")

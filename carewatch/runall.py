"""Every worker in one process: ingest, rules, notifier, ack server, provider callbacks
and operator API.

Small sites and the demo run this; larger ones run each worker as its own process
(`carewatch ingest`, `carewatch rules`, ...) with the same code and settings. The
workers are found by name in the CLI's table (carewatch.cli.WORKERS) and imported
when the command runs: the contracts package imports no worker.

Ingest's telemetry lane, the bulk of the CPU, runs in a child process that lowers its
own priority to CAREWATCH_BULK_LANE_NICE (10 by default), so that under overload the
operating system runs the alarm path (ingest's events lane, rules, notifier, all in this
process) first (docs/reliability.md "Alarms first under overload"). The child is part of
run-all: if it dies, run-all stops like for any other worker's failure, and it is
stopped (it drains and acknowledges what it took) when run-all stops. Its metrics are
not on run-all's /metrics. CAREWATCH_BULK_LANE_NICE=0 keeps both lanes in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import multiprocessing as mp
from collections.abc import Callable, Coroutine
from multiprocessing.process import BaseProcess
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


def _ingest(lanes: tuple[str, ...]) -> Runner:
    """ingest.worker.run for these lanes only."""
    run_ingest = cast(Callable[..., Coroutine[Any, Any, None]], _runner("ingest"))
    return functools.partial(run_ingest, lanes=lanes)


CHILD_STOP_S = 30.0  # ingest's shutdown grace and then some


def _telemetry_lane(settings: Settings, log_file: str | None) -> None:
    """The child's entry point: ingest's telemetry lane (it lowers its own priority)."""
    from carewatch.cli import run_until_signal
    from carewatch.logs import JsonFormatter, setup_logging

    setup_logging(settings.log_level, settings.log_json)
    if log_file is not None:  # the parent logs to a file (the demo): so does the child
        handler = logging.FileHandler(log_file)
        handler.setFormatter(JsonFormatter())
        logging.getLogger().handlers[:] = [handler]
    run_until_signal(_ingest(("telemetry",)), settings)


async def _exited(proc: BaseProcess) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(proc.sentinel, readable)
    try:
        await done
    finally:
        loop.remove_reader(proc.sentinel)


async def run_telemetry_lane(settings: Settings, stop: asyncio.Event) -> None:
    """Ingest's telemetry lane in a child process, for as long as `stop` is not set."""
    root = logging.getLogger()
    log_file = next(
        (h.baseFilename for h in root.handlers if isinstance(h, logging.FileHandler)), None
    )
    # spawn, not fork: a fresh interpreter, none of this process's loop, threads or sockets
    proc = mp.get_context("spawn").Process(
        target=_telemetry_lane, args=(settings, log_file), name="carewatch-ingest-telemetry"
    )
    proc.start()
    log.info("ingest's telemetry lane started in a child process", extra={"pid": proc.pid})
    exited = asyncio.ensure_future(_exited(proc))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            raise RuntimeError(f"ingest's telemetry lane exited with code {proc.exitcode}")
        proc.terminate()  # SIGTERM: it stops reading, flushes, acknowledges, exits
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), CHILD_STOP_S)
    finally:
        stopping.cancel()
        if proc.is_alive():
            proc.kill()
        exited.cancel()
        await asyncio.to_thread(proc.join, 5)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    # one /metrics listener for the whole process; the workers must not open their own
    serve_metrics(settings.metrics_port)
    inner = settings.model_copy(update={"metrics_port": 0})
    split = settings.bulk_lane_nice > 0
    ingest = _ingest(("events",) if split else ("events", "telemetry"))
    runners: list[tuple[str, Runner]] = [
        (name, ingest if name == "ingest" else _runner(name)) for name in IN_ONE_PROCESS
    ]
    if split:
        runners.append(("ingest-telemetry", run_telemetry_lane))
    tasks = [asyncio.create_task(runner(inner, stop), name=name) for name, runner in runners]
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

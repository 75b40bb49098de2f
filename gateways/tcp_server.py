"""The thin asyncio TCP layer of the watch gateways: connections, limits, timeouts.

Everything a watch says goes through a `Session` (gateways.sessions), which owns the
protocol: this module only reads bytes, feeds them to the session's splitter, writes
what the session answers and enforces the limits that keep a flood of garbage or of
half-open connections from hurting the gateway:

- at most `gateway_max_connections` connections per process (over all ports); one more
  is closed at once and counted;
- a connection must identify itself within `gateway_login_timeout_s` and is closed
  after `gateway_idle_timeout_s` of silence (half-open connections go away);
- a frame longer than `gateway_max_frame_bytes` is dropped (the splitter never buffers
  more), and a connection that sent only rejected input `MAX_BAD_FRAMES` times in a row
  is closed;
- any exception while handling one connection closes that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from carewatch.settings import Settings
from gateways.metrics import CONNECTIONS, REJECTS

log = logging.getLogger(__name__)

READ_SIZE = 4096
WRITE_TIMEOUT_S = 10.0
MAX_BAD_FRAMES = 20


class CloseConnection(Exception):
    """Raised by a session to end its connection (after counting why)."""


class Session(Protocol):
    protocol: str

    @property
    def logged_in(self) -> bool: ...

    async def data(self, chunk: bytes, received_ms: int) -> tuple[list[bytes], int]:
        """Handle what one read returned: (frames to send back, rejected inputs)."""
        ...

    async def closed(self) -> None: ...


class SessionFactory(Protocol):
    def __call__(self, writer: asyncio.StreamWriter) -> Session: ...


class ConnectionLimit:
    """One budget of connections shared by every TCP gateway of the process."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.open = 0


class TcpGateway:
    def __init__(
        self,
        protocol: str,
        port: int,
        settings: Settings,
        limit: ConnectionLimit,
        new_session: SessionFactory,
    ) -> None:
        self.protocol = protocol
        self.port = port
        self._settings = settings
        self._limit = limit
        self._new_session = new_session
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(
            self._handle, self._settings.gateway_host, self.port, limit=READ_SIZE * 4
        )
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("gateway listening", extra={"protocol": self.protocol, "port": bound})
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._limit.open >= self._limit.maximum:
            REJECTS.labels(self.protocol, "too_many_connections").inc()
            writer.close()
            return
        if task is not None:
            self._tasks.add(task)
        self._limit.open += 1
        CONNECTIONS.labels(self.protocol).inc()
        session = self._new_session(writer)
        try:
            await self._serve(reader, writer, session)
        except CloseConnection:
            pass
        except asyncio.CancelledError:
            pass  # the gateway is stopping: this connection ends with it
        except (ConnectionError, TimeoutError) as exc:
            log.debug("watch connection ended", extra={"error": str(exc)})
        except Exception:
            REJECTS.labels(self.protocol, "internal_error").inc()
            log.exception("watch connection failed", extra={"protocol": self.protocol})
        finally:
            self._limit.open -= 1
            CONNECTIONS.labels(self.protocol).dec()
            if task is not None:
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                await session.closed()
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: Session
    ) -> None:
        s = self._settings
        bad_in_a_row = 0
        while True:
            timeout = s.gateway_idle_timeout_s if session.logged_in else s.gateway_login_timeout_s
            try:
                chunk = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
            except TimeoutError:
                REJECTS.labels(self.protocol, "idle_timeout").inc()
                return
            if not chunk:
                return
            replies, rejected = await session.data(chunk, time.time_ns() // 1_000_000)
            if replies:
                writer.write(b"".join(replies))
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
                bad_in_a_row = 0
            bad_in_a_row = bad_in_a_row + rejected if rejected else 0
            if bad_in_a_row >= MAX_BAD_FRAMES:
                REJECTS.labels(self.protocol, "too_much_garbage").inc()
                return

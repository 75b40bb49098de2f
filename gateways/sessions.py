"""One connected watch: its protocol, its identity, its uplinks and downlinks.

A connection is bound to the first device id it uses and that the ledger knows
(devices.protocol/imei). From then on:

- a frame naming another id is refused and the connection closed (a watch logged in
  as A cannot speak for B);
- an id the ledger does not know is refused and the connection closed;
- uplinks are translated (gateways.translate) and published as the device
  (gateways.mqtt_link); an alarm is answered only after the broker has it;
- downlinks on the device's cmd topic become protocol commands on this connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from carewatch.logs import mask_phone
from carewatch.messages import DeviceCommand
from carewatch.settings import Settings
from gateways import iw, watch3g
from gateways.directory import Directory, GatewayDevice
from gateways.metrics import DOWNLINKS, FRAMES, REJECTS
from gateways.mqtt_link import MqttLink, PublishFailed
from gateways.tcp_server import CloseConnection
from gateways.translate import (
    Reading,
    device_ms,
    iw_alarm_reading,
    uplinks,
    watch_reading,
)

log = logging.getLogger(__name__)


class _Base:
    protocol = ""

    def __init__(
        self,
        settings: Settings,
        writer: asyncio.StreamWriter,
        directory: Directory,
        link: MqttLink,
    ) -> None:
        self._settings = settings
        self._writer = writer
        self._directory = directory
        self._link = link
        self.device: GatewayDevice | None = None
        # tells apart this connection's messages of one millisecond (translate.seq_for)
        self._counter = itertools.count(random.randrange(1 << 20))

    @property
    def logged_in(self) -> bool:
        return self.device is not None

    def _reject(self, reason: str, detail: str = "") -> None:
        REJECTS.labels(self.protocol, reason).inc()
        log.info(
            "gateway input rejected",
            extra={
                "protocol": self.protocol,
                "reason": reason,
                "detail": detail[:200],
                "device_id": self.device.device_id if self.device else None,
            },
        )

    async def _bind(self, imei: str) -> GatewayDevice:
        """Log the connection in as `imei`, or refuse it (CloseConnection)."""
        if self.device is not None:
            if imei != self.device.imei:
                self._reject("impersonation", f"logged in as {self.device.imei}, sent {imei}")
                raise CloseConnection
            return self.device
        device = await self._directory.find(self.protocol, imei)
        if device is None:
            self._reject("unknown_device", imei)
            raise CloseConnection
        self.device = device
        previous = self._link.handlers.get(device.device_id)
        self._link.handlers[device.device_id] = self._on_command
        if previous is None:
            log.info(
                "watch logged in", extra={"protocol": self.protocol, "device_id": device.device_id}
            )
        return device

    async def _publish(self, reading: Reading, time_ms: int, *, heartbeat: bool = False) -> None:
        assert self.device is not None
        out = uplinks(
            reading, time_ms=time_ms, discriminator=next(self._counter), always_telemetry=heartbeat
        )
        if out:
            await self._link.publish(self.protocol, self.device.device_id, out)

    async def closed(self) -> None:
        if self.device is not None and self._link.handlers.get(self.device.device_id) == (
            self._on_command
        ):
            del self._link.handlers[self.device.device_id]

    async def _on_command(self, command: DeviceCommand) -> None:
        raise NotImplementedError

    def _send(self, frames: list[bytes]) -> None:
        if frames and not self._writer.is_closing():
            self._writer.write(b"".join(frames))


class WatchSession(_Base):
    """The 3G/4G watch text protocol (gateways.watch3g)."""

    protocol = "watch3g"

    def __init__(
        self,
        settings: Settings,
        writer: asyncio.StreamWriter,
        directory: Directory,
        link: MqttLink,
    ) -> None:
        super().__init__(settings, writer, directory, link)
        self._splitter = watch3g.FrameSplitter(settings.gateway_max_frame_bytes)
        self._maker = "3G"
        self._contacts_sent = False

    async def data(self, chunk: bytes, received_ms: int) -> tuple[list[bytes], int]:
        frames, rejects = self._splitter.feed(chunk)
        for reason in rejects:
            self._reject(reason)
        rejected = len(rejects)
        out: list[bytes] = []
        for raw in frames:
            try:
                frame = watch3g.parse_frame(raw)
                decoded = watch3g.decode(frame)
            except watch3g.FrameError as exc:
                self._reject(exc.reason, exc.detail)
                rejected += 1
                continue
            await self._bind(frame.device_id)
            self._maker = frame.maker
            try:
                out += await self._handle(frame, decoded, received_ms)
            except PublishFailed as exc:
                # not answered: the watch sends an alarm again when it gets no answer
                self._reject("broker_unavailable", str(exc))
        return out, rejected

    async def _handle(
        self, frame: watch3g.WatchFrame, decoded: watch3g.Decoded, received_ms: int
    ) -> list[bytes]:
        FRAMES.labels(self.protocol, type(decoded).__name__.lower()).inc()
        out: list[bytes] = []
        if isinstance(decoded, watch3g.Link):
            reading = Reading(steps=decoded.steps, battery=decoded.battery)
            await self._publish(reading, received_ms, heartbeat=True)
            if not self._contacts_sent:
                self._contacts_sent = True
                out += await self._contact_frames()
        elif isinstance(decoded, watch3g.Position):
            reading = watch_reading(
                decoded.flags,
                lat=decoded.lat,
                lon=decoded.lon,
                battery=decoded.battery,
                steps=decoded.steps,
                alarm_frame=decoded.alarm,
            )
            await self._publish(reading, device_ms(decoded.device_time, received_ms))
            if reading.events:  # an alert opens: ask for a fresh position at once
                out.append(self._frame(watch3g.locate_now_content()))
                DOWNLINKS.labels(self.protocol, "CR").inc()
        elif isinstance(decoded, watch3g.Vitals):
            reading = Reading(hr=decoded.hr, temp=decoded.temp)
            await self._publish(reading, received_ms)
        answer = watch3g.answer_for(frame)
        if answer is not None:
            out.insert(0, watch3g.reply(frame, answer))
        return out

    def _frame(self, content: str) -> bytes:
        assert self.device is not None
        return watch3g.build_frame(self._maker, self.device.imei, content.encode())

    async def _contact_frames(self) -> list[bytes]:
        """SOS1..3 and the phonebook from the elder's family contacts in the ledger."""
        assert self.device is not None
        contacts = await self._directory.contacts(self.device.elder_id)
        if not contacts:
            return []
        contents = watch3g.sos_number_contents([phone for _, phone in contacts])
        contents += watch3g.phonebook_contents([(phone, name) for name, phone in contacts])
        for content in contents:
            DOWNLINKS.labels(self.protocol, content.split(",", 1)[0]).inc()
        log.info(
            "watch given SOS numbers",
            extra={
                "device_id": self.device.device_id,
                "numbers": [mask_phone(phone) for _, phone in contacts[:3]],
            },
        )
        return [self._frame(c) for c in contents]

    async def _on_command(self, command: DeviceCommand) -> None:
        self._send([self._frame(watch3g.message_content(command.text))])
        DOWNLINKS.labels(self.protocol, "MESSAGE").inc()


class IwSession(_Base):
    """The IW watch protocol (gateways.iw)."""

    protocol = "iw"

    def __init__(
        self,
        settings: Settings,
        writer: asyncio.StreamWriter,
        directory: Directory,
        link: MqttLink,
    ) -> None:
        super().__init__(settings, writer, directory, link)
        self._splitter = iw.IwSplitter(settings.gateway_max_frame_bytes)
        offset = datetime.now(ZoneInfo(settings.timezone)).utcoffset()
        self._tz_hours = int(offset.total_seconds() // 3600) if offset else 0

    async def data(self, chunk: bytes, received_ms: int) -> tuple[list[bytes], int]:
        frames, rejects = self._splitter.feed(chunk)
        for reason in rejects:
            self._reject(reason)
        rejected = len(rejects)
        out: list[bytes] = []
        for raw in frames:
            try:
                frame = iw.parse_frame(raw)
                decoded = iw.decode(frame)
            except watch3g.FrameError as exc:
                self._reject(exc.reason, exc.detail)
                rejected += 1
                continue
            if isinstance(decoded, iw.Login):
                await self._bind(decoded.imei)
            elif self.device is None:
                self._reject("not_logged_in", frame.code)
                rejected += 1
                continue
            try:
                out += await self._handle(frame, decoded, received_ms)
            except PublishFailed as exc:
                self._reject("broker_unavailable", str(exc))
        return out, rejected

    async def _handle(
        self, frame: iw.IwFrame, decoded: iw.IwDecoded, received_ms: int
    ) -> list[bytes]:
        FRAMES.labels(self.protocol, frame.code).inc()
        if isinstance(decoded, iw.IwPosition):
            reading = iw_alarm_reading(
                decoded.alarm, lat=decoded.lat, lon=decoded.lon, battery=decoded.battery
            )
            await self._publish(reading, device_ms(decoded.device_time, received_ms))
        elif isinstance(decoded, iw.Heartbeat | iw.CellPosition):
            battery = decoded.battery if isinstance(decoded, iw.Heartbeat) else None
            steps = decoded.steps if isinstance(decoded, iw.Heartbeat) else None
            await self._publish(Reading(battery=battery, steps=steps), received_ms, heartbeat=True)
        elif isinstance(decoded, iw.HeartRate):
            await self._publish(Reading(hr=decoded.hr), received_ms)
        return [iw.reply_for(frame, datetime.now(UTC), self._tz_hours)]

    async def _on_command(self, command: DeviceCommand) -> None:
        # The IW text downlink differs between makers; not sent (docs/gateways.md).
        DOWNLINKS.labels(self.protocol, "unsupported").inc()

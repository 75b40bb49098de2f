"""Devices and platforms that speak the gateways' protocols, as the real ones do.

- `Watch3g`: a 3G/4G watch over TCP (frames `[3G*id*len*...]`, answers to LK/AL
  expected, downlinks MESSAGE/CR/SOS1../PHB read back);
- `IwWatch`: an IW watch (`IWAP00<imei>#` login, AP01/AP03/AP10/APHT);
- `CtwingPusher`: the CTWing AEP subscription push, retried like the platform does
  (a few attempts with growing waits while the answer is not 200);
- `OneNetPusher`: the OneNET HTTP push, signed with the token (msg_signature).

Used by `carewatch simulate watch3g|iw|ctwing|onenet`, the tests and bench/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from carewatch.settings import Settings
from gateways import iw, watch3g
from gateways.platforms import onenet_signature

# ---------------------------------------------------------------------------------
# Watches
# ---------------------------------------------------------------------------------

SOS_BIT = 1 << 16
FALL_BIT = 1 << 21
WORN_BIT = 1 << 3


def watch_position_content(
    keyword: str,
    *,
    when: datetime,
    lat: float | None,
    lon: float | None,
    battery: int = 80,
    steps: int = 1200,
    status: int = WORN_BIT,
) -> str:
    """A UD/AL content as watches send it; no fix (lat None) gives 'V' and zeros."""
    fix = "A" if lat is not None and lon is not None else "V"
    lat_s = f"{abs(lat):.6f}" if lat is not None else "0.000000"
    lon_s = f"{abs(lon):.6f}" if lon is not None else "0.000000"
    ns = "S" if lat is not None and lat < 0 else "N"
    ew = "W" if lon is not None and lon < 0 else "E"
    return (
        f"{keyword},{when:%d%m%y},{when:%H%M%S},{fix},{lat_s},{ns},{lon_s},{ew},0.00,0.0,0.0,"
        f"6,100,{battery},{steps},0,{status:08X},1,1,460,0,9520,3671,60,0"
    )


@dataclass
class Watch3g:
    """One 3G/4G watch connection."""

    device_id: str
    host: str
    port: int
    maker: str = "3G"
    received: list[watch3g.WatchFrame] = field(default_factory=list)
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _splitter: watch3g.FrameSplitter = field(default_factory=watch3g.FrameSplitter)

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()

    async def send_raw(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    async def send(self, content: str, device_id: str | None = None) -> None:
        await self.send_raw(
            watch3g.build_frame(self.maker, device_id or self.device_id, content.encode())
        )

    async def heartbeat(self, battery: int = 90) -> None:
        await self.send(f"LK,1200,0,{battery}")

    async def alarm(self, status: int, lat: float | None = None, lon: float | None = None) -> None:
        when = datetime.now(UTC)
        await self.send(watch_position_content("AL", when=when, lat=lat, lon=lon, status=status))

    async def position(self, lat: float, lon: float) -> None:
        when = datetime.now(UTC)
        await self.send(watch_position_content("UD", when=when, lat=lat, lon=lon))

    async def wait_for(self, keyword: str, timeout: float = 10.0) -> watch3g.WatchFrame:
        """The first received frame with `keyword` (reading more as needed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for frame in self.received:
                if frame.keyword == keyword:
                    self.received.remove(frame)
                    return frame
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {keyword} frame within {timeout}s")
            await self._read(left)

    async def _read(self, timeout: float) -> None:
        assert self._reader is not None
        chunk = await asyncio.wait_for(self._reader.read(4096), timeout)
        if not chunk:
            raise ConnectionError("the gateway closed the connection")
        frames, _ = self._splitter.feed(chunk)
        self.received += [watch3g.parse_frame(f) for f in frames]

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        """True once the gateway has closed this connection."""
        assert self._reader is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                chunk = await asyncio.wait_for(self._reader.read(4096), deadline - loop.time())
            except TimeoutError:
                return False
            except ConnectionError:
                return True
            if not chunk:
                return True
        return False


@dataclass
class IwWatch:
    """One IW watch connection."""

    imei: str
    host: str
    port: int
    received: list[bytes] = field(default_factory=list)
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _buf: bytes = b""

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()

    async def send(self, frame: bytes) -> None:
        assert self._writer is not None
        self._writer.write(frame)
        await self._writer.drain()

    async def login(self) -> bytes:
        await self.send(iw.build("AP00", self.imei))
        return await self.wait_for(b"IWBP00")

    def position_body(self, when: datetime, lat: float, lon: float, battery: int = 80) -> str:
        lat_d, lon_d = int(abs(lat)), int(abs(lon))
        lat_m, lon_m = (abs(lat) - lat_d) * 60, (abs(lon) - lon_d) * 60
        return (
            f"{when:%y%m%d}A{lat_d:02d}{lat_m:07.4f}{'S' if lat < 0 else 'N'}"
            f"{lon_d:03d}{lon_m:07.4f}{'W' if lon < 0 else 'E'}000.0{when:%H%M%S}000.00"
            f"060009{battery:03d}00102"
        )

    async def alarm(self, code: str, lat: float = 29.5585, lon: float = 106.5625) -> bytes:
        body = self.position_body(datetime.now(UTC), lat, lon)
        await self.send(iw.build("AP10", f"{body},460,0,9520,3671,{code},zh-cn,00"))
        return await self.wait_for(b"IWBP10")

    async def heartbeat(self, battery: int = 80, steps: int = 1200) -> bytes:
        await self.send(iw.build("AP03", f",060009{battery:03d}00102,{steps},0"))
        return await self.wait_for(b"IWBP03")

    async def wait_for(self, prefix: bytes, timeout: float = 10.0) -> bytes:
        assert self._reader is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for frame in self.received:
                if frame.startswith(prefix):
                    self.received.remove(frame)
                    return frame
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {prefix!r} within {timeout}s")
            chunk = await asyncio.wait_for(self._reader.read(4096), left)
            if not chunk:
                raise ConnectionError("the gateway closed the connection")
            self._buf += chunk
            *frames, self._buf = self._buf.split(b"#")
            self.received += frames


# ---------------------------------------------------------------------------------
# Platforms
# ---------------------------------------------------------------------------------


def ctwing_data_report(
    imei: str,
    product: str,
    fields: dict[str, object],
    *,
    packet_sn: int,
    timestamp_ms: int | None = None,
    app_data: bool = False,
) -> bytes:
    """A dataReport as CTWing pushes it (payload as JSON, or base64 APPdata)."""
    payload: dict[str, object] = {"serviceId": "report", **fields}
    if app_data:
        payload = {"APPdata": base64.b64encode(json.dumps(fields).encode()).decode()}
    return json.dumps(
        {
            "messageType": "dataReport",
            "tenantId": "2000000001",
            "productId": product,
            "deviceId": f"{product}{imei}",
            "IMEI": imei,
            "IMSI": "undefined",
            "protocol": "lwm2m",
            "topic": "v1/up/ad",
            "timestamp": timestamp_ms or time.time_ns() // 1_000_000,
            "upPacketSN": packet_sn,
            "upDataSN": -1,
            "serviceId": "",
            "payload": payload,
        }
    ).encode()


@dataclass
class CtwingPusher:
    """Pushes like CTWing: a push not answered 200 is retried a few times, waiting longer."""

    url: str
    attempts: int = 3
    first_wait_s: float = 0.5
    timeout_s: float = 5.0

    async def push(self, body: bytes) -> int:
        """Returns the last HTTP status (or 0 when nothing answered)."""
        status = 0
        wait = self.first_wait_s
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for attempt in range(self.attempts):
                try:
                    response = await client.post(
                        self.url, content=body, headers={"Content-Type": "application/json"}
                    )
                    status = response.status_code
                except httpx.HTTPError:
                    status = 0
                if status == 200 or attempt == self.attempts - 1:
                    return status
                await asyncio.sleep(wait)  # the platform's retry back-off
                wait *= 2
        return status


@dataclass
class OneNetPusher:
    url: str
    token: str

    def body(self, msg: object, *, signature: str | None = None) -> bytes:
        msg_text = json.dumps(msg, separators=(",", ":"))
        nonce = secrets.token_hex(4)
        sig = signature if signature is not None else onenet_signature(self.token, nonce, msg_text)
        return f'{{"msg":{msg_text},"msg_signature":{json.dumps(sig)},"nonce":"{nonce}"}}'.encode()

    async def push(self, msg: object, *, signature: str | None = None) -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.post(
                self.url,
                content=self.body(msg, signature=signature),
                headers={"Content-Type": "application/json"},
            )
            return response.status_code

    async def verify(self, token: str | None = None) -> httpx.Response:
        """The URL verification GET OneNET sends when the push is configured."""
        msg, nonce = secrets.token_hex(8), secrets.token_hex(4)
        signature = onenet_signature(token or self.token, nonce, msg)
        async with httpx.AsyncClient(timeout=5) as client:
            return await client.get(
                self.url, params={"msg": msg, "nonce": nonce, "signature": signature}
            )


def onenet_datapoint(
    dev_id: str, ds_id: str, value: object, at_ms: int | None = None
) -> dict[str, object]:
    return {
        "type": 1,
        "dev_id": int(dev_id) if dev_id.isdigit() else dev_id,
        "ds_id": ds_id,
        "at": at_ms or time.time_ns() // 1_000_000,
        "value": value,
    }


# ---------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------


def _fields(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name] = int(value) if value.lstrip("-").isdigit() else value
    return out


async def _watch(settings: Settings, args: argparse.Namespace) -> int:
    if args.sim_cmd == "watch3g":
        watch = Watch3g(args.imei, args.host, args.port or settings.gateway_watch_port)
        await watch.connect()
        await watch.heartbeat()
        print("LK answered:", (await watch.wait_for("LK")).content.decode())
        if args.send == "sos":
            await watch.alarm(SOS_BIT)
        elif args.send == "fall":
            await watch.alarm(FALL_BIT, 29.5585, 106.5625)
        elif args.send == "position":
            await watch.position(29.5585, 106.5625)
        with contextlib.suppress(TimeoutError, ConnectionError):
            loop = asyncio.get_running_loop()
            end = loop.time() + args.listen
            while loop.time() < end:
                await watch._read(end - loop.time())
        for frame in watch.received:
            text = watch3g.decode_message_text(frame)
            print("downlink:", frame.keyword, text if text is not None else ",".join(frame.args))
        await watch.close()
        return 0
    iw_watch = IwWatch(args.imei, args.host, args.port or settings.gateway_iw_port)
    await iw_watch.connect()
    print("login answered:", (await iw_watch.login()).decode())
    if args.send == "sos":
        print("answered:", (await iw_watch.alarm("01")).decode())
    elif args.send == "fall":
        print("answered:", (await iw_watch.alarm("05")).decode())
    else:
        print("answered:", (await iw_watch.heartbeat()).decode())
    await iw_watch.close()
    return 0


async def _platform(settings: Settings, args: argparse.Namespace) -> int:
    base = f"http://127.0.0.1:{settings.gateway_http_port}"
    fields = _fields(args.field)
    if args.sim_cmd == "ctwing":
        pusher = CtwingPusher(args.url or f"{base}/ctwing")
        body = ctwing_data_report(args.imei, "product", fields, packet_sn=int(time.time()) % 65536)
        print("CTWing push answered", await pusher.push(body))
        return 0
    if settings.onenet_token is None:
        print("set CAREWATCH_ONENET_TOKEN: the OneNET push is signed with it")
        return 2
    one = OneNetPusher(args.url or f"{base}/onenet", settings.onenet_token.get_secret_value())
    for name, value in fields.items():
        print("OneNET push answered", await one.push(onenet_datapoint(args.imei, name, value)))
    return 0


def cli_main(settings: Settings, args: argparse.Namespace) -> int:
    runner = _watch if args.sim_cmd in ("watch3g", "iw") else _platform
    return asyncio.run(runner(settings, args))

"""Codec of the "IW" watch protocol: `IW` + 4-character code + body + `#`.

Pure, like gateways.watch3g. Device -> server codes start with AP, the server's
answers with BP::

    IWAP00353456789012345#                         login with the IMEI
      -> IWBP00,20240524061830,8#                  server time (UTC) and time zone
    IWAP01080524A2232.9806N11404.9355E000.1061830323.8706000908000102,460,0,9520,3671#
      -> IWBP01#                                   GPS position
    IWAP02,zh_cn,0,7,460,0,9520|3671|13,...#      cell / Wi-Fi position
    IWAP03,06000908000102,5555,30#                 heartbeat: status, steps, roll-overs
    IWAP10080524A2232.9806N...,460,0,9520,3671,01,zh-cn,00,...#   alarm + position
    IWAPHT,60,130,85#                              heart rate, blood pressure

The position block is fixed-width: date yymmdd, validity A/V, latitude ddmm.mmmm N/S,
longitude dddmm.mmmm E/W, speed ddd.d km/h, time hhmmss, course (6), then the status
block: GSM signal (3), satellites (3), battery percent (3), a reserved digit,
fortification (2) and working mode (2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateways.watch3g import FrameError


@dataclass
class IwSplitter:
    """Cuts a TCP byte stream into `IW...` frames ending in `#` (without the `#`)."""

    max_frame: int = 4096
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> tuple[list[bytes], list[str]]:
        frames: list[bytes] = []
        rejects: list[str] = []
        buf = self._buf
        buf += data
        while buf:
            start = buf.find(b"IW")
            if start < 0:
                # keep a trailing 'I': it may be the start of the next frame
                keep = 1 if buf.endswith(b"I") else 0
                if len(buf) > keep:
                    rejects.append("garbage")
                    del buf[: len(buf) - keep]
                break
            if start > 0:
                rejects.append("garbage")
                del buf[:start]
            end = buf.find(b"#")
            restart = buf.find(b"IW", 2, end if end >= 0 else len(buf))
            if restart > 0 and (end < 0 or restart < end):
                rejects.append("truncated")
                del buf[:restart]
                continue
            if end < 0:
                if len(buf) > self.max_frame:
                    rejects.append("oversized")
                    buf.clear()
                break
            if end > self.max_frame:
                rejects.append("oversized")
            else:
                frames.append(bytes(buf[:end]))
            del buf[: end + 1]
        return frames, rejects

    @property
    def buffered(self) -> int:
        return len(self._buf)


@dataclass(frozen=True, slots=True)
class IwFrame:
    code: str  # "AP00", "AP10", "APHT", ...
    body: str  # after the code, without a leading comma


_CODE = re.compile(r"[A-Z]{2}[0-9A-Z]{2}\Z")


def parse_frame(raw: bytes) -> IwFrame:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("not_ascii", f"{raw[:32]!r}") from None
    if not text.startswith("IW") or len(text) < 6 or not _CODE.match(text[2:6]):
        raise FrameError("bad_header", f"{text[:16]!r}")
    body = text[6:]
    return IwFrame(text[2:6], body[1:] if body.startswith(",") else body)


@dataclass(frozen=True, slots=True)
class Login:
    imei: str


@dataclass(frozen=True, slots=True)
class IwPosition:
    """AP01 (position) and AP10 (alarm: `alarm` is the decoded code, or None)."""

    device_time: datetime | None
    valid: bool
    lat: float | None
    lon: float | None
    speed_kmh: float
    battery: int | None
    alarm_code: str | None
    alarm: str | None


@dataclass(frozen=True, slots=True)
class CellPosition:
    """AP02: cell towers and Wi-Fi only; carewatch has no cell database, so no position."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    battery: int | None
    steps: int | None


@dataclass(frozen=True, slots=True)
class HeartRate:
    hr: int | None
    systolic: int | None
    diastolic: int | None


@dataclass(frozen=True, slots=True)
class OtherIw:
    code: str


IwDecoded = Login | IwPosition | CellPosition | Heartbeat | HeartRate | OtherIw

# AP10 alarm codes as the public decoders and device simulators use them.
ALARM_CODES: dict[str, str] = {
    "00": "none",  # an address request without an alarm
    "01": "sos",
    "02": "low_battery",
    "03": "strap_removed",
    "05": "fall",
    "06": "fall",
}

_IMEI = re.compile(r"[0-9]{10,17}\Z")
_POSITION = re.compile(
    r"(\d{2})(\d{2})(\d{2})([AV])"  # yymmdd, validity
    r"(\d{2})(\d{2}\.\d+)([NS])"  # latitude ddmm.mmmm
    r"(\d{3})(\d{2}\.\d+)([EW])"  # longitude dddmm.mmmm
    r"(\d{3}\.\d)"  # speed km/h
    r"(\d{2})(\d{2})(\d{2})"  # hhmmss
    r"([\d.]{6})"  # course
    r"(\d{3})(\d{3})(\d{3})(\d)(\d{2})(\d{2})"  # gsm, satellites, battery, -, arm, mode
    r"(?:,(.*))?\Z"
)
_STATUS = re.compile(r"(\d{3})(\d{3})(\d{3})(\d)(\d{2})(\d{2})\Z")


def _percent(text: str) -> int | None:
    value = int(text)
    return value if value <= 100 else None


def _position(frame: IwFrame) -> IwPosition:
    m = _POSITION.match(frame.body)
    if m is None:
        raise FrameError("bad_position", f"{frame.code} body {frame.body[:60]!r}")
    g = m.groups()
    try:
        when: datetime | None = datetime(
            2000 + int(g[0]), int(g[1]), int(g[2]), int(g[11]), int(g[12]), int(g[13]), tzinfo=UTC
        )
    except ValueError:
        when = None
    lat = int(g[4]) + float(g[5]) / 60
    lon = int(g[7]) + float(g[8]) / 60
    lat = -lat if g[6] == "S" else lat
    lon = -lon if g[9] == "W" else lon
    valid = g[3] == "A" and abs(lat) <= 90 and abs(lon) <= 180 and (lat, lon) != (0, 0)
    alarm_code: str | None = None
    if frame.code == "AP10":
        rest = (g[21] or "").split(",")
        alarm_code = rest[4] if len(rest) > 4 else None
    return IwPosition(
        device_time=when,
        valid=valid,
        lat=round(lat, 6) if valid else None,
        lon=round(lon, 6) if valid else None,
        speed_kmh=float(g[10]),
        battery=_percent(g[17]),
        alarm_code=alarm_code,
        alarm=ALARM_CODES.get(alarm_code, "unknown") if alarm_code is not None else None,
    )


def _ints(body: str) -> list[int | None]:
    return [int(x) if x.strip().isdigit() else None for x in body.split(",")]


def decode(frame: IwFrame) -> IwDecoded:
    code = frame.code
    if code == "AP00":
        imei = frame.body.split(",", 1)[0]
        if not _IMEI.match(imei):
            raise FrameError("bad_login", f"IMEI {imei[:24]!r}")
        return Login(imei)
    if code in ("AP01", "AP10"):
        return _position(frame)
    if code == "AP02":
        return CellPosition()
    if code == "AP03":
        parts = frame.body.split(",")
        status = _STATUS.match(parts[0]) if parts else None
        if status is None:
            raise FrameError("bad_heartbeat", f"status {frame.body[:30]!r}")
        steps = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        return Heartbeat(battery=_percent(status.group(3)), steps=steps)
    if code == "APHT":
        values = [*_ints(frame.body), None, None, None]
        return HeartRate(hr=values[0], systolic=values[1], diastolic=values[2])
    return OtherIw(code)


def reply_for(frame: IwFrame, now: datetime, tz_hours: int) -> bytes:
    """The server's answer: IWBP00 with the time for a login, IWBPxx# otherwise."""
    answer = "BP" + frame.code[2:]
    if frame.code == "AP00":
        return f"IW{answer},{now.astimezone(UTC):%Y%m%d%H%M%S},{tz_hours}#".encode()
    return f"IW{answer}#".encode()


def build(code: str, body: str = "") -> bytes:
    """A device frame (for simulators and tests)."""
    return f"IW{code}{body}#".encode()

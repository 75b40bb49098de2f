"""Codec of the 3G/4G elder-watch text protocol: bytes in, typed frames out, and back.

Pure: no sockets, no clock (the receive time is passed in). The TCP server
(gateways.tcp_server) feeds whatever each read returned to a `FrameSplitter` and hands
every complete frame to `parse_frame` and `decode`.

A frame, as the watches send it::

    [3G*8800000015*0008*LK,0,95]
    [ZJ*014111001332708*0075*0064*AL,040418,052156,A,...]
     |  |               |    |    content (length hex bytes; binary parts escaped)
     |  |               |    content length, 4 hex digits
     |  |               optional 4-hex index (some makers number their frames)
     |  device id: 10 digits or the IMEI
     maker: 3G, SG, CS, ZJ, ...

Inside a frame, binary payloads (voice, pictures) escape the five bytes the framing
uses with 0x7D: `}`=7D 01, `[`=7D 02, `]`=7D 03, `,`=7D 04, `*`=7D 05. So an unescaped
`]` always ends a frame; a frame may arrive across several reads and a read may hold
several frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

# ---------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------

ESCAPE = 0x7D
_UNESCAPE = {0x01: ord("}"), 0x02: ord("["), 0x03: ord("]"), 0x04: ord(","), 0x05: ord("*")}
_ESCAPE = {v: k for k, v in _UNESCAPE.items()}


class FrameError(ValueError):
    """A frame that cannot be taken apart; `reason` is the counted label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def unescape(raw: bytes) -> bytes:
    """Undo the 0x7D escaping; raises FrameError on an escape byte not followed by 1..5."""
    if ESCAPE not in raw:
        return raw
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        if b == ESCAPE:
            nxt = raw[i + 1] if i + 1 < n else None
            if nxt not in _UNESCAPE:
                raise FrameError("bad_escape", f"0x7D followed by {nxt!r} at byte {i}")
            out.append(_UNESCAPE[nxt])
            i += 2
        else:
            out.append(b)
            i += 1
    return bytes(out)


def escape(payload: bytes) -> bytes:
    """Escape a binary payload for the inside of a frame."""
    out = bytearray()
    for b in payload:
        if b in _ESCAPE:
            out += bytes((ESCAPE, _ESCAPE[b]))
        else:
            out.append(b)
    return bytes(out)


@dataclass
class FrameSplitter:
    """Cuts a TCP byte stream into frames (still escaped, brackets stripped).

    `feed` returns the complete frames so far and the rejections met on the way
    (bytes outside any frame, a frame longer than `max_frame` bytes). The buffer never
    holds more than `max_frame` bytes, whatever a peer sends.
    """

    max_frame: int = 8192
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> tuple[list[bytes], list[str]]:
        frames: list[bytes] = []
        rejects: list[str] = []
        buf = self._buf
        buf += data
        while buf:
            start = buf.find(b"[")
            if start < 0:
                rejects.append("garbage")
                buf.clear()
                break
            if start > 0:
                rejects.append("garbage")
                del buf[:start]
            end = buf.find(b"]", 1)
            # A raw '[' cannot occur inside a frame (it is escaped): one before the end
            # starts a new frame, and what came before it was cut off.
            restart = buf.find(b"[", 1, end if end >= 0 else len(buf))
            if restart > 0:
                rejects.append("truncated")
                del buf[:restart]
                continue
            if end < 0:
                if len(buf) > self.max_frame:
                    rejects.append("oversized")
                    buf.clear()
                break
            if end + 1 > self.max_frame:
                rejects.append("oversized")
            else:
                frames.append(bytes(buf[1:end]))
            del buf[: end + 1]
        return frames, rejects

    @property
    def buffered(self) -> int:
        return len(self._buf)


# ---------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------

_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}\Z")
_MAKER = re.compile(rb"[A-Za-z0-9]{2}\Z")
_DEVICE = re.compile(rb"[0-9A-Za-z]{1,20}\Z")


@dataclass(frozen=True, slots=True)
class WatchFrame:
    maker: str
    device_id: str
    index: str | None  # the 4-hex frame index, echoed in replies, when the maker uses one
    keyword: str  # "LK", "UD_LTE", "AL", "heart", ... (as sent)
    args: tuple[str, ...]  # the comma-separated fields after the keyword (text frames)
    content: bytes  # the unescaped content, keyword included
    length_ok: bool  # the declared length matched the content (many watches get it wrong)


def parse_frame(inner: bytes) -> WatchFrame:
    """One frame without its brackets -> WatchFrame; raises FrameError."""
    parts = inner.split(b"*", 3)
    if len(parts) < 4:
        raise FrameError("bad_header", "fewer than four '*'-separated fields")
    maker, device, third, rest = parts
    if not _MAKER.match(maker):
        raise FrameError("bad_header", f"maker {maker[:8]!r}")
    if not _DEVICE.match(device):
        raise FrameError("bad_header", f"device id {device[:24]!r}")
    index: bytes | None = None
    if _HEX4.match(third) and len(rest) >= 5 and rest[4:5] == b"*" and _HEX4.match(rest[:4]):
        index, length, content = third, rest[:4], rest[5:]
    elif _HEX4.match(third):
        length, content = third, rest
    else:
        raise FrameError("bad_header", f"length {third[:8]!r} is not 4 hex digits")
    content = unescape(content)
    keyword_end = content.find(b",")
    raw_keyword = content if keyword_end < 0 else content[:keyword_end]
    try:
        keyword = raw_keyword.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("bad_keyword", f"{raw_keyword[:16]!r}") from None
    if not keyword or not keyword.replace("_", "").isalnum():
        raise FrameError("bad_keyword", f"{raw_keyword[:16]!r}")
    args: tuple[str, ...] = ()
    if keyword_end >= 0:
        args = tuple(content[keyword_end + 1 :].decode("latin-1").split(","))
    return WatchFrame(
        maker=maker.decode(),
        device_id=device.decode(),
        index=index.decode() if index is not None else None,
        keyword=keyword,
        args=args,
        content=content,
        length_ok=int(length, 16) == len(content),
    )


def build_frame(maker: str, device_id: str, content: bytes, index: str | None = None) -> bytes:
    """A frame to send; `content` is the raw content (escaped here)."""
    body = escape(content)
    head = f"[{maker}*{device_id}*" + (f"{index}*" if index is not None else "")
    return head.encode() + f"{len(body):04X}*".encode() + body + b"]"


def reply(frame: WatchFrame, content: str) -> bytes:
    """The server's answer to `frame` (same maker, id and index)."""
    return build_frame(frame.maker, frame.device_id, content.encode(), frame.index)


# ---------------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------------

# Status bits of UD/AL positions. High half: alarms (an event now); low half: states.
ALARM_BITS: dict[int, str] = {
    0: "low_battery",  # state
    1: "geofence_exit",  # state
    2: "geofence_enter",  # state
    3: "worn",  # state: the strap is on
    14: "power_cut",
    16: "sos",
    17: "low_battery",
    18: "geofence_exit",
    19: "geofence_enter",
    20: "strap_removed",
    21: "fall",
    22: "fall",
}


def status_flags(status: int) -> frozenset[str]:
    """Every flag of a status word that this gateway knows (see ALARM_BITS)."""
    return frozenset(name for bit, name in ALARM_BITS.items() if status >> bit & 1)


@dataclass(frozen=True, slots=True)
class Link:
    """LK heartbeat: answered with LK."""

    steps: int | None
    battery: int | None


@dataclass(frozen=True, slots=True)
class Position:
    """UD / UD2 / UD_LTE / UD_WCDMA / WT positions and AL alarms (`alarm` True)."""

    alarm: bool
    device_time: datetime | None
    valid: bool  # GPS fix ('A'); an SOS without a fix has valid False
    lat: float | None
    lon: float | None
    speed_kmh: float | None
    battery: int | None
    steps: int | None
    status: int
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class Vitals:
    """heart / bphrt / blood / btemp2."""

    hr: int | None = None
    systolic: int | None = None
    diastolic: int | None = None
    temp: float | None = None


@dataclass(frozen=True, slots=True)
class Other:
    """A keyword this gateway does not translate (acknowledged where the protocol asks)."""

    keyword: str


Decoded = Link | Position | Vitals | Other


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _float(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def _device_time(date: str, time: str) -> datetime | None:
    try:
        return datetime.strptime(date + time, "%d%m%y%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None  # watches without a clock send 000000


def _coordinate(value: str, hemisphere: str, limit: float) -> float | None:
    number = _float(value)
    if number is None or not -limit <= number <= limit:
        return None
    return -abs(number) if hemisphere.strip() in ("S", "W") else number


def decode_position(frame: WatchFrame) -> Position:
    a = frame.args
    if len(a) < 16:
        raise FrameError("bad_position", f"{frame.keyword} with {len(a)} fields, at least 16")
    try:
        status = int(a[15], 16)
    except ValueError:
        raise FrameError("bad_position", f"status {a[15][:16]!r} is not hex") from None
    valid = a[2] == "A"
    lat = _coordinate(a[3], a[4], 90)
    lon = _coordinate(a[5], a[6], 180)
    if not valid or lat is None or lon is None or (lat == 0 and lon == 0):
        lat = lon = None
    battery = _int(a[12])
    return Position(
        alarm=frame.keyword.startswith("AL"),
        device_time=_device_time(a[0], a[1]),
        valid=valid,
        lat=lat,
        lon=lon,
        speed_kmh=_float(a[7]),
        battery=battery if battery is not None and battery <= 100 else None,
        steps=_int(a[13]),
        status=status,
        flags=status_flags(status),
    )


def _vitals(frame: WatchFrame) -> Vitals:
    a = [x.strip() for x in frame.args]
    word = frame.keyword.lower()
    if word == "btemp2":
        if len(a) >= 2 and _int(a[0]):
            return Vitals(temp=_float(a[1]))
        return Vitals()
    if word in ("bphrt", "blood"):
        hr = _int(a[2]) if len(a) > 2 else None
        return Vitals(
            hr=hr,
            systolic=_int(a[0]) if a else None,
            diastolic=_int(a[1]) if len(a) > 1 else None,
        )
    return Vitals(hr=_int(a[0]) if a else None)


POSITION_KEYWORDS = ("UD", "UD2", "UD3", "UD_LTE", "UD_WCDMA", "WT")
VITAL_KEYWORDS = ("heart", "pulse", "bphrt", "blood", "btemp2")


def decode(frame: WatchFrame) -> Decoded:
    """Typed content of a frame; raises FrameError on a known keyword with bad fields."""
    word = frame.keyword
    if word == "LK":
        a = frame.args
        return Link(
            steps=_int(a[0]) if a else None,
            battery=_int(a[2]) if len(a) > 2 and (_int(a[2]) or 0) <= 100 else None,
        )
    if word in POSITION_KEYWORDS or word.startswith("AL"):
        return decode_position(frame)
    if word.lower() in VITAL_KEYWORDS:
        return _vitals(frame)
    return Other(word)


# Keywords the server must answer with the keyword itself (or the watch repeats them).
ANSWERED = ("LK", "AL", "AL_LTE", "TKQ", "TKQ2")


def answer_for(frame: WatchFrame) -> str | None:
    if frame.keyword in ANSWERED:
        return frame.keyword
    if frame.keyword.startswith("AL"):
        return "AL"
    if frame.keyword == "INIT":
        return "INIT,1"
    return None


# ---------------------------------------------------------------------------------
# Downlinks
# ---------------------------------------------------------------------------------


def utf16_hex(text: str) -> str:
    return text.encode("utf-16-be").hex().upper()


def message_content(text: str) -> str:
    """MESSAGE: a text shown on the watch, UTF-16BE as hex digits."""
    return f"MESSAGE,{utf16_hex(text)}"


def locate_now_content() -> str:
    """CR: the watch reports its position now."""
    return "CR"


def sos_number_contents(numbers: list[str]) -> list[str]:
    """SOS1..SOS3: the numbers the SOS key dials."""
    return [f"SOS{i},{number}" for i, number in enumerate(numbers[:3], start=1)]


def phonebook_contents(entries: list[tuple[str, str]]) -> list[str]:
    """PHB (first five) and PHB2 (next five): number, name as UTF-16BE hex."""
    out = []
    for word, chunk in (("PHB", entries[:5]), ("PHB2", entries[5:10])):
        if chunk:
            out.append(",".join([word, *(f"{num},{utf16_hex(name)}" for num, name in chunk)]))
    return out


def decode_message_text(frame: WatchFrame) -> str | None:
    """The text of a MESSAGE frame (what a watch shows); None for other frames."""
    if frame.keyword != "MESSAGE" or not frame.args:
        return None
    try:
        return bytes.fromhex(frame.args[0]).decode("utf-16-be")
    except ValueError:
        return None

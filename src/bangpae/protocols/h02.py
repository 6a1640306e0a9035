"""H02 trackers over TCP: text frames ``*HQ,ID,CMD,...#`` and binary ``$`` frames.

Text: a position is ``hhmmss,validity,lat,N|S,lon,E|W,speed,course,ddmmyy[,status]``
wherever it stands in the frame (V1, V4 replies, V5, V6, V8, V19, V2, VI1; VP1
carries no time of day). Coordinates are DDMM.MMMM (a value without a point has
four implied decimals); speed is in knots. The 32-bit status word is active-low:
bit 0 vibration, bits 1 and 18 SOS, bit 19 power cut. Binary: ``$``, a 5-byte (10-digit)
or 8-byte (IMEI) BCD id, BCD time, date, latitude, a byte, longitude whose last
nibble holds flags (0x2 valid, 0x4 north, 0x8 east), BCD speed and course,
then the status word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bangpae.domain.model import Fix
from bangpae.domain.retention import AHEAD, too_far_ahead
from bangpae.protocols.codec import Decoded
from bangpae.protocols.errors import FrameError

KNOT_MPS = 0.514444
MAX_TEXT = 1024
BINARY_LENGTHS = (32, 42, 45, 46, 48)
MARKERS = (0x2A, 0x24, 0x58)  # '*', '$', 'X'

_COORD = r"-?\d+(?:-\d+)?(?:\.\d+)?"
_POSITION = re.compile(
    r"(?:(\d{6})?,\s*)?([AVB0-9])?,\s*(" + _COORD + r"),\s*([NS]),\s*(" + _COORD + r"),\s*([EW]),"
    r"\s*(\d+(?:\.\d+)?),\s*(\d+(?:\.\d+)?),(?:\s*\d{1,2},)?\s*(\d{6})?"
    r"(?:,\s*([0-9A-Fa-f]{8}))?"
)


@dataclass(frozen=True, slots=True)
class Message:
    """One H02 frame: who sent it, what kind, and the fix it carries if any."""

    identifier: str
    command: str
    has_position: bool = False
    fix_time: float | None = None  # None: the frame has no time, use when it arrived
    lat: float = 0.0
    lon: float = 0.0
    speed_mps: float | None = None
    heading_deg: float | None = None
    valid: bool = False
    alarms: frozenset[str] = field(default_factory=frozenset)
    binary: bool = False
    maker: str = "HQ"


def split_frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Cut a TCP stream into frames; return them and the bytes still incomplete."""
    frames: list[bytes] = []
    i = 0
    n = len(buffer)
    while i < n:
        b = buffer[i]
        if b == 0x2A:  # '*' text up to '#'
            end = buffer.find(b"#", i)
            if end < 0:
                if n - i > MAX_TEXT:
                    raise FrameError("text frame longer than 1024 bytes without '#'")
                break
            frames.append(buffer[i : end + 1])
            i = end + 1
        elif b in (0x24, 0x58):  # '$' or 'X' binary: the shortest length a marker follows
            for length in BINARY_LENGTHS:
                if i + length > n:
                    length = 0
                    break
                if (
                    i + length == n
                    or buffer[i + length] in MARKERS
                    or buffer[i + length : i + length + 2] == b"\r\n"
                ):
                    break
            else:
                length = BINARY_LENGTHS[1]
            if length == 0:
                break
            frames.append(buffer[i : i + length])
            i += length
        else:
            i += 1  # line ends and noise between frames
    return frames, buffer[i:]


def _coordinate(text: str, hemisphere: str) -> float:
    body = text.lstrip("-")
    if "-" in body:  # some firmware writes -DD-MM.MMMM
        deg_text, _, min_text = body.partition("-")
        degrees, minutes = int(deg_text), float(min_text)
    else:
        value = float(body) if "." in body else int(body) / 10000.0
        degrees = int(value // 100)
        minutes = value - degrees * 100
    if minutes >= 60:
        raise FrameError("coordinate: minutes out of range")  # logged: the value is not
    result = degrees + minutes / 60.0
    return -result if hemisphere in ("S", "W") else result


def _alarms(status: int) -> frozenset[str]:
    out = set()
    if not status & 1:
        out.add("vibration")
    if not status >> 1 & 1 or not status >> 18 & 1:
        out.add("sos")
    if not status >> 19 & 1:
        out.add("power_cut")
    return frozenset(out)


def _time(hhmmss: str, ddmmyy: str) -> float:
    try:
        return datetime(
            2000 + int(ddmmyy[4:6]),
            int(ddmmyy[2:4]),
            int(ddmmyy[0:2]),
            int(hhmmss[0:2]),
            int(hhmmss[2:4]),
            int(hhmmss[4:6]),
            tzinfo=UTC,
        ).timestamp()
    except ValueError:
        raise FrameError(f"time {hhmmss} {ddmmyy} is not a date") from None


def _decode_text(frame: bytes) -> Message:
    try:
        text = frame.decode("ascii").strip()
    except UnicodeDecodeError:
        raise FrameError("text frame is not ASCII") from None
    if not (text.startswith("*") and text.endswith("#")):
        raise FrameError("text frame must run from '*' to '#'")
    parts = text[1:-1].split(",")
    if len(parts) < 2:
        raise FrameError("no device id field")
    # An empty id is allowed: the connection's login tells who it is.
    ident, command = parts[1].strip(), (parts[2].strip() if len(parts) > 2 else "")
    maker = parts[0][:4]
    m = _POSITION.search(text, len(parts[0]) + len(parts[1]) + 2)
    if m is None or command in ("NBR", "V3", "LINK", "HTBT", "XT", "BS", "BASE", "SMS"):
        return Message(ident, command, maker=maker)
    hhmmss, validity, lat, ns, lon, ew, speed, course, date, status = m.groups()
    st = int(status, 16) if status else 0xFFFFFFFF
    speed_kn = float(speed)
    return Message(
        ident,
        command,
        True,
        fix_time=_time(hhmmss or "000000", date) if date else None,
        lat=_coordinate(lat, ns),
        lon=_coordinate(lon, ew),
        speed_mps=speed_kn * KNOT_MPS,
        heading_deg=float(course) % 360.0,
        valid=validity not in (None, "V"),
        alarms=_alarms(st),
        maker=maker,
    )


def _bcd(data: bytes) -> str:
    digits = data.hex()
    if not digits.isdigit():
        raise FrameError("binary field is not BCD")
    return digits


def _decode_binary(frame: bytes) -> Message:
    for id_len in (5, 8):
        try:
            return _decode_binary_with(frame, id_len)
        except FrameError:
            if id_len == 8:
                raise
    raise FrameError("unreachable")  # pragma: no cover


def _decode_binary_with(frame: bytes, id_len: int) -> Message:
    if len(frame) < 1 + id_len + 22:
        raise FrameError("binary frame too short")
    p = 1
    raw_id = frame[p : p + id_len].hex()
    ident = raw_id[:15] if id_len == 8 else raw_id
    if not ident.isdigit():
        raise FrameError("binary id is not BCD")
    p += id_len
    hhmmss, ddmmyy = _bcd(frame[p : p + 3]), _bcd(frame[p + 3 : p + 6])
    p += 6
    lat = _bcd(frame[p : p + 4])
    p += 5  # latitude and the byte after it
    lon_hex = frame[p : p + 5].hex()
    flags = int(lon_hex[9], 16)
    lon = lon_hex[:9]
    if not lon.isdigit():
        raise FrameError("binary longitude is not BCD")
    p += 5
    sc = _bcd(frame[p : p + 3])
    p += 3
    status = int.from_bytes(frame[p : p + 4], "big")
    fix_time = _time(hhmmss, ddmmyy)
    return Message(
        ident,
        "binary",
        True,
        fix_time=fix_time,
        lat=_coordinate(lat, "N" if flags & 4 else "S"),
        lon=_coordinate(lon, "E" if flags & 8 else "W"),
        speed_mps=int(sc[:3]) * KNOT_MPS,
        heading_deg=float(int(sc[3:]) % 360),
        valid=bool(flags & 2),
        alarms=_alarms(status),
        binary=True,
    )


def decode(frame: bytes) -> Message:
    """Decode one frame as cut by :func:`split_frames`; FrameError if it is not H02."""
    if not frame:
        raise FrameError("empty frame")
    if frame[0] == 0x2A:
        return _decode_text(frame)
    if frame[0] == 0x24:
        return _decode_binary(frame)
    raise FrameError(f"unknown frame marker 0x{frame[0]:02x}")


def ack(message: Message, now: float) -> bytes | None:
    """The reply a device expects: heartbeats are echoed, V1 positions get a V4 with our time."""
    if message.binary:
        return None
    if message.command == "HTBT":
        return f"*{message.maker},{message.identifier},HTBT#".encode()
    if message.command == "V1":
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M%S")
        return f"*{message.maker},{message.identifier},V4,V1,{stamp}#".encode()
    return None


def interval_command(identifier: str, seconds: int, now: float, maker: str = "HQ") -> bytes:
    """The command that sets a tracker's periodic reporting interval (S71, mode 22)."""
    if not 5 <= seconds <= 86400:
        raise ValueError("interval must be between 5 s and a day")
    stamp = datetime.fromtimestamp(now, UTC).strftime("%H%M%S")
    return f"*{maker},{identifier},S71,{stamp},22,{seconds}#".encode()


class Tcp:
    """H02 as the TCP listener speaks it (a :class:`~bangpae.protocols.codec.TcpProtocol`)."""

    name = "h02"
    split = staticmethod(split_frames)

    def decode(
        self, frame: bytes, now: float, lenient: bool = False, device_id: int = 0
    ) -> Decoded:
        """One frame: its identifier, the fix it carries (a frame without a time is dated
        when it arrived) and its reply. H02 has no checksum: ``lenient`` changes nothing."""
        msg = decode(frame)
        fix = None
        if msg.has_position:
            t = msg.fix_time if msg.fix_time is not None else now
            if too_far_ahead(t, now):
                raise FrameError(f"fix time {AHEAD}")
            fix = Fix(
                device_id=device_id,
                fix_time=t,
                lat=msg.lat,
                lon=msg.lon,
                speed_mps=msg.speed_mps,
                heading_deg=msg.heading_deg,
                valid=msg.valid,
                alarms=msg.alarms,
                received_at=now,
            )
        return Decoded(msg.identifier or None, fix, ack(msg, now))

    def interval(self, identifier: str, seconds: int, now: float) -> bytes:
        """``S71``, with the tracker's identifier and the server's clock."""
        return interval_command(identifier, seconds, now)


TCP = Tcp()

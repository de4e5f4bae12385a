"""Times, zones and durations: the one place that reads the clock and parses time text.

Everything is stored and passed around in UTC: aware ``datetime`` objects in
code, float epoch seconds in SQLite, ISO 8601 with a ``Z`` in the API.
Local zones are used only to compute schedules and to format for people.
"""

import re
import time as _time
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dateutil.parser

UTC = timezone.utc


def utcnow() -> datetime:
    """The current time, aware, in UTC. The only clock read outside tests."""
    return datetime.now(UTC)


def monotonic() -> float:
    return _time.monotonic()


def get_tz(name: str):
    """The zone named ``name`` (IANA, or ``UTC``); ValueError if unknown."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"not a time zone name: {name!r}")
    if name.upper() == "UTC" or name == "Z":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, IsADirectoryError):
        raise ValueError(f"unknown time zone: {name!r}") from None


def to_epoch(dt: datetime) -> float:
    return dt.timestamp()


def from_epoch(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def to_iso(t) -> str | None:
    """ISO 8601 in UTC with a ``Z``, to the microsecond when there is one."""
    if t is None:
        return None
    if not isinstance(t, datetime):
        t = from_epoch(t)
    t = t.astimezone(UTC)
    text = t.isoformat(timespec="microseconds" if t.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def parse_time(text, tz=UTC) -> datetime:
    """Parse an absolute time, or ``now``; a time without a zone is in ``tz``.

    Accepts ISO 8601 and the forms dateutil understands, a ``datetime``, or
    epoch seconds. Raises ValueError naming the text it could not read.
    """
    if isinstance(text, datetime):
        dt = text
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        return from_epoch(float(text))
    elif isinstance(text, date):
        dt = datetime(text.year, text.month, text.day)
    elif isinstance(text, str):
        s = text.strip()
        if s.lower() == "now":
            return utcnow()
        try:
            dt = dateutil.parser.isoparse(s)
        except ValueError:
            try:
                dt = dateutil.parser.parse(s)
            except (ValueError, OverflowError):
                raise ValueError(f"not a time: {text!r}") from None
    else:
        raise ValueError(f"not a time: {text!r}")
    if dt.tzinfo is None:
        if isinstance(tz, str):
            tz = get_tz(tz)
        dt = dt.replace(tzinfo=tz)
    return dt.astimezone(UTC)


_UNITS = {
    "ms": 0.001, "msec": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.I)


def parse_duration(value) -> float:
    """Seconds from a number or text such as ``30s``, ``10 min``, ``1.5h``, ``1h 30m``.

    A bare number is seconds. Raises ValueError naming the bad text.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a duration: {value!r}")
    total, pos, text = 0.0, 0, value.strip()
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"not a duration: {value!r}")
        unit = m.group(2).lower() or "s"
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {m.group(2)!r} in duration {value!r}")
        total += float(m.group(1)) * _UNITS[unit]
        pos = m.end()
    return total


def format_duration(seconds: float | None) -> str:
    """A short human form: ``850 ms``, ``12.4 s``, ``3 min 5 s``, ``2 h 10 min``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"

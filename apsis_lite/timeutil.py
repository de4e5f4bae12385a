"""Times, zones and durations: the one place that reads the clock and parses time text.

Everything is stored and passed around in UTC: aware ``datetime`` objects in
code, float epoch seconds in SQLite, ISO 8601 with a ``Z`` in the API.
Local zones are used only to compute schedules and to format for people.
"""

import math
import re
import time as _time
from datetime import date, datetime, time as dtime, timedelta, timezone, tzinfo
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
    if len(name) > 64:
        raise ValueError(f"unknown time zone: {name[:40]!r}... ({len(name)} characters)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a name the file system refuses (a NUL byte, too long a part).
        raise ValueError(f"unknown time zone: {name!r}") from None


def to_epoch(dt: datetime) -> float:
    return dt.timestamp()


def from_epoch(t: float) -> datetime:
    """The instant ``t`` epoch seconds; ValueError if it is not a number or beyond the years 1-9999."""
    try:
        return datetime.fromtimestamp(t, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"time out of range: {t!r} epoch seconds") from None


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
    epoch seconds. Raises ValueError naming the text it could not read, or
    saying that it is out of the range of dates (years 1 to 9999).
    """
    try:
        return _parse_time(text, tz)
    except (OverflowError, OSError):  # epoch seconds or a local time past datetime's range
        raise ValueError(f"not a time: {text!r} (out of range)") from None


def _parse_time(text, tz):
    if isinstance(text, datetime):
        dt = text
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        if not math.isfinite(text):
            raise ValueError(f"not a time: {text!r}")
        try:
            return from_epoch(float(text))
        except (OverflowError, ValueError):  # beyond a float, or beyond the years 1-9999
            raise ValueError(f"time out of range: {text!r} epoch seconds") from None
    elif isinstance(text, date):
        dt = datetime(text.year, text.month, text.day)
    elif isinstance(text, str):
        s = text.strip()
        if s.lower() == "now":
            return utcnow()
        try:
            dt = dateutil.parser.isoparse(s)
        except (ValueError, OverflowError):
            try:
                dt = dateutil.parser.parse(s)
            except (ValueError, OverflowError):
                raise ValueError(f"not a time: {text!r}") from None
    else:
        raise ValueError(f"not a time: {text!r}")
    if isinstance(tz, str):
        tz = get_tz(tz)
    elif not isinstance(tz, tzinfo):
        raise ValueError(f"not a time zone: {tz!r}")
    try:
        if dt.tzinfo is None:
            # A local time that does not exist means the instant the clocks
            # jump; one that occurs twice, its first occurrence.
            return localize(dt, tz, "shift", "first")[0]
        return dt.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"time out of range: {text!r}") from None


_UNITS = {
    "ms": 0.001, "msec": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.I)

# The longest duration anything accepts: schedules, timeouts and settings
# stay far inside the range of dates, and their arithmetic cannot overflow.
MAX_DURATION = 100 * 365 * 86400.0
MAX_DURATION_TEXT = "100 years"


def parse_duration(value) -> float:
    """Seconds from a number or text such as ``30s``, ``10 min``, ``1.5h``, ``1h 30m``.

    A bare number is seconds. Raises ValueError naming the bad text; a
    duration longer than MAX_DURATION (100 years) is an error too.
    """
    seconds = _parse_duration(value)
    if not seconds <= MAX_DURATION:  # also NaN
        raise ValueError(f"too long: {value!r} (at most {MAX_DURATION_TEXT})")
    return seconds


def _parse_duration(value) -> float:
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(f"not a duration: {value!r}")
        return float(value) if value <= MAX_DURATION else math.inf
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


# --------------------------------------------------------------------------
# Dates, daytimes and local times. Schedules compute in local wall-clock time
# and turn each result into one or more UTC instants with ``localize``.

_DAYTIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?")
# ``auto``: seconds, or microseconds when there are some; ``minimal``: as
# ``auto``, but minutes when the seconds are zero too (``09:30``).
PRECISIONS = ("minutes", "seconds", "milliseconds", "microseconds", "auto", "minimal")


def parse_daytime(value) -> dtime:
    """A time of day from ``HH:MM``, ``HH:MM:SS`` or ``HH:MM:SS.ffffff`` (24-hour clock)."""
    if isinstance(value, dtime):
        return value.replace(tzinfo=None)
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"not a daytime: {value!r} (expected 'HH:MM' or 'HH:MM:SS')")
    m = _DAYTIME.fullmatch(value.strip())
    if not m:
        raise ValueError(f"not a daytime: {value!r} (expected 'HH:MM' or 'HH:MM:SS')")
    h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    micro = int((m.group(4) or "0").ljust(6, "0"))
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(f"not a daytime: {value!r} (out of range)")
    return dtime(h, mi, s, micro)


def format_daytime(t: dtime, precision: str = "seconds") -> str:
    """``HH:MM[:SS[.fff[fff]]]`` to ``precision``, one of PRECISIONS."""
    return t.isoformat(timespec=_timespec(t, precision))


def parse_date(value) -> date:
    """A date from ``YYYY-MM-DD`` text, a date or a datetime (its own date)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"not a date: {value!r} (expected YYYY-MM-DD)")


def format_date(d: date) -> str:
    return d.isoformat()


def format_time(t: datetime, tz=None, precision: str = "auto") -> str:
    """ISO 8601 for ``t``: in UTC with a ``Z`` when ``tz`` is None, else local with its offset.

    ``precision`` is one of PRECISIONS.
    """
    if tz is None:
        t = t.astimezone(UTC)
        return t.isoformat(timespec=_timespec(t, precision)).replace("+00:00", "Z")
    t = t.astimezone(get_tz(tz) if isinstance(tz, str) else tz)
    return t.isoformat(timespec=_timespec(t, precision))


def _timespec(t, precision):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})")
    if precision in ("auto", "minimal"):
        if t.microsecond:
            return "microseconds"
        return "minutes" if precision == "minimal" and not t.second else "seconds"
    return precision


GAP_CHOICES = ("shift", "skip")
REPEAT_CHOICES = ("first", "both")


def localize(naive: datetime, zone, gap: str = "shift", repeat: str = "first") -> list:
    """The UTC instants at which wall-clock time ``naive`` occurs in ``zone``, in order.

    Usually one. A time in a spring-forward gap does not occur: ``gap="shift"``
    gives the instant the clocks jump (02:30 in New York on its spring day is
    03:00 EDT), ``gap="skip"`` gives none. A time in a fall-back repeat occurs
    twice: ``repeat="first"`` gives the first, ``repeat="both"`` both.
    """
    early = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    late = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if early == late:
        return [early]
    early, late = min(early, late), max(early, late)
    if early.astimezone(zone).replace(tzinfo=None) == naive:
        return [early] if repeat == "first" else [early, late]
    # A gap: the two readings straddle the transition; find it (offsets
    # change at whole seconds, and a gap lasts at most a few hours).
    if gap == "skip":
        return []
    return [_first_with_offset(zone, early, late)]


def _first_with_offset(zone, lo: datetime, hi: datetime) -> datetime:
    """The first whole second in (lo, hi] with the offset ``hi`` has (offsets change once between)."""
    off = hi.astimezone(zone).utcoffset()
    lo = lo.replace(microsecond=0)
    hi = hi.replace(microsecond=0) + (timedelta(seconds=1) if hi.microsecond else timedelta(0))
    while hi - lo > timedelta(seconds=1):
        mid = lo + timedelta(seconds=(hi - lo) // timedelta(seconds=1) // 2)
        if mid.astimezone(zone).utcoffset() == off:
            hi = mid
        else:
            lo = mid
    return hi


def first_instant_at(naive: datetime, zone) -> datetime:
    """The earliest instant at which the wall clock in ``zone`` shows ``naive`` or later."""
    return localize(naive, zone, "shift", "first")[0]


def offset_changes(zone, start: datetime, end: datetime, step=timedelta(hours=1)) -> list:
    """``(instant, old offset, new offset)`` for each change of ``zone``'s UTC offset in [start, end).

    For marking daylight-saving transitions in listings; ``instant`` is the
    first instant (to the second) with the new offset.
    """
    if isinstance(zone, str):
        zone = get_tz(zone)
    out = []
    t = start.astimezone(UTC)
    prev = t.astimezone(zone).utcoffset()
    while t < end:
        nxt = min(t + step, end.astimezone(UTC))
        off = nxt.astimezone(zone).utcoffset()
        if off != prev:
            out.append((_first_with_offset(zone, t, nxt), prev, off))
            prev = off
        if nxt <= t:
            break
        t = nxt
    return out

"""apsis's template names, from the ora library, as aliases of ours.

apsis's templates see ``Date``, ``Daytime``, ``Time``, ``TimeZone``,
``get_calendar``, ``from_local`` and ``to_local``. Here they are small
subclasses of Python's date, time and datetime (so every helper of ours
takes them) with ora's behaviour where apsis's job files rely on it:

* ``Date(x)``: from ``YYYY-MM-DD`` text, a date, ``YYYYMMDD`` or
  ``(year, month, day)``; ``date + n`` and ``date - n`` count days,
  ``date - date`` is days; ``.weekday`` (``Mon``...), ``.ymdi``;
* ``Daytime(x)``: from ``HH:MM[:SS]`` text or ``(hour, minute, second)``;
  ``+``/``-`` seconds within the day; ``daytime - daytime`` is seconds;
* ``Time(x)``: an instant, from ISO text (a run's ``time`` arg) or
  ``(year, month, day, hour, minute, second, tz)``; ``+``/``-`` seconds,
  ``time - time`` is seconds; shown in UTC as our ``time`` args are;
* ``TimeZone(name)``; ``to_local(time, tz)`` is ``(date, daytime)`` with
  ``.date`` and ``.daytime``; ``from_local((date, daytime), tz)`` (or
  ``from_local(date, daytime, tz)``) the instant: the first one when the
  clocks fall back, an error when they spring forward past it;
* ``get_calendar(name)``: a calendar expression of ours whose ``before``,
  ``after``, ``shift`` give ``Date``s; ``date in cal`` and ``cal.contains(date)``.

Each result prints as the text apsis gives its args (``2026-12-03``,
``09:30:00``). All of it is plain arithmetic on values, inside the sandbox
and its limits.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import NamedTuple

from apsis_lite.timeutil import get_tz, parse_daytime, parse_time, to_iso

_WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_UTC = timezone.utc


def _whole(n, what) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, float)) or n != int(n):
        raise TypeError(f"{what} must be a whole number, not {n!r}")
    return int(n)


# The classes keep their base's constructor (the datetime module calls it to
# make results of a subclass); ``Date()``, ``Daytime()`` and ``Time()`` below
# are the names templates call.


def Date(*args) -> "OraDate":  # noqa: N802 - ora's name
    """ora's ``Date``: from a date, ``YYYY-MM-DD`` text, ``YYYYMMDD`` or ``(year, month, day)``."""
    if len(args) == 3:
        return OraDate(*(_whole(a, "a date part") for a in args))
    if len(args) != 1:
        raise TypeError("Date() takes a date, 'YYYY-MM-DD', YYYYMMDD or (year, month, day)")
    value = args[0]
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        return OraDate(value.year, value.month, value.day)
    if isinstance(value, int) and not isinstance(value, bool):
        return OraDate(value // 10000, value // 100 % 100, value % 100)
    if isinstance(value, str):
        text = value.strip()
        try:
            d = date.fromisoformat(text)
        except ValueError:
            try:
                d = parse_time(text).date()  # a run's time arg: its date in UTC
            except ValueError:
                raise ValueError(f"not a date: {value!r}") from None
        return OraDate(d.year, d.month, d.day)
    raise TypeError(f"not a date: {value!r}")


def _plain_date(d: date) -> date:
    return date(d.year, d.month, d.day)


class OraDate(date):
    """A date whose arithmetic counts days, as ora's does."""

    def __str__(self):
        return self.isoformat()

    def __add__(self, days):
        if isinstance(days, timedelta):
            return Date(date.__add__(_plain_date(self), days))
        return Date(date.__add__(_plain_date(self), timedelta(days=_whole(days, "days"))))

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, date):
            return (_plain_date(self) - _plain_date(other)).days
        if isinstance(other, timedelta):
            return Date(_plain_date(self) - other)
        return Date(_plain_date(self) - timedelta(days=_whole(other, "days")))

    @property
    def weekday(self):
        """``Mon`` ... ``Sun``, as ora's Weekday prints (Python's weekday() number is gone:
        code of ours takes an OraDate through ``_plain_date``)."""
        return _WEEKDAY_NAMES[date.weekday(self)]

    @property
    def ymdi(self) -> int:
        return self.year * 10000 + self.month * 100 + self.day


def Daytime(*args) -> "OraDaytime":  # noqa: N802 - ora's name
    """ora's ``Daytime``: from ``HH:MM[:SS]`` text, a time or ``(hour, minute[, second])``."""
    if len(args) in (2, 3):
        h, m = (_whole(a, "a daytime part") for a in args[:2])
        s = float(args[2]) if len(args) == 3 else 0.0
        whole = int(s)
        return OraDaytime(h, m, whole, min(round((s - whole) * 1e6), 999_999))
    if len(args) != 1:
        raise TypeError("Daytime() takes 'HH:MM[:SS]' or (hour, minute, second)")
    value = args[0]
    if isinstance(value, datetime):
        value = value.time()
    if isinstance(value, str):
        value = parse_daytime(value)
    if isinstance(value, time):
        return OraDaytime(value.hour, value.minute, value.second, value.microsecond)
    raise TypeError(f"not a daytime: {value!r}")


class OraDaytime(time):
    """A time of day whose arithmetic is in seconds within the day, as ora's is."""

    def __str__(self):
        return self.isoformat(timespec="microseconds" if self.microsecond else "seconds")

    def _seconds(self) -> float:
        return self.hour * 3600 + self.minute * 60 + self.second + self.microsecond / 1e6

    def __add__(self, seconds):
        total = self._seconds() + float(seconds)
        if not 0 <= total < 86400:
            raise ValueError(f"{self} + {seconds} s is not in the same day")
        return Daytime(int(total // 3600), int(total % 3600 // 60), total % 60)

    def __sub__(self, other):
        if isinstance(other, time):
            return self._seconds() - Daytime(other)._seconds()
        return self + (-float(other))


def Time(*args) -> "OraTime":  # noqa: N802 - ora's name
    """ora's ``Time``: from ISO text (a run's ``time`` arg) or
    ``(year, month, day, hour, minute, second, tz)``."""
    if len(args) == 7:
        *parts, tz = args
        local = datetime(*(_whole(p, "a time part") for p in parts[:5]), 0)
        local += timedelta(seconds=float(parts[5]))
        return from_local((Date(local), Daytime(local)), tz)
    if len(args) != 1:
        raise TypeError("Time() takes ISO text such as a run's time arg, or "
                        "(year, month, day, hour, minute, second, tz)")
    value = args[0]
    if isinstance(value, str):
        value = parse_time(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return _instant(value)
    raise TypeError(f"not a time with a zone: {value!r}")


def _instant(t: datetime) -> "OraTime":
    t = t.astimezone(_UTC)
    return OraTime(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond, _UTC)


class OraTime(datetime):
    """An instant whose arithmetic is in seconds, shown in UTC."""

    def __str__(self):
        return to_iso(self)

    def _plain(self) -> datetime:
        return datetime(self.year, self.month, self.day, self.hour, self.minute, self.second,
                        self.microsecond, self.tzinfo)

    def __add__(self, seconds):
        if not isinstance(seconds, timedelta):
            seconds = timedelta(seconds=float(seconds))
        return _instant(self._plain() + seconds)

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, datetime):
            return (self._plain() - other).total_seconds()
        if isinstance(other, timedelta):
            return _instant(self._plain() - other)
        return self + (-float(other))


class TimeZone:
    """ora's ``TimeZone``: a zone by its name (``America/New_York``)."""

    def __init__(self, name):
        if isinstance(name, TimeZone):
            name = name.name
        self.name = str(name)
        self._zone = get_tz(self.name)  # private: the sandbox keeps templates off the zone object

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"TimeZone({self.name!r})"


class LocalTime(NamedTuple):
    """``to_local``'s result: a date and a daytime, as ora's LocalTime."""

    date: OraDate
    daytime: OraDaytime

    def __str__(self):
        return f"{self.date}T{self.daytime}"


def _zone(tz):
    return TimeZone(tz)._zone


def to_local(t, tz) -> LocalTime:
    """The date and daytime in zone ``tz`` of instant ``t`` (a Time or ISO text)."""
    local = Time(t)._plain().astimezone(_zone(tz))
    return LocalTime(Date(local.date()), Daytime(local.time()))


def from_local(*args) -> OraTime:
    """The instant of a local date and daytime in a zone: ``from_local((date, daytime), tz)``.

    Where the clocks fall back the first of the two instants; where they
    spring forward past the daytime, an error, as in ora.
    """
    if len(args) == 3:
        d, dt, tz = args
    elif len(args) == 2 and isinstance(args[0], (tuple, list)) and len(args[0]) == 2:
        (d, dt), tz = args
    else:
        raise TypeError("from_local() takes ((date, daytime), tz) or (date, daytime, tz)")
    d, dt, zone = Date(d), Daytime(dt), _zone(tz)
    naive = datetime.combine(d, time(dt.hour, dt.minute, dt.second, dt.microsecond))
    local = naive.replace(tzinfo=zone, fold=0)
    back = local.astimezone(_UTC).astimezone(zone).replace(tzinfo=None)
    if back != naive:
        raise ValueError(f"{d} {dt} does not exist in {TimeZone(tz)} (the clocks jump past it)")
    return _instant(local)


class OraCalendar:
    """``get_calendar(name)``: one of our calendars, giving ``Date``s as ora's do."""

    def __init__(self, calendar):
        self._calendar = calendar
        self.name = str(calendar)

    def __str__(self):
        return self.name

    def __contains__(self, value):
        return self._calendar.contains(_plain_date(Date(value)))

    def contains(self, value) -> bool:
        return self._calendar.contains(_plain_date(Date(value)))

    def before(self, value) -> OraDate:
        return Date(self._calendar.before(_plain_date(Date(value))))

    def after(self, value) -> OraDate:
        return Date(self._calendar.after(_plain_date(Date(value))))

    def shift(self, value, n) -> OraDate:
        return Date(self._calendar.shift(_plain_date(Date(value)), n))

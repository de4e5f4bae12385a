"""Schedule types: pure iterators over due times. No I/O, no clock reads.

A schedule is parsed from its job-file mapping with ``parse_schedule(jso)``;
``times(start)`` then yields ``(time, args)`` pairs, time an aware UTC
datetime ``>= start`` in strictly increasing order, args the strings the
schedule supplies (``time``, ``date``, ...) overlaid with its own ``args:``.
Types: ``interval``, ``explicit`` (absolute times), and the wall-clock ones
``daily``, ``daily-interval`` and ``cron``, which share one daylight-saving
rule (``_resolve``) that a schedule can tune with ``dst:``. Any schedule may
carry ``jitter`` and, in the ``start:``/``stop:`` form, a stop schedule.

This module also holds the small strict-mapping reader (``Fields``,
``SpecError``) that programs, conditions and actions use too: it is the
first of those modules in the import order, so they can share it without a
cycle.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import heapq
import math
from dataclasses import dataclass, field
from datetime import date, datetime, time as dtime, timedelta, timezone
from typing import ClassVar, Iterator

from cronsim import CronSim, CronSimError

from apsis_lite.model.calendars import ALL, DEFAULT_LIBRARY, Calendar, CalendarError
from apsis_lite.model.registry import SCHEDULES
from apsis_lite.timeutil import (
    GAP_CHOICES, REPEAT_CHOICES, UTC, first_instant_at, format_daytime, format_duration, get_tz,
    localize, parse_daytime, parse_duration, parse_time, to_iso,
)

# --------------------------------------------------------------------------
# Strict reading of job-file mappings, collecting every problem.


class SpecError(ValueError):
    """One or more problems in a spec, each a ``(key, message)`` pair.

    Keys are relative paths such as ``interval``, ``timeout.duration`` or
    ``argv[2]``; ``""`` means the spec itself. ``jobs.py`` prefixes them
    with where the spec sits in the file and turns them into JobFileErrors.
    """

    def __init__(self, key: str = "", msg: str = "", *, problems=None):
        self.problems = list(problems) if problems is not None else [(key, msg)]
        super().__init__("; ".join(
            f"{k}: {m}" if k else m for k, m in self.problems))


def join_key(prefix: str, key: str) -> str:
    """``join_key("program", "argv[1]") == "program.argv[1]"``; indices attach without a dot."""
    if not prefix:
        return key
    if not key:
        return prefix
    return prefix + key if key.startswith("[") else f"{prefix}.{key}"


_REQUIRED = object()


class Fields:
    """Reads one mapping strictly: take keys, then ``done()`` reports the rest.

    Conversion problems are collected, not raised, so that one pass reports
    every problem in the mapping. ``done()`` raises one SpecError for all.
    """

    def __init__(self, jso, what: str = "mapping"):
        if not isinstance(jso, dict):
            raise SpecError("", f"expected a {what}, got {_kind(jso)}")
        self._jso = dict(jso)
        self._known = []
        self.problems = []

    def __contains__(self, key):
        return key in self._jso

    def take(self, key, convert=None, default=_REQUIRED):
        """Remove and return ``key``, converted; ``default`` when absent.

        Without a default the key is required. A failed conversion is
        recorded and returns None; the caller need not check, because
        ``done()`` raises before anything is built from it.
        """
        self._known.append(key)
        if key not in self._jso:
            if default is _REQUIRED:
                self.error(key, "missing (required)")
                return None
            return default
        value = self._jso.pop(key)
        if convert is None:
            return value
        try:
            return convert(value)
        except SpecError as exc:
            self.problems.extend((join_key(key, k), m) for k, m in exc.problems)
        except ValueError as exc:
            self.error(key, str(exc))
        return None

    def error(self, key, msg):
        self.problems.append((key, msg))

    def done(self):
        """Report unknown keys and raise SpecError if anything went wrong."""
        for key in self._jso:
            self.error(str(key), unknown_key_message(key, self._known))
        if self.problems:
            raise SpecError(problems=self.problems)


def unknown_key_message(key, known) -> str:
    """``unknown key`` with a did-you-mean and the keys allowed there."""
    msg = "unknown key"
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    if known:
        msg += f"; expected: {', '.join(known)}"
    return msg


def _kind(value) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def is_template(value) -> bool:
    """True if ``value`` is a string holding Jinja2 syntax, to be checked after binding."""
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


def text(value) -> str:
    """A string; numbers and dates are converted with ``str()`` (YAML reads ``1000`` as an int)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, date)) and not isinstance(value, bool):
        return value.isoformat() if isinstance(value, date) else str(value)
    raise ValueError(f"expected a string, got {_kind(value)}")


def nonempty_text(value) -> str:
    value = text(value)
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def flag(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_kind(value)}")
    return value


def string_list(value, *, item=text) -> list:
    """A list of strings; a single string is a list of one."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a list of strings, got {_kind(value)}")
    out, problems = [], []
    for i, v in enumerate(value):
        try:
            out.append(item(v))
        except ValueError as exc:
            problems.append((f"[{i}]", str(exc)))
    if problems:
        raise SpecError(problems=problems)
    return out


def string_map(value) -> dict:
    """A mapping of strings to strings; scalar values are converted with ``str()``."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, got {_kind(value)}")
    out, problems = {}, []
    for k, v in value.items():
        if not isinstance(k, str):
            problems.append((str(k), f"key must be a string, got {_kind(k)}"))
            continue
        try:
            out[k] = str(v) if isinstance(v, bool) else text(v)
        except ValueError as exc:
            problems.append((k, str(exc)))
    if problems:
        raise SpecError(problems=problems)
    return out


def duration(value) -> float:
    return parse_duration(value)


def positive_duration(value) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than zero: {value!r}")
    return seconds


# --------------------------------------------------------------------------
# Schedules.

_SECOND = timedelta(seconds=1)
_MICRO = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The last instant a datetime holds: every schedule's times end there.
_LAST = datetime.max.replace(tzinfo=UTC)
_LAST_MICROS = (_LAST - _EPOCH) // _MICRO

# Bounds that keep every schedule's arithmetic inside the range of dates and
# each due time cheap to compute (a calendar shift steps date by date).
EXPLICIT_FIRST_YEAR, EXPLICIT_LAST_YEAR = 1970, 9999
MAX_DATE_SHIFT = 3660     # days, about ten years
MAX_CAL_SHIFT = 366       # calendar dates
# A daily-interval schedule whose windows stay empty this many dates in a row
# (shifts that put every stop before its start) has no more due times.
_EMPTY_WINDOWS = 100


def _as_utc(t: datetime) -> datetime:
    if not isinstance(t, datetime) or t.tzinfo is None:
        raise ValueError(f"start must be an aware datetime, got {t!r}")
    return t.astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    """Base of schedule types: common ``enabled``, ``args``, ``jitter`` and ``stop``.

    Subclasses set ``type_name`` and ``supplies`` (the args they fill in
    themselves), implement ``_read(fields) -> kwargs``, ``_jso()``,
    ``describe()`` and ``times()``, and register with SCHEDULES.
    ``times()`` ignores ``enabled``: a disabled schedule can still be shown.
    ``times()`` yields nominal times; the engine adds ``jitter_offset()``
    to each when it starts the run, and asks ``stop.stop_time()`` when to
    stop it.
    """

    type_name: ClassVar[str] = ""
    supplies: ClassVar[frozenset] = frozenset()

    enabled: bool = field(default=True, kw_only=True)
    args: dict = field(default_factory=dict, kw_only=True)
    jitter: float = field(default=0.0, kw_only=True)
    stop: "StopSchedule | None" = field(default=None, kw_only=True)

    @classmethod
    def from_jso(cls, jso, calendars=None) -> "Schedule":
        """Parse a schedule mapping strictly; SpecError lists every problem.

        On the base class this dispatches on ``type:`` like ``parse_schedule``.
        ``calendars`` resolves calendar names (a ``calendars.CalendarLibrary``;
        None: the weekday sets and shipped calendars only).
        """
        if cls is Schedule:
            return parse_schedule(jso, calendars)
        f = Fields(jso, "schedule mapping")
        f.calendars = calendars
        f.take("type", default=None)  # already used for dispatch
        enabled = f.take("enabled", flag, True)
        args = f.take("args", string_map, {})
        jitter = f.take("jitter", duration, 0.0)
        kwargs = cls._read(f)
        f.done()
        return cls(enabled=enabled, args=args, jitter=jitter, **kwargs)

    @classmethod
    def _read(cls, f: Fields) -> dict:
        raise NotImplementedError

    def to_jso(self) -> dict:
        jso = {"type": self.type_name, "enabled": self.enabled, "args": dict(self.args)}
        if self.jitter:
            jso["jitter"] = self.jitter
        jso.update(self._jso())
        if self.stop is not None:
            return {"start": jso, "stop": self.stop.to_jso()}
        return jso

    def _jso(self) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def times(self, start: datetime) -> Iterator[tuple[datetime, dict]]:
        raise NotImplementedError

    def shortest_interval(self) -> float | None:
        """The interval in seconds, for types that have one (held to the ``min_interval`` setting)."""
        return None

    def _args(self, supplied: dict) -> dict:
        # The schedule's own args: win over what it supplies: they were
        # written on purpose.
        return {**supplied, **self.args} if self.args else supplied


def jitter_offset(job_id: str, nominal: datetime, jitter: float) -> float:
    """Seconds in [0, jitter) to add to a run's nominal time: the same for a job and slot
    in every process and after restarts (a keyed hash, not Python's ``hash()``),
    spread evenly over jobs so that many jobs due at once do not start at once."""
    if not jitter or jitter <= 0:
        return 0.0
    key = f"{job_id}\0{to_iso(nominal)}".encode()
    fraction = (int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 11) / 2**53
    return min(fraction * jitter, math.nextafter(jitter, 0.0))


def parse_schedule(jso, calendars=None) -> Schedule:
    """The schedule for a job-file mapping, dispatched on ``type:`` through SCHEDULES.

    A mapping with ``start:`` and no ``type:`` is the stop form: the start
    schedule under ``start:``, and ``stop:`` saying when its runs are stopped.
    """
    if not isinstance(jso, dict):
        raise SpecError("", f"expected a schedule mapping, got {_kind(jso)}")
    if "type" not in jso and "start" in jso:
        return _parse_stop_form(jso, calendars)
    name = jso.get("type")
    if name is None:
        known = ", ".join(n for n in SCHEDULES.names() if "." not in n)
        raise SpecError("type", f"missing (required; known: {known})")
    try:
        cls = SCHEDULES.get(name)
    except KeyError as exc:
        raise SpecError("type", exc.args[0]) from None
    return cls.from_jso(jso, calendars)


def _parse_stop_form(jso, calendars) -> Schedule:
    f = Fields(jso, "schedule mapping")

    def start_schedule(value):
        if isinstance(value, dict) and "start" in value and "type" not in value:
            raise SpecError("", "a start schedule cannot have a stop schedule of its own")
        return parse_schedule(value, calendars)

    start = f.take("start", start_schedule)
    stop = f.take("stop", parse_stop)
    f.done()
    return dataclasses.replace(start, stop=stop)


# --------------------------------------------------------------------------
# Stop schedules: when a run that is still running is stopped.


@dataclass(frozen=True)
class StopSchedule:
    """Base of stop schedules: ``stop_time(start)`` for a run due at ``start``."""

    type_name: ClassVar[str] = ""

    def stop_time(self, start: datetime) -> datetime:
        """When the run is stopped; the last instant of year 9999 if that is later."""
        raise NotImplementedError

    def to_jso(self) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class DurationStop(StopSchedule):
    """Stop a run ``duration`` seconds after its schedule time."""

    type_name: ClassVar[str] = "duration"
    duration: float

    def stop_time(self, start):
        try:
            return _as_utc(start) + timedelta(seconds=self.duration)
        except OverflowError:
            return _LAST

    def to_jso(self):
        return {"type": "duration", "duration": self.duration}

    def describe(self):
        return f"stop after {format_duration(self.duration)}"


@dataclass(frozen=True)
class DaytimeStop(StopSchedule):
    """Stop a run at the first ``daytime`` in ``tz`` after its schedule time.

    Daylight saving: a daytime that does not exist that day stops the run
    when the clocks jump past it; a repeated one at its first occurrence
    after the schedule time.
    """

    type_name: ClassVar[str] = "daytime"
    daytime: dtime
    tz: str = "UTC"

    def stop_time(self, start):
        start = _as_utc(start)
        zone = get_tz(self.tz)
        try:
            day = start.astimezone(zone).date() - timedelta(days=1)
            while True:
                for t in localize(datetime.combine(day, self.daytime), zone, "shift", "both"):
                    if t > start:
                        return t
                day += timedelta(days=1)
        except OverflowError:
            return _LAST

    def to_jso(self):
        return {"type": "daytime", "daytime": format_daytime(self.daytime, "minimal"), "tz": self.tz}

    def describe(self):
        return f"stop at {format_daytime(self.daytime, 'minimal')} {self.tz}"


STOP_TYPES = {"duration": DurationStop, "daytime": DaytimeStop}


def parse_stop(jso) -> StopSchedule:
    """A stop schedule: ``{type: duration, duration: 1h}`` or ``{type: daytime, daytime: "17:00", tz: ...}``."""
    f = Fields(jso, "stop schedule mapping")
    name = f.take("type", nonempty_text)
    if name is not None and name not in STOP_TYPES:
        f.error("type", f"unknown stop type {name!r} (known: {', '.join(STOP_TYPES)})")
        name = None
    if name == "duration":
        stop = DurationStop(duration=f.take("duration", positive_duration))
    elif name == "daytime":
        stop = DaytimeStop(daytime=f.take("daytime", parse_daytime),
                           tz=f.take("tz", _zone_name, "UTC"))
    f.done()
    return stop


@SCHEDULES.register("interval", aliases=["apsis.schedule.IntervalSchedule",
                                         "apsis.schedule.interval.IntervalSchedule"])
@dataclass(frozen=True)
class IntervalSchedule(Schedule):
    """A run at every UTC epoch time ``t`` with ``t % interval == phase``.

    Supplies ``time``: the due time in ISO 8601 UTC, e.g. ``2026-11-26T10:05:00Z``.
    """

    type_name: ClassVar[str] = "interval"
    supplies: ClassVar[frozenset] = frozenset({"time"})

    interval: float
    phase: float = 0.0

    @classmethod
    def _read(cls, f):
        interval = f.take("interval", positive_duration)
        phase = f.take("phase", duration, 0.0)
        if interval is not None and phase is not None:
            if _micros(interval) == 0:
                f.error("interval", "must be at least one microsecond")
            elif phase >= interval:
                f.error("phase", f"must be less than the interval ({format_duration(interval)})")
        return {"interval": interval, "phase": phase}

    def _jso(self):
        return {"interval": self.interval, "phase": self.phase}

    def shortest_interval(self):
        return self.interval

    def describe(self):
        text = f"every {format_duration(self.interval)}"
        if self.phase:
            text += f" at +{format_duration(self.phase)}"
        return text

    def times(self, start):
        # Integer microseconds since the epoch keep the arithmetic exact for
        # fractional intervals, and the first due time is computed directly.
        step, phase = _micros(self.interval), _micros(self.phase)
        s = (_as_utc(start) - _EPOCH) // _MICRO
        t = -((phase - s) // step) * step + phase  # ceil((s - phase) / step) * step + phase
        while t <= _LAST_MICROS:
            due = _EPOCH + timedelta(microseconds=t)
            yield due, self._args({"time": to_iso(due)})
            t += step


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


# --------------------------------------------------------------------------
# Wall-clock schedules and daylight saving.
#
# daily, daily-interval and cron compute wall-clock times in their zone and
# turn each into UTC instants with ``timeutil.localize``: a time in a
# spring-forward gap is shifted to the instant the clocks jump (``gap:
# shift``) or dropped (``gap: skip``); a time in a fall-back repeat runs at
# its first occurrence (``repeat: first``) or at both (``repeat: both``).
# ``_resolve`` then puts the instants in order and runs an instant once.


@dataclass(frozen=True)
class Dst:
    """A schedule's daylight-saving choices; None leaves the schedule type's default."""

    gap: str | None = None
    repeat: str | None = None

    def to_jso(self):
        return {k: v for k, v in (("gap", self.gap), ("repeat", self.repeat)) if v is not None}


def _choice(choices):
    def convert(value):
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {_kind(value)}")
        return value
    return convert


def parse_dst(value) -> Dst:
    """``dst: {gap: shift|skip, repeat: first|both}``; either key may be left out."""
    f = Fields(value, "dst mapping")
    gap = f.take("gap", _choice(GAP_CHOICES), None)
    repeat = f.take("repeat", _choice(REPEAT_CHOICES), None)
    f.done()
    return Dst(gap, repeat)


def _naive_start(start: datetime, zone) -> datetime:
    """The earliest wall-clock time in ``zone`` whose run could fall at or after ``start``.

    Usually ``start``'s own local time; less by the length of a transition
    near ``start`` (a repeated hour just after it, or a gap just before it),
    whose wall-clock times come before ``start``'s but whose instants do not.
    """
    offsets = [(start + d).astimezone(zone).utcoffset() for d in (-_NEAR, timedelta(0), _NEAR)]
    return (start + min(offsets)).replace(tzinfo=None)


_NEAR = timedelta(hours=3)  # longer than any daylight-saving shift in use


def _resolve(items, zone, gap, repeat, start):
    """``(utc, payload)`` for wall-clock ``(naive, payload)`` items given in non-decreasing order.

    Yields instants ``>= start``, strictly increasing: several wall-clock times
    on one instant (times shifted out of a gap) run once, with the first's
    payload. Instants of a repeated hour's second occurrence come out of
    order, so they wait in a heap until no later wall-clock time can come
    before them: every instant of a wall-clock time ``>= n`` is at or after
    ``first_instant_at(n)``.
    """
    heap, seq, last = [], 0, None
    for naive, payload in items:
        bound = first_instant_at(naive, zone)
        while heap and heap[0][0] <= bound:
            t, _, p = heapq.heappop(heap)
            if t >= start and (last is None or t > last):
                last = t
                yield t, p
        for t in localize(naive, zone, gap, repeat):
            heapq.heappush(heap, (t, seq, payload))
            seq += 1
    while heap:
        t, _, p = heapq.heappop(heap)
        if t >= start and (last is None or t > last):
            last = t
            yield t, p


def _calendar(value, calendars):
    library = calendars if calendars is not None else DEFAULT_LIBRARY
    try:
        return library.parse(nonempty_text(value))
    except CalendarError as exc:
        raise ValueError(str(exc)) from None


def _whole_days(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number of days, got {_kind(value)}")
    return value


def _date_shift(value) -> int:
    days = _whole_days(value)
    if abs(days) > MAX_DATE_SHIFT:
        raise ValueError(f"out of range: {days} (at most {MAX_DATE_SHIFT:,} days either way)")
    return days


def _cal_shift(value) -> int:
    dates = _whole_days(value)
    if abs(dates) > MAX_CAL_SHIFT:
        raise ValueError(f"out of range: {dates} (at most {MAX_CAL_SHIFT:,} calendar dates either way)")
    return dates


def _daytimes(value) -> tuple:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("expected at least one daytime")
    out, problems = set(), []
    for i, v in enumerate(items):
        try:
            out.add(parse_daytime(v))
        except ValueError as exc:
            problems.append((f"[{i}]" if isinstance(value, list) else "", str(exc)))
    if problems:
        raise SpecError(problems=problems)
    return tuple(sorted(out))


def _zone_name(value) -> str:
    name = nonempty_text(value)
    get_tz(name)
    return name


def _describe_shifts(cal_shift, date_shift) -> str:
    text = ""
    if cal_shift:
        text += f" {cal_shift:+d} calendar days"
    if date_shift:
        text += f" {date_shift:+d} days"
    return text


@dataclass(frozen=True)
class _WallClock(Schedule):
    """Common parts of daily and daily-interval: zone, calendar, shifts, dst."""

    default_dst: ClassVar[tuple] = ("shift", "first")

    tz: str = "UTC"
    calendar: Calendar = ALL
    date_shift: int = 0
    cal_shift: int = 0
    dst: Dst | None = None

    @classmethod
    def _read_common(cls, f):
        calendars = getattr(f, "calendars", None)
        return {
            "tz": f.take("tz", _zone_name, "UTC"),
            "calendar": f.take("calendar", lambda v: _calendar(v, calendars), ALL),
            "date_shift": f.take("date_shift", _date_shift, 0),
            "cal_shift": f.take("cal_shift", _cal_shift, 0),
            "dst": f.take("dst", parse_dst, None),
        }

    def _jso_common(self):
        jso = {"tz": self.tz, "calendar": str(self.calendar),
               "date_shift": self.date_shift, "cal_shift": self.cal_shift}
        if self.dst is not None:
            jso["dst"] = self.dst.to_jso()
        return jso

    def _dst_choice(self):
        gap, repeat = self.default_dst
        if self.dst is not None:
            gap, repeat = self.dst.gap or gap, self.dst.repeat or repeat
        return gap, repeat

    def _run_date(self, cal, nominal, cal_shift=0, date_shift=0):
        """The date a nominal date runs on: calendar shift first, then plain days."""
        return (cal.shift(nominal, self.cal_shift + cal_shift)
                + timedelta(days=self.date_shift + date_shift))

    def _nominal_dates(self, first_run_date, lead=0):
        """Calendar dates in order, from one whose run date may be before ``first_run_date``."""
        cal = self.calendar
        target = first_run_date - timedelta(days=self.date_shift + lead + 1)
        d = cal.on_or_before(target)
        if d is not None:
            try:
                d = cal.shift(d, -self.cal_shift)
            except CalendarError:
                d = None
        if d is None:
            bounds = cal._bounds()
            d = cal.on_or_after(bounds[0] if bounds else target)
        while d is not None:
            yield d
            d = cal.on_or_after(d + _DAY)

    def _wall_args(self, t, zone, nominal, daytime):
        return self._args({
            "date": nominal.isoformat(),
            "time": t.astimezone(zone).isoformat(),
            "daytime": format_daytime(daytime),
            "tz": self.tz,
            "calendar": str(self.calendar),
        })

    def _describe_common(self):
        text = f" {self.tz}"
        if self.calendar != ALL:
            text = f" on {self.calendar}" + text
        text += _describe_shifts(self.cal_shift, self.date_shift)
        if self.dst is not None:
            text += f" (dst: {', '.join(f'{k} {v}' for k, v in self.dst.to_jso().items())})"
        return text


_DAY = timedelta(days=1)
_SUPPLIES_WALL = frozenset({"date", "time", "daytime", "tz", "calendar"})


@SCHEDULES.register("daily", aliases=["apsis.schedule.DailySchedule",
                                      "apsis.schedule.daily.DailySchedule"])
@dataclass(frozen=True)
class DailySchedule(_WallClock):
    """Runs at one or more daytimes on each date of a calendar, in a zone.

    ``cal_shift`` moves the run that many calendar dates, then ``date_shift``
    that many days; the ``date`` arg stays the nominal date. Supplies
    ``date``, ``time`` (the run's local time with offset), ``daytime``,
    ``tz`` and ``calendar``.

    Daylight saving (default ``dst: {gap: shift, repeat: first}``): each
    daytime of each date runs exactly once. A daytime that does not exist
    that day runs when the clocks jump (02:30 in New York on its spring day
    runs at 03:00 EDT); one that occurs twice runs at its first occurrence.
    ``gap: skip`` drops the run instead; ``repeat: both`` runs at both.
    """

    type_name: ClassVar[str] = "daily"
    supplies: ClassVar[frozenset] = _SUPPLIES_WALL

    daytimes: tuple = ()

    @classmethod
    def _read(cls, f):
        return {"daytimes": f.take("daytime", _daytimes), **cls._read_common(f)}

    def _jso(self):
        return {"daytime": [format_daytime(d, "minimal") for d in self.daytimes], **self._jso_common()}

    def describe(self):
        at = ", ".join(format_daytime(d, "minimal") for d in self.daytimes)
        return f"daily at {at}" + self._describe_common()

    def times(self, start):
        return _until_out_of_range(self._times(_as_utc(start)))

    def _times(self, start):
        zone = get_tz(self.tz)
        gap, repeat = self._dst_choice()
        for t, (nominal, daytime) in _resolve(
                self._slots(_naive_start(start, zone).date()), zone, gap, repeat, start):
            yield t, self._wall_args(t, zone, nominal, daytime)

    def _slots(self, first_run_date):
        cal = self.calendar
        for nominal in self._nominal_dates(first_run_date):
            try:
                run_date = self._run_date(cal, nominal)
            except (CalendarError, OverflowError):
                return  # the calendar ends within the shift
            for daytime in self.daytimes:
                yield datetime.combine(run_date, daytime), (nominal, daytime)


@dataclass(frozen=True)
class WindowEnd:
    """One end of a daily-interval window: a daytime, with its own shifts."""

    daytime: dtime
    date_shift: int = 0
    cal_shift: int = 0

    def to_jso(self):
        if not self.date_shift and not self.cal_shift:
            return format_daytime(self.daytime, "minimal")
        return {"daytime": format_daytime(self.daytime, "minimal"),
                "date_shift": self.date_shift, "cal_shift": self.cal_shift}

    def describe(self):
        return format_daytime(self.daytime, "minimal") + _describe_shifts(self.cal_shift, self.date_shift)


def _window_end(value) -> WindowEnd:
    if not isinstance(value, dict):
        return WindowEnd(parse_daytime(value))
    f = Fields(value, "daytime or mapping")
    end = WindowEnd(f.take("daytime", parse_daytime), f.take("date_shift", _date_shift, 0),
                    f.take("cal_shift", _cal_shift, 0))
    f.done()
    return end


@SCHEDULES.register("daily-interval", aliases=["apsis.schedule.DailyIntervalSchedule",
                                               "apsis.schedule.daily_interval.DailyIntervalSchedule"])
@dataclass(frozen=True)
class DailyIntervalSchedule(_WallClock):
    """Runs every ``interval`` from ``start`` (included) to ``stop`` (excluded) each calendar date.

    Slots are wall-clock times ``start + k * interval``. ``start`` and
    ``stop`` are daytimes, or mappings ``{daytime, date_shift, cal_shift}``
    for a window that ends on a later date (``stop: {daytime: "02:00",
    date_shift: 1}``); the schedule's own shifts move the whole window.
    Supplies the same args as daily, ``daytime`` being the slot's.

    Daylight saving: as daily (default ``{gap: shift, repeat: first}``),
    slot by slot: slots in a gap run once when the clocks jump, with the
    first such slot's args (a slot at the jump itself is the same run), and
    the repeated hour's slots run once. ``repeat: both`` runs them at both
    offsets, i.e. every ``interval`` of elapsed time.
    """

    type_name: ClassVar[str] = "daily-interval"
    supplies: ClassVar[frozenset] = _SUPPLIES_WALL

    start: WindowEnd = None
    stop_at: WindowEnd = None
    interval: float = 0.0

    @classmethod
    def _read(cls, f):
        start = f.take("start", _window_end)
        stop = f.take("stop", _window_end)
        interval = f.take("interval", positive_duration)
        common = cls._read_common(f)
        if interval is not None and _micros(interval) == 0:
            f.error("interval", "must be at least one microsecond")
        if start is not None and stop is not None and not start.cal_shift and not stop.cal_shift:
            # The daytimes' difference first: a day's shift added to date.min could leave the range of dates.
            length = (datetime.combine(date.min, stop.daytime) - datetime.combine(date.min, start.daytime)
                      + timedelta(days=stop.date_shift - start.date_shift))
            if length <= timedelta(0):
                f.error("stop", "must be after start (for a window past midnight, "
                                "write stop: {daytime: ..., date_shift: 1})")
        return {"start": start, "stop_at": stop, "interval": interval, **common}

    def _jso(self):
        return {"start": self.start.to_jso(), "stop": self.stop_at.to_jso(),
                "interval": self.interval, **self._jso_common()}

    def shortest_interval(self):
        return self.interval

    def describe(self):
        return (f"every {format_duration(self.interval)} from {self.start.describe()} "
                f"to {self.stop_at.describe()}" + self._describe_common())

    def times(self, start):
        return _until_out_of_range(self._times(_as_utc(start)))

    def _times(self, start):
        zone = get_tz(self.tz)
        gap, repeat = self._dst_choice()
        for t, (nominal, daytime) in _resolve(
                self._slots(_naive_start(start, zone)), zone, gap, repeat, start):
            yield t, self._wall_args(t, zone, nominal, daytime)

    def _windows(self, begin):
        cal = self.calendar
        lead = max(0, self.start.date_shift - self.stop_at.date_shift) + 1
        for nominal in self._nominal_dates(begin.date(), lead):
            try:
                w0 = datetime.combine(self._run_date(cal, nominal, self.start.cal_shift,
                                                     self.start.date_shift), self.start.daytime)
                w1 = datetime.combine(self._run_date(cal, nominal, self.stop_at.cal_shift,
                                                     self.stop_at.date_shift), self.stop_at.daytime)
            except (CalendarError, OverflowError):
                return
            yield nominal, w0, w1

    def _slots(self, begin):
        """Wall-clock slots of all windows in order; windows may overlap, so they are merged."""
        step = timedelta(microseconds=_micros(self.interval))

        def window(nominal, w0, w1):
            # Skip slots before ``begin`` by arithmetic, not one by one.
            k = max(0, -((w0 - begin) // step)) if w0 < begin else 0
            n = w0 + k * step
            while n < w1:
                yield n, (nominal, n.time())
                n += step

        active, seq, empty = [], 0, 0
        for nominal, w0, w1 in self._windows(begin):
            while active and active[0][0] < w0:
                yield from _advance(active)
            it = window(nominal, w0, w1)
            first = next(it, None)
            if first is not None:
                heapq.heappush(active, (first[0], seq, first[1], it))
                seq += 1
                empty = 0
            else:
                empty += 1
                if empty >= _EMPTY_WINDOWS and not active:
                    return  # the shifts leave no window open: nothing more is due


def _until_out_of_range(items):
    """``items`` until computing the next one leaves the range of dates (year 9999): no later times."""
    try:
        yield from items
    except OverflowError:
        return


def _advance(active):
    """Yield the heap's first item and put its iterator's next one back."""
    naive, seq, payload, it = heapq.heappop(active)
    yield naive, payload
    nxt = next(it, None)
    if nxt is not None:
        heapq.heappush(active, (nxt[0], seq, nxt[1], it))


_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _cron_expr(value) -> str:
    expr = " ".join(nonempty_text(value).split())
    if expr.startswith("@"):
        try:
            expanded = _MACROS[expr.lower()]
        except KeyError:
            raise ValueError(
                f"unknown cron macro {expr!r} (known: {', '.join(_MACROS)})") from None
    else:
        expanded = expr.upper()  # cronsim knows only upper-case names
    try:
        CronSim(expanded, datetime(2000, 1, 1))  # validates the fields
    except CronSimError as exc:
        raise ValueError(f"bad cron expression {expr!r}: {exc}") from None
    return expr


def _expand_cron(expr: str) -> str:
    return _MACROS[expr.lower()] if expr.startswith("@") else expr.upper()


@SCHEDULES.register("cron")
@dataclass(frozen=True)
class CronSchedule(Schedule):
    """A cron expression evaluated in ``tz`` by cronsim (5 fields, or 6 with seconds first).

    Macros ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``;
    month and weekday names in any case; ranges and steps. Day-of-month and
    day-of-week follow cron's OR rule when both are restricted. Supplies
    ``time`` (ISO 8601 in the zone, with its offset) and ``date`` (the
    local date).

    Daylight saving, the default depending on the expression as in Debian
    cron, for 5- and 6-field expressions alike (``dst:`` overrides it):

    * Minute and hour fields both fixed (neither starts with ``*``, e.g.
      ``30 2 * * *``, ``@daily``): wall-clock times, ``{gap: shift, repeat:
      first}``. A time that does not exist runs once when the clocks jump
      (02:30 becomes 03:00 EDT; several such times run once); a repeated
      time runs once, at its first occurrence.
    * Otherwise (``*/15 * * * *``, ``30 * * * *``, ``@hourly``): elapsed
      time, ``{gap: skip, repeat: both}``. Nothing runs in the hour that
      does not exist, and the repeated hour runs at both offsets: runs stay
      an hour (or 15 minutes) of real time apart.
    """

    type_name: ClassVar[str] = "cron"
    supplies: ClassVar[frozenset] = frozenset({"time", "date"})

    expr: str
    tz: str = "UTC"
    dst: Dst | None = None

    @classmethod
    def _read(cls, f):
        return {"expr": f.take("expr", _cron_expr), "tz": f.take("tz", _zone_name, "UTC"),
                "dst": f.take("dst", parse_dst, None)}

    def _jso(self):
        jso = {"expr": self.expr, "tz": self.tz}
        if self.dst is not None:
            jso["dst"] = self.dst.to_jso()
        return jso

    def describe(self):
        text = f"cron '{self.expr}' in {self.tz}"
        if self.dst is not None:
            text += f" (dst: {', '.join(f'{k} {v}' for k, v in self.dst.to_jso().items())})"
        return text

    def dst_choice(self) -> tuple:
        """The (gap, repeat) rule in force: the expression's default, overridden by ``dst:``."""
        fields = _expand_cron(self.expr).split()
        wall = not (fields[-5].startswith("*") or fields[-4].startswith("*"))
        gap, repeat = ("shift", "first") if wall else ("skip", "both")
        if self.dst is not None:
            gap, repeat = self.dst.gap or gap, self.dst.repeat or repeat
        return gap, repeat

    def times(self, start):
        return _until_out_of_range(self._times(_as_utc(start)))

    def _times(self, start):
        zone = get_tz(self.tz)
        gap, repeat = self.dst_choice()
        # cronsim yields wall-clock times strictly after the one it is given.
        base = _naive_start(start, zone).replace(microsecond=0) - _SECOND
        naive_times = ((n, None) for n in CronSim(_expand_cron(self.expr), base))
        for t, _ in _resolve(naive_times, zone, gap, repeat, start):
            local = t.astimezone(zone)
            yield t, self._args({"time": local.isoformat(), "date": local.date().isoformat()})


def _explicit_times(value, tz) -> tuple:
    if not isinstance(value, list):
        value = [value]
    if not value:
        raise ValueError("expected at least one time")
    out, problems = set(), []
    probe = timezone(timedelta(hours=12))
    for i, v in enumerate(value):
        try:
            if isinstance(v, str) and v.strip().lower() == "now":
                raise ValueError("'now' is not a fixed time")
            if isinstance(v, date) and not isinstance(v, datetime):
                raise ValueError(f"a date, not a time: {v.isoformat()!r}")
            t = parse_time(v, tz or UTC)
            # A time without a zone parses differently with another default zone.
            if tz is None and parse_time(v, probe) != t:
                raise ValueError(f"no time zone in {_show(v)}; add one or give tz:")
            if not EXPLICIT_FIRST_YEAR <= t.year <= EXPLICIT_LAST_YEAR:
                raise ValueError(f"out of range: {_show(v)} (times must be in the years "
                                 f"{EXPLICIT_FIRST_YEAR} to {EXPLICIT_LAST_YEAR})")
            out.add(t)
        except ValueError as exc:
            problems.append((f"[{i}]", str(exc)))
    if problems:
        raise SpecError(problems=problems)
    return tuple(sorted(out))


def _show(v) -> str:
    return repr(v.isoformat() if isinstance(v, datetime) else v)


@SCHEDULES.register("explicit", aliases=["apsis.schedule.ExplicitSchedule",
                                         "apsis.schedule.explicit.ExplicitSchedule"])
@dataclass(frozen=True)
class ExplicitSchedule(Schedule):
    """Runs at a list of absolute times. Supplies ``time`` (ISO 8601 UTC).

    A time written without a zone is in ``tz:``, and is an error without it.
    Duplicates are run once; order in the file does not matter.
    """

    type_name: ClassVar[str] = "explicit"
    supplies: ClassVar[frozenset] = frozenset({"time"})

    at: tuple
    tz: str | None = None

    @classmethod
    def _read(cls, f):
        tz = f.take("tz", _zone_name, None)
        zone = get_tz(tz) if tz else None
        return {"at": f.take("times", lambda v: _explicit_times(v, zone)), "tz": tz}

    def _jso(self):
        jso = {"times": [to_iso(t) for t in self.at]}
        if self.tz:
            jso["tz"] = self.tz
        return jso

    def describe(self):
        ts = [to_iso(t) for t in self.at]
        if len(ts) <= 3:
            return "at " + ", ".join(ts)
        return f"at {len(ts)} times from {ts[0]} to {ts[-1]}"

    def times(self, start):
        start = _as_utc(start)
        for t in self.at:
            if t >= start:
                yield t, self._args({"time": to_iso(t)})

"""Schedule types: pure iterators over due times. No I/O, no clock reads.

A schedule is parsed from its job-file mapping with ``parse_schedule(jso)``;
``times(start)`` then yields ``(time, args)`` pairs, time an aware UTC
datetime ``>= start`` in increasing order, args the strings the schedule
supplies (``time``, ``date``, ...) overlaid with its own ``args:``.

This module also holds the small strict-mapping reader (``Fields``,
``SpecError``) that programs, conditions and actions use too: it is the
first of those modules in the import order, so they can share it without a
cycle.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import ClassVar, Iterator

from cronsim import CronSim, CronSimError

from .registry import SCHEDULES
from .timeutil import UTC, format_duration, get_tz, parse_duration, parse_time, to_iso

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


def _as_utc(t: datetime) -> datetime:
    if not isinstance(t, datetime) or t.tzinfo is None:
        raise ValueError(f"start must be an aware datetime, got {t!r}")
    return t.astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    """Base of schedule types: common ``enabled`` and ``args``.

    Subclasses set ``type_name`` and ``supplies`` (the args they fill in
    themselves), implement ``_read(fields) -> kwargs``, ``_jso()``,
    ``describe()`` and ``times()``, and register with SCHEDULES.
    ``times()`` ignores ``enabled``: a disabled schedule can still be shown.
    """

    type_name: ClassVar[str] = ""
    supplies: ClassVar[frozenset] = frozenset()

    enabled: bool = field(default=True, kw_only=True)
    args: dict = field(default_factory=dict, kw_only=True)

    @classmethod
    def from_jso(cls, jso) -> "Schedule":
        """Parse a schedule mapping strictly; SpecError lists every problem.

        On the base class this dispatches on ``type:`` like ``parse_schedule``.
        """
        if cls is Schedule:
            return parse_schedule(jso)
        f = Fields(jso, "schedule mapping")
        f.take("type", default=None)  # already used for dispatch
        enabled = f.take("enabled", flag, True)
        args = f.take("args", string_map, {})
        kwargs = cls._read(f)
        f.done()
        return cls(enabled=enabled, args=args, **kwargs)

    @classmethod
    def _read(cls, f: Fields) -> dict:
        raise NotImplementedError

    def to_jso(self) -> dict:
        return {"type": self.type_name, "enabled": self.enabled,
                "args": dict(self.args), **self._jso()}

    def _jso(self) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def times(self, start: datetime) -> Iterator[tuple[datetime, dict]]:
        raise NotImplementedError

    def _args(self, supplied: dict) -> dict:
        # The schedule's own args: win over what it supplies: they were
        # written on purpose.
        return {**supplied, **self.args} if self.args else supplied


def parse_schedule(jso) -> Schedule:
    """The schedule for a job-file mapping, dispatched on ``type:`` through SCHEDULES."""
    if not isinstance(jso, dict):
        raise SpecError("", f"expected a schedule mapping, got {_kind(jso)}")
    name = jso.get("type")
    if name is None:
        known = ", ".join(n for n in SCHEDULES.names() if "." not in n)
        raise SpecError("type", f"missing (required; known: {known})")
    try:
        cls = SCHEDULES.get(name)
    except KeyError as exc:
        raise SpecError("type", exc.args[0]) from None
    return cls.from_jso(jso)


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
        while True:
            due = _EPOCH + timedelta(microseconds=t)
            yield due, self._args({"time": to_iso(due)})
            t += step


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


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


def _zone_name(value) -> str:
    name = nonempty_text(value)
    get_tz(name)
    return name


@SCHEDULES.register("cron")
@dataclass(frozen=True)
class CronSchedule(Schedule):
    """A cron expression evaluated in ``tz`` by cronsim (5 fields, or 6 with seconds first).

    Day-of-month and day-of-week follow cron's OR rule when both are
    restricted. Supplies ``time`` (ISO 8601 in the zone, with its offset)
    and ``date`` (the local date).

    Daylight saving, one rule for 5- and 6-field expressions alike:

    * If the minute and hour fields are both fixed (neither starts with
      ``*``), the expression names wall-clock times (Debian cron's rule,
      which cronsim applies to 5-field expressions): a time that does not
      exist (spring forward) runs once at the first minute after the gap,
      e.g. 02:30 becomes 03:00 EDT; a time that occurs twice (fall back)
      runs once, at its first occurrence (e.g. 01:30 EDT, not 01:30 EST).
      Several missing times collapse into that one run.
    * Otherwise (e.g. ``*/15 * * * *``, ``30 * * * *``) it means elapsed
      time: nothing runs in the hour that does not exist, and the repeated
      hour runs twice, once at each offset, as every real instant matching
      the fields does.
    """

    type_name: ClassVar[str] = "cron"
    supplies: ClassVar[frozenset] = frozenset({"time", "date"})

    expr: str
    tz: str = "UTC"

    @classmethod
    def _read(cls, f):
        return {"expr": f.take("expr", _cron_expr), "tz": f.take("tz", _zone_name, "UTC")}

    def _jso(self):
        return {"expr": self.expr, "tz": self.tz}

    def describe(self):
        return f"cron '{self.expr}' in {self.tz}"

    def times(self, start):
        start = _as_utc(start)
        zone = get_tz(self.tz)
        expr = _expand_cron(self.expr)
        fields = expr.split()
        minute, hour = fields[-5], fields[-4]
        # cronsim yields times strictly after the time it is given.
        base = (start + (_SECOND - _MICRO)).replace(microsecond=0) - _SECOND
        last = None
        if zone is UTC or minute.startswith("*") or hour.startswith("*"):
            # Elapsed time: cronsim ticks through UTC, so every real instant
            # is considered once.
            for local in CronSim(expr, base.astimezone(zone)):
                t = local.astimezone(UTC)
                if t >= start and (last is None or t > last):
                    last = t
                    yield t, self._cron_args(local)
        else:
            # Wall clock: iterate naive local times, then place each one.
            for naive in CronSim(expr, base.astimezone(zone).replace(tzinfo=None)):
                local = _place(naive, zone)
                t = local.astimezone(UTC)
                # A start inside the repeated hour can put the first
                # occurrence of a time before start: it has already run.
                if t >= start and (last is None or t > last):
                    last = t
                    yield t, self._cron_args(local)

    def _cron_args(self, local):
        return self._args({"time": local.isoformat(), "date": local.date().isoformat()})


def _place(naive: datetime, zone) -> datetime:
    """The aware time for a wall-clock time: first occurrence if repeated, else the first minute after a gap."""
    local = naive.replace(tzinfo=zone, fold=0)
    while local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
        naive = naive.replace(second=0) + timedelta(minutes=1)
        local = naive.replace(tzinfo=zone, fold=0)
    return local


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

"""The ``explicit`` schedule: a list of absolute times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import ClassVar

from apsis_lite.model.fields import SpecError, _zone_name
from apsis_lite.model.registry import SCHEDULES
from apsis_lite.model.schedules.base import Schedule
from apsis_lite.model.schedules.instants import _as_utc
from apsis_lite.timeutil import UTC, get_tz, parse_time, to_iso

# Times an explicit schedule may hold: within the range of dates every
# schedule's arithmetic stays in.
EXPLICIT_FIRST_YEAR, EXPLICIT_LAST_YEAR = 1970, 9999


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

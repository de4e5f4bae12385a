"""The ``daily`` schedule: one or more daytimes on each date of a calendar, in a zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from apsis_lite.model.calendars import CalendarError
from apsis_lite.model.fields import SpecError
from apsis_lite.model.registry import SCHEDULES
from apsis_lite.model.schedules.dst import _naive_start, _resolve
from apsis_lite.model.schedules.instants import _as_utc, _until_out_of_range
from apsis_lite.model.schedules.wallclock import _SUPPLIES_WALL, _WallClock
from apsis_lite.timeutil import format_daytime, format_duration, get_tz, parse_daytime, parse_duration

# apsis's time_shift moves every due time by at most this much (date_shift moves by days).
MAX_TIME_SHIFT = 86400.0


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


def _time_shift(value) -> float:
    """Signed seconds: ``15s``, ``-2 min``, or a number; at most a day either way."""
    negative = isinstance(value, str) and value.strip().startswith("-")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        negative, value = True, -value
    seconds = parse_duration(value.strip()[1:] if negative and isinstance(value, str) else value)
    if seconds > MAX_TIME_SHIFT:
        raise ValueError(f"at most a day either way, not {value!r} (date_shift moves by days)")
    return -seconds if negative else seconds


@SCHEDULES.register("daily", aliases=["apsis.schedule.DailySchedule",
                                      "apsis.schedule.daily.DailySchedule"])
@dataclass(frozen=True)
class DailySchedule(_WallClock):
    """Runs at one or more daytimes on each date of a calendar, in a zone.

    ``cal_shift`` moves the run that many calendar dates, then ``date_shift``
    that many days; the ``date`` arg stays the nominal date. Supplies
    ``date``, ``time`` (the run's local time with offset), ``daytime``,
    ``tz`` and ``calendar``. ``time_shift`` (apsis's; a signed duration of
    at most a day) moves every due time by that much, after the rest; the
    args stay those of the time before the shift.

    Daylight saving (default ``dst: {gap: shift, repeat: first}``): each
    daytime of each date runs exactly once. A daytime that does not exist
    that day runs when the clocks jump (02:30 in New York on its spring day
    runs at 03:00 EDT); one that occurs twice runs at its first occurrence.
    ``gap: skip`` drops the run instead; ``repeat: both`` runs at both.
    """

    type_name: ClassVar[str] = "daily"
    supplies: ClassVar[frozenset] = _SUPPLIES_WALL

    daytimes: tuple = ()
    time_shift: float = 0.0

    @classmethod
    def _read(cls, f):
        return {"daytimes": f.take("daytime", _daytimes),
                "time_shift": f.take("time_shift", _time_shift, 0.0), **cls._read_common(f)}

    def _jso(self):
        jso = {"daytime": [format_daytime(d, "minimal") for d in self.daytimes], **self._jso_common()}
        if self.time_shift:
            jso["time_shift"] = self.time_shift
        return jso

    def describe(self):
        at = ", ".join(format_daytime(d, "minimal") for d in self.daytimes)
        text = f"daily at {at}" + self._describe_common()
        if self.time_shift:
            text += f" {'-' if self.time_shift < 0 else '+'}{format_duration(abs(self.time_shift))}"
        return text

    def times(self, start):
        return _until_out_of_range(self._shifted(_as_utc(start)))

    def _shifted(self, start):
        if not self.time_shift:
            yield from self._times(start)
            return
        shift = timedelta(seconds=self.time_shift)
        for t, args in self._times(start - shift):
            yield t + shift, args

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

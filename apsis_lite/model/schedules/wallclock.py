"""What the wall-clock schedules on calendar dates share: zone, calendar, shifts and dst.

``_WallClock`` is the base of daily and daily-interval: it reads and writes
``tz``, ``calendar``, ``date_shift``, ``cal_shift`` and ``dst``, finds the
nominal calendar dates from a start, moves each to its run date, and fills
in the args both supply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from apsis_lite.model.calendars import ALL, DEFAULT_LIBRARY, Calendar, CalendarError
from apsis_lite.model.fields import _kind, _zone_name, nonempty_text
from apsis_lite.model.schedules.base import Schedule
from apsis_lite.model.schedules.dst import Dst, parse_dst
from apsis_lite.timeutil import format_daytime

# Bounds that keep every schedule's arithmetic inside the range of dates and
# each due time cheap to compute (a calendar shift steps date by date).
MAX_DATE_SHIFT = 3660     # days, about ten years
MAX_CAL_SHIFT = 366       # calendar dates


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

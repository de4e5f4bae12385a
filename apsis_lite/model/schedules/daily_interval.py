"""The ``daily-interval`` schedule: every interval within a daily window, on each date of a calendar.

A window may end on a later date than it starts (``WindowEnd`` carries its
own shifts); overlapping windows are merged slot by slot.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta
from typing import ClassVar

from apsis_lite.model.calendars import CalendarError
from apsis_lite.model.fields import Fields, positive_duration
from apsis_lite.model.registry import SCHEDULES
from apsis_lite.model.schedules.dst import _naive_start, _resolve
from apsis_lite.model.schedules.instants import _as_utc, _micros, _until_out_of_range
from apsis_lite.model.schedules.wallclock import (
    _SUPPLIES_WALL, _WallClock, _cal_shift, _date_shift, _describe_shifts,
)
from apsis_lite.timeutil import format_daytime, format_duration, get_tz, localize, parse_daytime

# A daily-interval schedule whose windows stay empty this many dates in a row
# (shifts that put every stop before its start) has no more due times.
_EMPTY_WINDOWS = 100


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
    offsets, i.e. every ``interval`` of elapsed time. ``gap: skip`` is
    apsis's rule: a date whose window start does not exist has no runs at
    all; on other dates, slots in a gap are dropped.
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
        skip_window = None
        if gap == "skip":
            def skip_window(w0):
                return not localize(w0, zone, "skip", repeat)
        for t, (nominal, daytime) in _resolve(
                self._slots(_naive_start(start, zone), skip_window), zone, gap, repeat, start):
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

    def _slots(self, begin, skip_window=None):
        """Wall-clock slots of all windows in order; windows may overlap, so they are merged.

        ``skip_window(w0)``: True for a window left out whole (its start is in a gap).
        """
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
            if skip_window is not None and skip_window(w0):
                continue
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


def _advance(active):
    """Yield the heap's first item and put its iterator's next one back."""
    naive, seq, payload, it = heapq.heappop(active)
    yield naive, payload
    nxt = next(it, None)
    if nxt is not None:
        heapq.heappush(active, (nxt[0], seq, nxt[1], it))

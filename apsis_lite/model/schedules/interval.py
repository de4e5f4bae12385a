"""The ``interval`` schedule: a run every fixed length of elapsed time, at a phase from the epoch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from apsis_lite.model.fields import duration, positive_duration
from apsis_lite.model.registry import SCHEDULES
from apsis_lite.model.schedules.base import Schedule
from apsis_lite.model.schedules.instants import _EPOCH, _LAST_MICROS, _MICRO, _as_utc, _micros
from apsis_lite.timeutil import format_daytime, format_duration, to_iso


@SCHEDULES.register("interval", aliases=["apsis.schedule.IntervalSchedule",
                                         "apsis.schedule.interval.IntervalSchedule"])
@dataclass(frozen=True)
class IntervalSchedule(Schedule):
    """A run at every UTC epoch time ``t`` with ``t % interval == phase``.

    Supplies ``time``: the due time in ISO 8601 UTC, e.g. ``2026-11-26T10:05:00Z``;
    and, as apsis's does, ``date`` and ``daytime``: its UTC date and time of day.
    """

    type_name: ClassVar[str] = "interval"
    supplies: ClassVar[frozenset] = frozenset({"time", "date", "daytime"})

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
            yield due, self._args({"time": to_iso(due), "date": due.date().isoformat(),
                                   "daytime": format_daytime(due.time())})
            t += step

"""Stop schedules: when a run that is still running is stopped.

A schedule in the ``start:``/``stop:`` form carries one; the engine asks
its ``stop_time(start)`` for each run the start schedule makes due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time as dtime, timedelta
from typing import ClassVar

from apsis_lite.model.fields import Fields, _zone_name, nonempty_text, positive_duration
from apsis_lite.model.schedules.instants import _LAST, _as_utc
from apsis_lite.timeutil import format_daytime, format_duration, get_tz, localize, parse_daytime


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

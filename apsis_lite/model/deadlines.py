"""A job's ``deadline:`` and ``max_duration:``: alarms, not limits.

```yaml
deadline: {daytime: "08:00", tz: Europe/London, date_shift: 0}
max_duration: 2h                       # or {duration: 2h, stop: true}
```

A deadline says "a run of this job with these args must have succeeded by
08:00 London time on the run's date (plus ``date_shift`` days)". The run's
date is its ``date`` arg when it has one in ``YYYY-MM-DD`` form, else the
local date (in ``tz``) of its scheduled time. ``max_duration`` says a run must
not be running longer than this. When either is missed, the run's log says
so and the job's failure actions fire; the run itself carries on, unless
``max_duration`` says ``stop: true``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime

from apsis_lite.model.fields import Fields, _kind, flag, positive_duration
from apsis_lite.model.schedules.wallclock import MAX_DATE_SHIFT
from apsis_lite.timeutil import (
    format_daytime,
    format_duration,
    from_epoch,
    get_tz,
    localize,
    parse_daytime,
)


def _daytime(value) -> dtime:
    return parse_daytime(value)


def _zone(value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a time zone name such as Europe/London, got {_kind(value)}")
    get_tz(value)
    return value


def _days(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number of days, got {_kind(value)}")
    if abs(value) > MAX_DATE_SHIFT:
        raise ValueError(f"out of range: {value} (at most {MAX_DATE_SHIFT:,} days either way)")
    return value


@dataclass(frozen=True)
class Deadline:
    daytime: dtime
    tz: str = "UTC"
    date_shift: int = 0

    @classmethod
    def from_jso(cls, jso) -> Deadline:
        """Parse strictly; SpecError lists every problem."""
        f = Fields(jso, "deadline mapping (daytime, tz, date_shift)")
        kwargs = {"daytime": f.take("daytime", _daytime),
                  "tz": f.take("tz", _zone, "UTC"),
                  "date_shift": f.take("date_shift", _days, 0)}
        f.done()
        return cls(**kwargs)

    def to_jso(self) -> dict:
        return {"daytime": format_daytime(self.daytime, "minimal"), "tz": self.tz,
                "date_shift": self.date_shift}

    def describe(self) -> str:
        """``08:00 Europe/London`` (``+1 day`` when shifted)."""
        text = f"{format_daytime(self.daytime, 'minimal')} {self.tz}"
        if self.date_shift:
            text += f" ({self.date_shift:+d} day{'s' if abs(self.date_shift) != 1 else ''})"
        return text

    def run_date(self, args: dict, time_schedule: float) -> date:
        """The date the deadline counts from: the ``date`` arg, else the local date of the scheduled time."""
        raw = (args or {}).get("date")
        if isinstance(raw, str):
            try:
                return date.fromisoformat(raw.strip())
            except ValueError:
                pass
        return from_epoch(time_schedule).astimezone(get_tz(self.tz)).date()

    def due(self, args: dict, time_schedule: float) -> float | None:
        """The deadline of a run, as epoch seconds; None past the last date (year 9999).

        A daytime in a spring-forward gap counts from the moment the clocks
        jump; one repeated in the autumn, its first occurrence.
        """
        try:
            day = self.run_date(args, time_schedule) + timedelta(days=self.date_shift)
            naive = datetime.combine(day, self.daytime)
            return localize(naive, get_tz(self.tz), "shift", "first")[0].timestamp()
        except OverflowError:
            return None


@dataclass(frozen=True)
class MaxDuration:
    duration: float
    stop: bool = False

    @classmethod
    def from_jso(cls, jso) -> MaxDuration:
        """A duration (``2h``), or ``{duration: 2h, stop: true}``."""
        if not isinstance(jso, dict):
            return cls(positive_duration(jso))
        f = Fields(jso, "max_duration mapping (duration, stop)")
        kwargs = {"duration": f.take("duration", positive_duration),
                  "stop": f.take("stop", flag, False)}
        f.done()
        return cls(**kwargs)

    def to_jso(self) -> dict:
        return {"duration": self.duration, "stop": self.stop}

    def describe(self) -> str:
        return format_duration(self.duration)

"""Schedule types for tests of how the calendar's computation shares the event loop.

Importing this module registers them (a server loads it with ``extensions:
[schedule_types]`` and this folder on PYTHONPATH). Both are due at every
whole hour. ``tests.counted-hourly`` counts the due times it has given
(STEPS); ``tests.held-hourly`` busy-waits ``hold`` seconds before giving each,
as a schedule with costly arithmetic would, so that a page computing many of
them takes a known while.
"""

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from apsis_lite.model.fields import duration
from apsis_lite.model.registry import SCHEDULES
from apsis_lite.model.schedules import Schedule

#: Due times given by every tests.counted-hourly schedule so far.
STEPS = [0]
_HOUR = 3600


def _hours_from(start):
    t = math.ceil(start.timestamp() / _HOUR) * _HOUR
    at = datetime.fromtimestamp(t, UTC)
    while True:
        yield at
        at += timedelta(seconds=_HOUR)


@SCHEDULES.register("tests.counted-hourly")
@dataclass(frozen=True)
class CountedHourly(Schedule):
    type_name: ClassVar[str] = "tests.counted-hourly"

    @classmethod
    def _read(cls, f):
        return {}

    def _jso(self):
        return {}

    def describe(self):
        return "every hour, counted"

    def times(self, start):
        for at in _hours_from(start):
            STEPS[0] += 1
            yield at, {}


@SCHEDULES.register("tests.held-hourly")
@dataclass(frozen=True)
class HeldHourly(Schedule):
    type_name: ClassVar[str] = "tests.held-hourly"

    hold: float = 0.002

    @classmethod
    def _read(cls, f):
        return {"hold": f.take("hold", duration, 0.002)}

    def _jso(self):
        return {"hold": self.hold}

    def describe(self):
        return f"every hour, {self.hold} s to compute each"

    def times(self, start):
        for at in _hours_from(start):
            until = time.perf_counter() + self.hold
            while time.perf_counter() < until:
                pass
            yield at, {}

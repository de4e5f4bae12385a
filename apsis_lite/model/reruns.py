"""Automatic reruns: a job's ``reruns:`` policy and its delays.

```yaml
reruns: {count: 3, delay: 10s, backoff: 2, max_delay: 5 min, states: [failure, error]}
```

A run of the job that ends in one of ``states`` is run again after a delay,
as a new run in the original's rerun group, until the group holds
``count`` reruns (a rerun by hand counts as one). The n-th rerun waits
``delay * backoff ** (n - 1)`` seconds, at most ``max_delay``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from apsis_lite.model.conditions import state_list
from apsis_lite.model.fields import Fields, _kind, duration
from apsis_lite.timeutil import MAX_DURATION

FINISHED_STATES = ("success", "failure", "error", "skipped")


def _count(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number of at least 0, got {_kind(value)}")
    return value


def _backoff(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 1000:
        raise ValueError(f"expected a number from 1 to 1000, got {_kind(value)}")
    return float(value)


def _finished_states(value):
    states = state_list(value)
    for s in states:
        if s not in FINISHED_STATES:
            raise ValueError(f"{s!r} is not a finished state ({', '.join(FINISHED_STATES)})")
    return states


@dataclass(frozen=True)
class Reruns:
    count: int
    delay: float = 0.0
    max_delay: float | None = None
    backoff: float = 1.0
    states: tuple = ("failure", "error")

    @classmethod
    def from_jso(cls, jso) -> "Reruns":
        """Parse strictly; SpecError lists every problem. A bare number is the count."""
        if isinstance(jso, int) and not isinstance(jso, bool):
            jso = {"count": jso}
        f = Fields(jso, "reruns mapping (count, delay, max_delay, backoff, states)")
        kwargs = {
            "count": f.take("count", _count),
            "delay": f.take("delay", duration, 0.0),
            "max_delay": f.take("max_delay", duration, None),
            "backoff": f.take("backoff", _backoff, 1.0),
            "states": f.take("states", _finished_states, ("failure", "error")),
        }
        f.done()
        return cls(**kwargs)

    def to_jso(self) -> dict:
        return {"count": self.count, "delay": self.delay, "max_delay": self.max_delay,
                "backoff": self.backoff, "states": list(self.states)}

    def delay_before(self, n: int) -> float:
        """Seconds between the end of try ``n`` and rerun ``n`` (1 for the first rerun).

        At most ``max_delay``, and never more than MAX_DURATION (100 years),
        however many reruns a large backoff has compounded.
        """
        if not self.delay:
            return 0.0
        try:
            seconds = self.delay * self.backoff ** (n - 1)
        except OverflowError:
            seconds = math.inf
        seconds = min(seconds, MAX_DURATION)
        return seconds if self.max_delay is None else min(seconds, self.max_delay)

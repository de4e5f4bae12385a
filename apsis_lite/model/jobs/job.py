"""The Job value, and JobErrors: every problem found in one job."""

from __future__ import annotations

from dataclasses import dataclass, field

from apsis_lite.errors import ApsisError
from apsis_lite.model import deadlines as _deadlines
from apsis_lite.model import reruns as _reruns
from apsis_lite.model.schedules import Schedule
from apsis_lite.timeutil import format_duration


class JobErrors(ApsisError):
    """Every problem found in one job: a list of JobFileError."""

    status = 400

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class Job:
    """A validated job. ``program``, ``conditions`` and ``actions`` are normalized jso
    (``successors`` are folded into ``actions``); their strings may be templates."""

    job_id: str
    params: tuple[str, ...]
    program: dict
    schedules: tuple[Schedule, ...]
    conditions: tuple[dict, ...]
    actions: tuple[dict, ...]
    metadata: dict
    path: str | None = None
    adhoc: bool = False
    # None: the global max_age rule decides; else {"missed": all|latest|none, "max": int|None}.
    catch_up: dict | None = None
    # Resolves calendar names in templates; not part of the job's value.
    calendars: object = field(default=None, compare=False, repr=False)
    reruns: _reruns.Reruns | None = None    # automatic reruns (``reruns:``)
    waiting_max_time: float | None = None   # ``waiting: {max_time}``; None: the config's
    deadline: _deadlines.Deadline | None = None          # ``deadline:`` (an alarm)
    max_duration: _deadlines.MaxDuration | None = None   # ``max_duration:`` (an alarm)
    # ``(param, pattern)`` for params declared ``{name, pattern}``: their args must match.
    param_patterns: tuple[tuple[str, str], ...] = ()

    def to_jso(self) -> dict:
        """The job for the JSON API; each schedule carries its ``description``."""
        jso = {
            "job_id": self.job_id,
            "params": list(self.params),
            "program": self.program,
            "schedules": [{**s.to_jso(), "description": describe_schedule(s)} for s in self.schedules],
            "conditions": list(self.conditions),
            "actions": list(self.actions),
            "metadata": self.metadata,
            "path": self.path,
            "adhoc": self.adhoc,
        }
        if self.param_patterns:
            jso["param_patterns"] = dict(self.param_patterns)
        if self.catch_up is not None:
            jso["catch_up"] = dict(self.catch_up)
        if self.reruns:
            jso["reruns"] = self.reruns.to_jso()
        if self.waiting_max_time:
            jso["waiting"] = {"max_time": self.waiting_max_time}
        if self.deadline is not None:
            jso["deadline"] = self.deadline.to_jso()
        if self.max_duration is not None:
            jso["max_duration"] = self.max_duration.to_jso()
        return jso


def describe_schedule(schedule: Schedule) -> str:
    """A schedule in words, with its stop schedule and jitter."""
    text = schedule.describe()
    if schedule.stop is not None:
        text += f"; {schedule.stop.describe()}"
    if schedule.jitter:
        text += f"; jitter {format_duration(schedule.jitter)}"
    return text

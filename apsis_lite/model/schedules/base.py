"""The Schedule base class, parsing a job file's schedule mapping, and jitter.

``parse_schedule(jso)`` dispatches on ``type:`` through the SCHEDULES
registry (built-in types register when their module is imported; see the
package ``__init__``), or reads the ``start:``/``stop:`` form.
``jitter_offset`` spreads runs due at one instant over the jitter window.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Iterator

from apsis_lite.model.fields import Fields, SpecError, _kind, duration, flag, string_map
from apsis_lite.model.registry import SCHEDULES
from apsis_lite.model.schedules.stops import StopSchedule, parse_stop
from apsis_lite.timeutil import to_iso


@dataclass(frozen=True)
class Schedule:
    """Base of schedule types: common ``enabled``, ``args``, ``jitter`` and ``stop``.

    Subclasses set ``type_name`` and ``supplies`` (the args they fill in
    themselves), implement ``_read(fields) -> kwargs``, ``_jso()``,
    ``describe()`` and ``times()``, and register with SCHEDULES.
    ``times()`` ignores ``enabled``: a disabled schedule can still be shown.
    ``times()`` yields nominal times; the engine adds ``jitter_offset()``
    to each when it starts the run, and asks ``stop.stop_time()`` when to
    stop it.
    """

    type_name: ClassVar[str] = ""
    supplies: ClassVar[frozenset] = frozenset()

    enabled: bool = field(default=True, kw_only=True)
    args: dict = field(default_factory=dict, kw_only=True)
    jitter: float = field(default=0.0, kw_only=True)
    stop: "StopSchedule | None" = field(default=None, kw_only=True)

    @classmethod
    def from_jso(cls, jso, calendars=None) -> "Schedule":
        """Parse a schedule mapping strictly; SpecError lists every problem.

        On the base class this dispatches on ``type:`` like ``parse_schedule``.
        ``calendars`` resolves calendar names (a ``calendars.CalendarLibrary``;
        None: the weekday sets and shipped calendars only).
        """
        if cls is Schedule:
            return parse_schedule(jso, calendars)
        f = Fields(jso, "schedule mapping")
        f.calendars = calendars
        f.take("type", default=None)  # already used for dispatch
        enabled = f.take("enabled", flag, True)
        args = f.take("args", string_map, {})
        jitter = f.take("jitter", duration, 0.0)
        kwargs = cls._read(f)
        f.done()
        return cls(enabled=enabled, args=args, jitter=jitter, **kwargs)

    @classmethod
    def _read(cls, f: Fields) -> dict:
        raise NotImplementedError

    def to_jso(self) -> dict:
        jso = {"type": self.type_name, "enabled": self.enabled, "args": dict(self.args)}
        if self.jitter:
            jso["jitter"] = self.jitter
        jso.update(self._jso())
        if self.stop is not None:
            return {"start": jso, "stop": self.stop.to_jso()}
        return jso

    def _jso(self) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def times(self, start: datetime) -> Iterator[tuple[datetime, dict]]:
        raise NotImplementedError

    def shortest_interval(self) -> float | None:
        """The interval in seconds, for types that have one (held to the ``min_interval`` setting)."""
        return None

    def _args(self, supplied: dict) -> dict:
        # The schedule's own args: win over what it supplies: they were
        # written on purpose.
        return {**supplied, **self.args} if self.args else supplied


def jitter_offset(job_id: str, nominal: datetime, jitter: float) -> float:
    """Seconds in [0, jitter) to add to a run's nominal time: the same for a job and slot
    in every process and after restarts (a keyed hash, not Python's ``hash()``),
    spread evenly over jobs so that many jobs due at once do not start at once."""
    if not jitter or jitter <= 0:
        return 0.0
    key = f"{job_id}\0{to_iso(nominal)}".encode()
    fraction = (int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 11) / 2**53
    return min(fraction * jitter, math.nextafter(jitter, 0.0))


def parse_schedule(jso, calendars=None) -> Schedule:
    """The schedule for a job-file mapping, dispatched on ``type:`` through SCHEDULES.

    A mapping with ``start:`` and no ``type:`` is the stop form: the start
    schedule under ``start:``, and ``stop:`` saying when its runs are stopped.
    """
    if not isinstance(jso, dict):
        raise SpecError("", f"expected a schedule mapping, got {_kind(jso)}")
    if "type" not in jso and "start" in jso:
        return _parse_stop_form(jso, calendars)
    name = jso.get("type")
    if name is None:
        known = ", ".join(n for n in SCHEDULES.names() if "." not in n)
        raise SpecError("type", f"missing (required; known: {known})")
    try:
        cls = SCHEDULES.get(name)
    except KeyError as exc:
        raise SpecError("type", exc.args[0]) from None
    return cls.from_jso(jso, calendars)


def _parse_stop_form(jso, calendars) -> Schedule:
    f = Fields(jso, "schedule mapping")

    def start_schedule(value):
        if isinstance(value, dict) and "start" in value and "type" not in value:
            raise SpecError("", "a start schedule cannot have a stop schedule of its own")
        return parse_schedule(value, calendars)

    start = f.take("start", start_schedule)
    stop = f.take("stop", parse_stop)
    f.done()
    return dataclasses.replace(start, stop=stop)

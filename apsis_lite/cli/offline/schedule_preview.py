"""What a job's schedules will do (``schedule``): the next due times, merged as the
engine merges them, the clock changes of a zone between them, and local times.

Schedules are used only through their interface (``times``, ``enabled``),
so new schedule types work here unchanged.
"""

from __future__ import annotations

import heapq
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from apsis_lite.model.jobs import Job, args_from_schedule
from apsis_lite.timeutil import UTC, format_duration, from_epoch, get_tz


def due_times(job: Job, start: datetime, count: int) -> list[tuple[datetime, dict]]:
    """The next ``count`` due times of ``job`` at or after ``start``, with their run args.

    Enabled schedules are merged as the engine merges them; a slot (time,
    args) that two schedules both give is one run, so it is listed once.
    """
    merged = heapq.merge(*(s.times(start) for s in job.schedules if s.enabled),
                         key=lambda ta: ta[0])
    out, seen_at, seen = [], None, set()
    for t, supplied in merged:
        args = args_from_schedule(job, supplied)
        if t != seen_at:
            seen_at, seen = t, set()
        slot = json.dumps(args, sort_keys=True)
        if slot in seen:
            continue
        seen.add(slot)
        out.append((t, args))
        if len(out) >= count:
            break
    return out


def local_zone_name() -> str | None:
    """The IANA name of this machine's zone (``$TZ``, else /etc/localtime), or None."""
    candidates = []
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        candidates.append(tz.split("/zoneinfo/", 1)[-1] if tz.startswith("/") else tz)
    try:
        target = os.path.realpath("/etc/localtime")
        if "/zoneinfo/" in target:
            candidates.append(target.split("/zoneinfo/", 1)[1])
    except OSError:
        pass
    try:
        with open("/etc/timezone") as f:
            candidates.append(f.read().strip())
    except OSError:
        pass
    for name in candidates:
        try:
            get_tz(name)
            return name
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class ZoneChange:
    """A change of a zone's UTC offset: at ``at`` (UTC), from one offset and name to another."""

    at: datetime
    before: timedelta
    after: timedelta
    before_name: str
    after_name: str

    def describe(self) -> str:
        """``clocks go forward 1 h (EST → EDT) on 2026-03-08 at 02:00``."""
        delta = (self.after - self.before).total_seconds()
        way = "forward" if delta > 0 else "back"
        wall = self.at + self.before  # the wall clock just before the change, as it reads
        when = wall.strftime("on %Y-%m-%d at %H:%M")
        names = f"{self.before_name} → {self.after_name}"
        return f"clocks go {way} {format_duration(abs(delta))} ({names}) {when}"


def zone_changes(zone, start: datetime, end: datetime) -> list[ZoneChange]:
    """Every change of ``zone``'s UTC offset in (start, end], to the second.

    Steps of a day find the changes (zones change at most twice a year, and
    never twice in one day); bisection then finds each instant. Very long
    spans are stepped more coarsely, so that looking costs at most ~500 steps.
    """
    if zone is UTC or end <= start:
        return []
    step = max(timedelta(days=1), (end - start) / 500)
    changes = []
    a, (a_off, a_name) = start, _offset(zone, start)
    while a < end:
        b = min(a + step, end)
        b_off, b_name = _offset(zone, b)
        if b_off != a_off:
            # Offsets change at whole seconds: narrow down to one second,
            # then the change is the whole second just after ``lo``.
            lo, hi = a.timestamp(), b.timestamp()
            while hi - lo > 1:
                mid = (lo + hi) / 2
                if _offset(zone, from_epoch(mid))[0] == a_off:
                    lo = mid
                else:
                    hi = mid
            at = from_epoch(math.floor(lo) + 1)
            changes.append(ZoneChange(at=at, before=a_off, after=b_off,
                                      before_name=a_name, after_name=_offset(zone, at)[1]))
        a, a_off, a_name = b, b_off, b_name
    return changes


def _offset(zone, t: datetime):
    local = t.astimezone(zone)
    return local.utcoffset(), zone_label(local)


def zone_label(local: datetime) -> str:
    """``EST``, or the offset (``+10:30``) where the zone has no abbreviation."""
    name = local.tzname() or ""
    if not name or name[0] in "+-" or name[0].isdigit():
        return _format_offset(local.utcoffset())
    return name


def _format_offset(offset: timedelta) -> str:
    seconds = int(offset.total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    return f"{sign}{hours:02d}:{rest // 60:02d}"


def format_local(t: datetime, zone) -> str:
    """``2026-03-08 Sun 03:00:00 EDT`` (with microseconds when the time has them)."""
    local = t.astimezone(zone)
    spec = "%Y-%m-%d %a %H:%M:%S" + (".%f" if local.microsecond else "")
    return f"{local.strftime(spec)} {zone_label(local)}"


def iso_local(t: datetime, zone) -> str:
    """ISO 8601 in ``zone`` with its offset, to the second (microseconds when present)."""
    local = t.astimezone(zone)
    return local.isoformat(timespec="microseconds" if local.microsecond else "seconds")

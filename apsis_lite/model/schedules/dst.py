"""Daylight saving: the ``dst:`` choices, and turning wall-clock times into UTC instants.

daily, daily-interval and cron compute wall-clock times in their zone and
turn each into UTC instants with ``timeutil.localize``: a time in a
spring-forward gap is shifted to the instant the clocks jump (``gap:
shift``) or dropped (``gap: skip``); a time in a fall-back repeat runs at
its first occurrence (``repeat: first``) or at both (``repeat: both``).
``_resolve`` then puts the instants in order and runs an instant once. Most
days have no transition: there a wall-clock time is one instant, the day's
offset away, and ``_steady_offset`` (cached per zone and day) lets ``_resolve``
skip ``localize``.
"""

from __future__ import annotations

import functools
import heapq
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from apsis_lite.model.fields import Fields, _kind
from apsis_lite.timeutil import GAP_CHOICES, REPEAT_CHOICES, UTC, first_instant_at, localize


@dataclass(frozen=True)
class Dst:
    """A schedule's daylight-saving choices; None leaves the schedule type's default."""

    gap: str | None = None
    repeat: str | None = None

    def to_jso(self):
        return {k: v for k, v in (("gap", self.gap), ("repeat", self.repeat)) if v is not None}


def _choice(choices):
    def convert(value):
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {_kind(value)}")
        return value
    return convert


def parse_dst(value) -> Dst:
    """``dst: {gap: shift|skip, repeat: first|both}``; either key may be left out."""
    f = Fields(value, "dst mapping")
    gap = f.take("gap", _choice(GAP_CHOICES), None)
    repeat = f.take("repeat", _choice(REPEAT_CHOICES), None)
    f.done()
    return Dst(gap, repeat)


def _naive_start(start: datetime, zone) -> datetime:
    """The earliest wall-clock time in ``zone`` whose run could fall at or after ``start``.

    Usually ``start``'s own local time; less by the length of a transition
    near ``start`` (a repeated hour just after it, or a gap just before it),
    whose wall-clock times come before ``start``'s but whose instants do not.
    """
    offsets = [(start + d).astimezone(zone).utcoffset() for d in (-_NEAR, timedelta(0), _NEAR)]
    return (start + min(offsets)).replace(tzinfo=None)


_NEAR = timedelta(hours=3)  # longer than any daylight-saving shift in use


_HOUR = timedelta(hours=1)


@functools.lru_cache(maxsize=65536)
def _steady_offset(zone, day: date):
    """``zone``'s UTC offset throughout local day ``day``, or None if it may change that day.

    Sampled hourly from a day before to a day after (no zone has changed its
    offset and back within an hour), so every wall-clock time of the day, and
    the hours either side that ``_resolve``'s bounds look at, have this offset.
    """
    try:
        at = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(days=1)
        offset = at.astimezone(zone).utcoffset()
        for _ in range(72):
            at += _HOUR
            if at.astimezone(zone).utcoffset() != offset:
                return None
    except OverflowError:  # the first or last days a datetime holds
        return None
    return offset


def _resolve(items, zone, gap, repeat, start):
    """``(utc, payload)`` for wall-clock ``(naive, payload)`` items given in non-decreasing order.

    Yields instants ``>= start``, strictly increasing: several wall-clock times
    on one instant (times shifted out of a gap) run once, with the first's
    payload. Instants of a repeated hour's second occurrence come out of
    order, so they wait in a heap until no later wall-clock time can come
    before them: every instant of a wall-clock time ``>= n`` is at or after
    ``first_instant_at(n)``.
    """
    heap, seq, last = [], 0, None
    for naive, payload in items:
        offset = _steady_offset(zone, naive.date())
        if offset is not None:
            bound = (naive - offset).replace(tzinfo=UTC)
            instants = (bound,)
        else:
            bound = first_instant_at(naive, zone)
            instants = localize(naive, zone, gap, repeat)
        while heap and heap[0][0] <= bound:
            t, _, p = heapq.heappop(heap)
            if t >= start and (last is None or t > last):
                last = t
                yield t, p
        for t in instants:
            heapq.heappush(heap, (t, seq, payload))
            seq += 1
    while heap:
        t, _, p = heapq.heappop(heap)
        if t >= start and (last is None or t > last):
            last = t
            yield t, p

"""The ``cron`` schedule: a cron expression (with macros) evaluated in a zone by cronsim.

Its daylight-saving default depends on the expression, as in Debian cron:
see ``CronSchedule``.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import ClassVar

from cronsim import CronSim, CronSimError

from apsis_lite.model.fields import _zone_name, nonempty_text
from apsis_lite.model.registry import SCHEDULES
from apsis_lite.model.schedules.base import Schedule
from apsis_lite.model.schedules.dst import Dst, _naive_start, _resolve, parse_dst
from apsis_lite.model.schedules.instants import _as_utc, _until_out_of_range
from apsis_lite.timeutil import get_tz

_SECOND = timedelta(seconds=1)
_DAY = timedelta(days=1)
# As cronsim: an expression with no time in this many years after the last has no more.
_BARREN_YEARS = 50


_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _cron_expr(value) -> str:
    expr = " ".join(nonempty_text(value).split())
    if expr.startswith("@"):
        try:
            expanded = _MACROS[expr.lower()]
        except KeyError:
            raise ValueError(
                f"unknown cron macro {expr!r} (known: {', '.join(_MACROS)})") from None
    else:
        expanded = expr.upper()  # cronsim knows only upper-case names
    try:
        CronSim(expanded, datetime(2000, 1, 1))  # validates the fields
    except CronSimError as exc:
        raise ValueError(f"bad cron expression {expr!r}: {exc}") from None
    return expr


def _expand_cron(expr: str) -> str:
    return _MACROS[expr.lower()] if expr.startswith("@") else expr.upper()


@functools.lru_cache(maxsize=256)
def _parsed(expanded: str):
    """cronsim's reading of an expression (its day rules), and the times of day it names, in order."""
    sim = CronSim(expanded, datetime(2000, 1, 1))
    times = [dtime(h, m, s) for h in sorted(sim.hours) for m in sorted(sim.minutes) for s in sorted(sim.seconds)]
    return sim, times


def wall_times(expanded: str, base: datetime):
    """The naive wall-clock times strictly after naive ``base`` that ``expanded`` names, as
    cronsim iterates them, a day at a time: a matching day's times come from one list,
    where cronsim steps a minute at a time (48 steps a day for ``*/30``, not 1,440).
    The day rules (day of month and of week, L, W, #, cron's OR) are cronsim's own."""
    sim, times = _parsed(expanded)
    day, after, last_year = base.date(), base.time(), base.year
    first = True
    while day.year <= last_year + _BARREN_YEARS:
        if day.month not in sim.months:
            day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
        else:
            if sim.match_day(day):
                k = bisect_right(times, after) if first else 0
                if k < len(times):
                    last_year = day.year
                for t in times[k:]:
                    yield datetime.combine(day, t)
            day += _DAY
        first = False


@SCHEDULES.register("cron")
@dataclass(frozen=True)
class CronSchedule(Schedule):
    """A cron expression evaluated in ``tz`` by cronsim (5 fields, or 6 with seconds first).

    Macros ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``;
    month and weekday names in any case; ranges and steps. Day-of-month and
    day-of-week follow cron's OR rule when both are restricted. Supplies
    ``time`` (ISO 8601 in the zone, with its offset) and ``date`` (the
    local date).

    Daylight saving, the default depending on the expression as in Debian
    cron, for 5- and 6-field expressions alike (``dst:`` overrides it):

    * Minute and hour fields both fixed (neither starts with ``*``, e.g.
      ``30 2 * * *``, ``@daily``): wall-clock times, ``{gap: shift, repeat:
      first}``. A time that does not exist runs once when the clocks jump
      (02:30 becomes 03:00 EDT; several such times run once); a repeated
      time runs once, at its first occurrence.
    * Otherwise (``*/15 * * * *``, ``30 * * * *``, ``@hourly``): elapsed
      time, ``{gap: skip, repeat: both}``. Nothing runs in the hour that
      does not exist, and the repeated hour runs at both offsets: runs stay
      an hour (or 15 minutes) of real time apart.
    """

    type_name: ClassVar[str] = "cron"
    supplies: ClassVar[frozenset] = frozenset({"time", "date"})

    expr: str
    tz: str = "UTC"
    dst: Dst | None = None

    @classmethod
    def _read(cls, f):
        return {"expr": f.take("expr", _cron_expr), "tz": f.take("tz", _zone_name, "UTC"),
                "dst": f.take("dst", parse_dst, None)}

    def _jso(self):
        jso = {"expr": self.expr, "tz": self.tz}
        if self.dst is not None:
            jso["dst"] = self.dst.to_jso()
        return jso

    def describe(self):
        text = f"cron '{self.expr}' in {self.tz}"
        if self.dst is not None:
            text += f" (dst: {', '.join(f'{k} {v}' for k, v in self.dst.to_jso().items())})"
        return text

    def dst_choice(self) -> tuple:
        """The (gap, repeat) rule in force: the expression's default, overridden by ``dst:``."""
        fields = _expand_cron(self.expr).split()
        wall = not (fields[-5].startswith("*") or fields[-4].startswith("*"))
        gap, repeat = ("shift", "first") if wall else ("skip", "both")
        if self.dst is not None:
            gap, repeat = self.dst.gap or gap, self.dst.repeat or repeat
        return gap, repeat

    def times(self, start):
        return _until_out_of_range(self._times(_as_utc(start)))

    def _times(self, start):
        zone = get_tz(self.tz)
        gap, repeat = self.dst_choice()
        # cronsim yields wall-clock times strictly after the one it is given.
        base = _naive_start(start, zone).replace(microsecond=0) - _SECOND
        naive_times = ((n, None) for n in wall_times(_expand_cron(self.expr), base))
        for t, _ in _resolve(naive_times, zone, gap, repeat, start):
            local = t.astimezone(zone)
            yield t, self._args({"time": local.isoformat(), "date": local.date().isoformat()})

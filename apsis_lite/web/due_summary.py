"""Upcoming due times of every job, summarised per day of a window, cached.

A month or week grid needs, per job and day, only the first due time and
how many there are (capped: a cell shows "x10+"). Those depend only on the
job (a reload makes a new object: ``engine.jobs[job_id]``), the window's day
bounds and the time from which times count (now, within today), so they are
cached per window: per job one float and one small count per day, not the
times themselves. Interval schedules are counted by arithmetic; other types
walk their ``times()`` iterator and jump to the next day once a day is full.

A background warmer keeps the current month, week and day of the default
zone computed after start-up and after each reload, so the first page view
is fast. Whoever computes (the warmer, or a page asking for a window not yet
warm) yields to the event loop every ``slices.SLICE`` (see ``Slices``), so the
scheduler is never held up; one window is brought up to date by one greenlet
at a time, the others waiting for its result rather than computing it again.
Jobs whose schedules are equal (built-in types) are computed once per pass.
"""

import dataclasses
import heapq
import logging
import threading
from bisect import bisect_right
from collections import OrderedDict
from datetime import date, datetime, timedelta
from datetime import time as dtime

from apsis_lite.engine.slices import Slices
from apsis_lite.model.schedules import IntervalSchedule
from apsis_lite.model.schedules.instants import _EPOCH, _MICRO, _as_utc, _micros
from apsis_lite.timeutil import first_instant_at, from_epoch

log = logging.getLogger("apsis_lite.web")

WINDOWS_MAX = 16   # windows kept; each holds about 10 bytes per job and day


def day_start(d: date, zone) -> float:
    """The epoch time at which day ``d`` begins in ``zone``."""
    return first_instant_at(datetime.combine(d, dtime()), zone).timestamp()


def _epoch_micros(t: float) -> int:
    # As IntervalSchedule.times() sees a start given as an epoch float.
    return (_as_utc(from_epoch(t)) - _EPOCH) // _MICRO


def _interval_days(schedule, since, bounds, cap, out):
    """Add ``{day: (first, count)}`` of an interval schedule, by arithmetic."""
    step, phase = _micros(schedule.interval), _micros(schedule.phase)
    i = bisect_right(bounds, since) - 1
    lo = since
    while i < len(bounds) - 1:
        hi = bounds[i + 1]
        s = _epoch_micros(lo)
        first = -((phase - s) // step) * step + phase
        if first / 1e6 >= hi:
            # Jump straight to the day holding the next time.
            i = bisect_right(bounds, first / 1e6) - 1
            if i >= len(bounds) - 1:
                break
            lo = bounds[i]
            continue
        n = int((hi * 1e6 - first) // step) + 1
        # Float day bounds: settle the last one with the comparison the iterator makes.
        while n > 0 and (first + (n - 1) * step) / 1e6 >= hi:
            n -= 1
        while (first + n * step) / 1e6 < hi:
            n += 1
        _add(out, i, first / 1e6, min(n, cap + 1))
        i += 1
        lo = bounds[i] if i < len(bounds) - 1 else hi


def interval_times(schedule, since, until, n):
    """Up to ``n`` due times (epoch) of an interval schedule in [since, until), as its
    ``times()`` would give them, by arithmetic."""
    step, phase = _micros(schedule.interval), _micros(schedule.phase)
    s = _epoch_micros(since)
    t = -((phase - s) // step) * step + phase
    out = []
    while len(out) < n and t / 1e6 < until:
        out.append(t / 1e6)
        t += step
    return out


def _iterated_days(schedule, since, bounds, cap, out, pause):
    """Add ``{day: (first, count)}`` of any schedule, walking its times, a day at most cap+1."""
    until, start = bounds[-1], since
    while start < until:
        restart, day, count, first = None, None, 0, None
        for dt, _supplied in schedule.times(from_epoch(start)):
            pause()
            t = dt.timestamp()
            if t >= until:
                break
            i = bisect_right(bounds, t) - 1
            if i != day:
                if day is not None:
                    _add(out, day, first, count)
                day, count, first = i, 0, t
            count += 1
            if count > cap:
                restart = bounds[i + 1]
                break
        if day is not None:
            _add(out, day, first, count)
        if restart is None:
            break
        start = restart


def _add(out, i, first, count):
    old = out.get(i)
    out[i] = (first, count) if old is None else (min(old[0], first), old[1] + count)


# Field values that say all there is to them in their repr (a calendar's repr is only its name).
_PLAIN = (str, int, float, bool, type(None), tuple, dict, date, dtime, timedelta)


def schedule_key(s):
    """A key equal for two schedules whose due times are the same, or None: the schedule's
    repr (its type and every field), and each field whose repr may not show all of it
    (a calendar's shows its name): itself if it can be hashed (calendars are frozen
    values), else its identity. Only for the built-in types, whose ``times()`` depend
    on their fields alone."""
    if not type(s).__module__.startswith("apsis_lite.model.schedules."):
        return None
    return repr(s), tuple(_value_or_identity(getattr(s, f.name)) for f in dataclasses.fields(s)
                          if not isinstance(getattr(s, f.name), _PLAIN))


def _value_or_identity(v):
    try:
        hash(v)
    except TypeError:
        return id(v)
    return v


def _schedule_days(s, since, bounds, cap, pause):
    out = {}
    if type(s) is IntervalSchedule:
        _interval_days(s, since, bounds, cap, out)
    else:
        _iterated_days(s, since, bounds, cap, out, pause)
    return out


def job_days(job, since, bounds, cap, pause=lambda: None, memo=None):
    """``{day index: (first due time, count capped at cap+1)}`` of a job's enabled schedules
    from ``since`` to the window's end; ``bounds`` are the days' epoch starts and the end.

    ``pause()`` is called between steps (see ``Slices``). ``memo``, a dict kept for one
    ``since`` and ``bounds``, holds each schedule's days by ``schedule_key``: jobs with
    equal schedules (a thousand jobs on ``*/30 * * * *``) are computed once.
    """
    out = {}
    if since >= bounds[-1]:
        return out
    try:
        for s in job.schedules:
            if not s.enabled:
                continue
            key = schedule_key(s) if memo is not None else None
            days = memo.get(key) if key is not None else None
            if days is None:
                days = _schedule_days(s, since, bounds, cap, pause)
                if key is not None:
                    memo[key] = days
            for i, (first, count) in days.items():
                _add(out, i, first, count)
    except Exception:  # a schedule that raises (an extension's) shows nothing, and hides no other job
        log.debug("the due times of %s cannot be computed", job.job_id, exc_info=True)
        return {}
    return {i: (f, min(c, cap + 1)) for i, (f, c) in out.items()}


class Entry:
    """One job's summary in one window."""

    __slots__ = ("days", "job", "mask", "since")

    def __init__(self, job, since, days):
        self.job, self.since, self.days = job, since, days
        self.mask = sum(1 << i for i in days)


class Window:
    """The per-day summaries of every job over one window (its day bounds)."""

    def __init__(self, bounds, cap):
        self.bounds, self.cap = tuple(bounds), cap
        self.entries = {}
        self.day_jobs = [0] * (len(bounds) - 1)   # jobs with a due time, per day
        self.lock = threading.Lock()
        # Held by the one greenlet (or thread) bringing the window up to date.
        self.sync_lock = threading.Lock()
        # Today's first due time of each job, soonest first, for the jobs seen in one full pass.
        self.today_lock = threading.Lock()
        self.jobs_ref, self.today, self.synced, self.synced_since = None, [], None, 0.0

    def _put(self, job_id, entry):
        old = self.entries.get(job_id)
        if old is not None:
            for i in old.days:
                self.day_jobs[i] -= 1
        if entry is None:
            self.entries.pop(job_id, None)
            return
        for i in entry.days:
            self.day_jobs[i] += 1
        self.entries[job_id] = entry

    def sync_job(self, job_id, job, since, pause=lambda: None, memo=None):
        """Bring one job's entry up to date for times from ``since``; see ``job_days``
        for ``pause`` and ``memo`` (kept for one ``since``)."""
        with self.lock:
            e = self.entries.get(job_id)
            if e is not None and e.job is job and e.since <= since:
                if e.since == since:
                    return
                # Later now: only today's times before now are gone, and only if
                # today's first was before it; other days are unchanged.
                d = bisect_right(self.bounds, since) - 1
                first = e.days.get(d, (None,))[0]
                if first is None or first >= since:
                    e.since = since
                    return
                since_e = since
            else:
                since_e = None
        if since_e is None:
            entry = Entry(job, since, job_days(job, since, self.bounds, self.cap, pause, memo))
        else:
            d = bisect_right(self.bounds, since) - 1
            # Other bounds than a whole pass's: not shared through ``memo``.
            today = job_days(job, since, self.bounds[:d + 2], self.cap, pause)
            days = {i: v for i, v in e.days.items() if i != d}
            days.update(today)
            entry = Entry(job, since, days)
        with self.lock:
            self._put(job_id, entry)

    def sync(self, jobs, since, pause=None):
        """Bring every entry up to date with ``jobs`` ({id: Job}), calling ``pause()`` between
        steps (default: a fresh ``Slices``). One caller at a time: a second waits for the
        first's result, which usually leaves it nothing to do."""
        pause = pause or Slices()
        with self.sync_lock:
            self._sync(jobs, since, pause)

    def _sync(self, jobs, since, pause):
        d = bisect_right(self.bounds, since) - 1
        with self.today_lock:
            if self.synced == (id(jobs), len(jobs), d) and self.synced_since <= since:
                # Same jobs and day: only the jobs whose next time today has passed
                # need their today counted again (by then, due every minute: a few
                # hundred, not every job).
                while self.today and self.today[0][0] < since:
                    _first, job_id = heapq.heappop(self.today)
                    if job_id in jobs:
                        self.sync_job(job_id, jobs[job_id], since, pause)
                        e = self.entries.get(job_id)
                        if e is not None and d in e.days:
                            heapq.heappush(self.today, (e.days[d][0], job_id))
                self.synced_since = since
                return
        memo = {}
        for job_id, job in list(jobs.items()):
            self.sync_job(job_id, job, since, pause, memo)
            pause()
        with self.lock:
            for job_id in [j for j in self.entries if j not in jobs]:
                self._put(job_id, None)
            today = [(e.days[d][0], j) for j, e in self.entries.items() if d in e.days]
        heapq.heapify(today)
        with self.today_lock:
            # ``jobs`` is replaced, never changed in place, on a reload; holding it
            # keeps its id from being reused.
            self.jobs_ref, self.today = jobs, today
            self.synced, self.synced_since = (id(jobs), len(jobs), d), since


class DueSummaries:
    """The cache of windows, most recently used last."""

    def __init__(self, cap, max_windows=WINDOWS_MAX):
        self.cap, self.max_windows = cap, max_windows
        self.windows = OrderedDict()
        self.lock = threading.Lock()

    def window(self, bounds):
        key = tuple(bounds)
        with self.lock:
            w = self.windows.get(key)
            if w is None:
                w = self.windows[key] = Window(key, self.cap)
                while len(self.windows) > self.max_windows:
                    self.windows.popitem(last=False)
            self.windows.move_to_end(key)
            return w

    def summary(self, jobs, bounds, now, pause=None):
        """The window of ``bounds``, up to date with ``jobs`` for times from ``now``."""
        w = self.window(bounds)
        w.sync(jobs, max(bounds[0], now), pause)
        return w


def grid_bounds(anchor: date, view: str, zone):
    """(first day, end day, epoch bounds) of the month or week grid holding ``anchor``."""
    if view == "month":
        first = anchor.replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
        start = first - timedelta(days=first.weekday())
        end = nxt + timedelta(days=(7 - nxt.weekday()) % 7)
    else:
        start = anchor - timedelta(days=anchor.weekday())
        end = start + timedelta(days=7)
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    return start, end, [day_start(d, zone) for d in days]


class Warmer:
    """Keeps the current month, week and day summarised, in the background, for the
    default zone and the zones viewers used lately, and next month in the default
    zone: the calendar is for looking ahead, so its first step forward is fast too."""

    def __init__(self, engine, grid, day, zones, every=10.0, zones_max=4):
        self.engine, self.grid, self.day, self.every = engine, grid, day, every
        self.zones, self.zones_max = list(zones), zones_max
        self.thread = None
        self.stopped = threading.Event()

    def seen(self, zone):
        """A page was viewed in ``zone``: keep its windows warm too (the latest few zones)."""
        if zone not in self.zones:
            default, others = self.zones[0], self.zones[1:]
            self.zones = [default] + (others + [zone])[-(self.zones_max - 1):]

    def start(self):
        if self.thread is None:
            # Under gevent this is a greenlet, which yields as it computes (see Slices).
            self.thread = threading.Thread(target=self._loop, name="calendar-warmer", daemon=True)
            self.thread.start()

    def stop(self):
        self.stopped.set()

    def warm_once(self, pause=None):
        now = self.engine.clock()
        jobs = self.engine.jobs
        for n, zone in enumerate(list(self.zones)):
            today = datetime.fromtimestamp(now, zone).date()
            for view in ("month", "week"):
                self.grid.summary(jobs, grid_bounds(today, view, zone)[2], now, pause)
            if n == 0:
                next_month = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
                self.grid.summary(jobs, grid_bounds(next_month, "month", zone)[2], now, pause)
            bounds = [day_start(today, zone), day_start(today + timedelta(days=1), zone)]
            self.day.summary(jobs, bounds, now, pause)

    def _loop(self):
        # Each pass costs a dict look-up per unchanged job; a reload's new
        # job objects are recomputed on the next pass.
        while not self.stopped.is_set():
            try:
                self.warm_once()
            except Exception:  # a bad schedule must not end the warmer
                log.exception("calendar warmer")
            self.stopped.wait(self.every)

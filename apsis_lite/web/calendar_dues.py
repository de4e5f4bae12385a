"""Upcoming due times of the jobs a calendar page shows, computed from their schedules, never stored.

A due time is what would become a run in state "scheduled": the run filter
applies to it (``due_matcher``). The work stays bounded by counting at most
PER_DAY_CAP (in a grid cell GRID_DAY_CAP) due times per job and day, and, for
an ARG=VAL filter (which needs each due time's args), ARGS_STEP_BUDGET due
times per page. Without an args filter a month or week grid reads the
per-day summaries cached in ``due_summary``. Every loop here calls ``pause()``
between steps: a page passes its ``Slices``, so a long computation lets the
event loop run every few milliseconds.
"""

import heapq
import logging
from bisect import bisect_right
from dataclasses import dataclass

from apsis_lite.model import jobs as jobs_mod
from apsis_lite.model.schedules import IntervalSchedule
from apsis_lite.store.runfilter import parse_terms
from apsis_lite.timeutil import from_epoch
from apsis_lite.web.due_summary import interval_times

log = logging.getLogger("apsis_lite.web")

PER_DAY_CAP = 100      # due times kept per job and day in a day timeline; more shows as "100+"
GRID_DAY_CAP = 10      # the same in a month or week cell, which shows a count, not each time
ARGS_STEP_BUDGET = 25_000  # due times stepped through per page for an ARG=VAL filter (no summary)


@dataclass
class Due:
    """An upcoming due time of a job."""

    job_id: str
    t: float


# -- the filter, applied to due times ----------------------------------------------


def due_matcher(q):
    """Predicates ``(job_ok(job_id), args_ok(args))`` for the run filter ``q``, applied to due times.

    A due time is what would become a run in state "scheduled" with the
    schedule's args, so every term has a meaning: words and ``job:`` match
    the job id as for runs, ``state:`` matches if it names "scheduled", and
    ``ARG=VAL`` the schedule's args; ``host:`` never matches (a run gets
    its host when it starts). ``args_ok`` is None when no term is
    about args; ``job_ok.all_jobs`` says no term is about the job.
    """
    job_terms, arg_terms = [], []
    for term in parse_terms(q or ""):
        test = _term_test(term)
        wrapped = (lambda v, f=test: not f(v)) if term.negated else test
        (arg_terms if term.kind == "arg" else job_terms).append(wrapped)

    def job_ok(job_id):
        return all(f(job_id) for f in job_terms)

    job_ok.all_jobs = not job_terms
    return job_ok, (lambda args: all(f(args) for f in arg_terms)) if arg_terms else None


def _term_test(term):
    """The predicate of one term: on the job id, or on the args for an arg term."""
    if term.kind == "job":
        return lambda job_id: job_id == term.value
    if term.kind == "state":
        names = [n.strip().lower() for n in term.value.split(",")]
        hit = any("scheduled".startswith(n) for n in names if n)
        return lambda _job_id: hit
    if term.kind == "host":
        return lambda _job_id: False
    if term.kind == "arg":
        name, value = term.name, term.value
        if value is None:
            return lambda args: name in args
        return lambda args: str(args.get(name)) == value if name in args else False
    word = term.value.lower()
    return lambda job_id: word in job_id.lower()


# -- due times ---------------------------------------------------------------------


def _no_pause():
    pass


def due_times(engine, since, until, bounds, job_ok, args_ok, budget=float("inf"), per_day=PER_DAY_CAP,
              stored=frozenset(), pause=_no_pause):
    """Due times of matching jobs in [since, until), each job's at most ``per_day`` a day.

    ``bounds`` are the epoch starts of the window's days (and its end): a
    job's times beyond ``per_day`` in one day are skipped by restarting its
    schedules at the next day. Times in ``stored`` ((job_id, rounded epoch)
    of runs already planned) are left out before counting. ``budget`` caps
    the due times stepped through in all. Returns ``(list of Due, {(day
    index, job_id) with more}, jobs computed, jobs matching)``.
    """
    found, more = [], set()
    jobs = sorted((j for j in engine.jobs.items() if job_ok(j[0])), key=lambda j: j[0])
    done = 0
    for job_id, job in jobs:
        if budget <= 0:
            break
        done += 1
        try:
            budget = job_due_times(job_id, job, since, until, bounds, args_ok, per_day, stored, budget,
                                   found, more, pause)
        except Exception:  # a schedule that raises (an extension's) hides no other job
            log.debug("the due times of %s cannot be computed", job_id, exc_info=True)
    return found, more, done, len(jobs)


def job_due_times(job_id, job, since, until, bounds, args_ok, per_day, stored, budget, found, more,
                  pause=_no_pause):
    """Add one job's due times to ``found`` and ``more`` (see ``due_times``); returns the budget left."""
    schedules = [s for s in job.schedules if s.enabled]
    if not schedules:
        return budget
    start, day, count = since, None, 0
    while start < until and budget > 0:
        merged = heapq.merge(*(s.times(from_epoch(start)) for s in schedules), key=lambda ta: ta[0])
        restart = None
        for dt, supplied in merged:
            pause()
            t = dt.timestamp()
            budget -= 1
            if t >= until or budget <= 0:
                break
            i = bisect_right(bounds, t) - 1
            if i != day:
                day, count = i, 0
            if (job_id, round(t, 3)) in stored:
                continue
            if args_ok is not None and not args_ok(jobs_mod.args_from_schedule(job, supplied)):
                continue
            count += 1
            if count > per_day:
                more.add((i, job_id))
                restart = bounds[i + 1]
                break
            found.append(Due(job_id, t))
        if restart is None:
            break
        start = restart
    return budget


def day_job_times(job_id, job, since, until, bounds, per_day, stored, found, more, pause=_no_pause):
    """``job_due_times`` without an args filter for one day, by arithmetic when every
    enabled schedule is an interval (the common many-times-a-day case)."""
    schedules = [s for s in job.schedules if s.enabled]
    if not all(type(s) is IntervalSchedule for s in schedules):
        job_due_times(job_id, job, since, until, bounds, None, per_day, stored, float("inf"), found, more, pause)
        return
    n = per_day + 1 + sum(1 for j, _t in stored if j == job_id)
    times = sorted(t for s in schedules for t in interval_times(s, since, until, n))
    times = [t for t in times if (job_id, round(t, 3)) not in stored]
    found.extend(Due(job_id, t) for t in times[:per_day])
    if len(times) > per_day:
        more.add((bisect_right(bounds, times[per_day]) - 1, job_id))


# -- a month or week grid ------------------------------------------------------------


def grid_dues(engine, summaries, bounds, now, job_ok, args_ok, stored, cell_max, cap=GRID_DAY_CAP,
              pause=_no_pause):
    """Per day of a grid, ``(due, total, more)``: the first ``cell_max`` matching job ids'
    ``{job_id: (first, count)}``, how many jobs are due that day, and which have more than
    ``cap``; with (jobs computed, jobs matching), which differ only when an ARG=VAL filter ran
    out of its step budget.

    Without an ARG=VAL filter every matching job counts. Without an args filter the cached per-day
    summaries answer; a job-day holding a planned run (``stored``) is
    counted afresh so that run is not also shown as due.
    """
    n = len(bounds) - 1
    since = max(bounds[0], now)
    if since >= bounds[-1]:
        return [({}, 0, set()) for _ in range(n)], 0, 0
    if args_ok is not None:
        # Args come from each due time: no summary to reuse, so count them here.
        return counted_grid_dues(engine, bounds, since, job_ok, args_ok, stored, cell_max, cap, pause)
    window = summaries.summary(engine.jobs, bounds, now, pause)
    overrides = planned_days(engine.jobs, bounds, since, job_ok, stored, cap, pause)
    return summarised_grid_dues(window, bounds, since, job_ok, overrides, cell_max, cap, pause), 0, 0


def counted_grid_dues(engine, bounds, since, job_ok, args_ok, stored, cell_max, cap, pause=_no_pause):
    """``grid_dues`` for an ARG=VAL filter: every due time stepped through, within ARGS_STEP_BUDGET."""
    out = [({}, 0, set()) for _ in range(len(bounds) - 1)]
    found, more, done, total = due_times(engine, since, bounds[-1], bounds, job_ok, args_ok,
                                         budget=ARGS_STEP_BUDGET, per_day=cap, stored=stored, pause=pause)
    per_job = {}
    for d in found:
        i = bisect_right(bounds, d.t) - 1
        first, count = per_job.get((d.job_id, i), (d.t, 0))
        per_job[(d.job_id, i)] = (first, count + 1)
    for (job_id, i), (first, count) in sorted(per_job.items()):
        due, jobs_that_day, m = out[i]
        if len(due) < cell_max:
            due[job_id] = (first, count)
        out[i] = (due, jobs_that_day + 1, m)
    for i, job_id in more:
        out[i][2].add(job_id)
    return out, done, total


def planned_days(jobs, bounds, since, job_ok, stored, cap, pause=_no_pause):
    """``{job_id: {day: (first, count) or None}}`` for the job-days holding a planned run
    (``stored``), counted afresh without that run; they replace the summary's."""
    overrides = {}
    for job_id, t in stored:
        if not (since <= t < bounds[-1]) or job_id not in jobs or not job_ok(job_id):
            continue
        i = bisect_right(bounds, t) - 1
        if i in overrides.get(job_id, {}):
            continue
        found, more = [], set()
        job_due_times(job_id, jobs[job_id], max(since, bounds[i]), bounds[i + 1], bounds, None, cap,
                      stored, float("inf"), found, more, pause)
        overrides.setdefault(job_id, {})[i] = (found[0].t, len(found) + bool(more)) if found else None
    return overrides


def summarised_grid_dues(w, bounds, since, job_ok, overrides, cell_max, cap, pause=_no_pause):
    """The per-day ``(due, total, more)`` of ``grid_dues`` from the window's summary ``w``, days
    before ``since`` left empty. Jobs are visited in id order until every open day's cell is full."""
    n = len(bounds) - 1
    out = [({}, 0, set()) for _ in range(n)]
    d0 = bisect_right(bounds, since) - 1
    totals = [0] * n
    if job_ok.all_jobs:
        totals = list(w.day_jobs)
        for job_id, days in overrides.items():
            base = w.entries[job_id].days
            for i, v in days.items():
                totals[i] += (v is not None) - (i in base)
    open_mask = ((1 << n) - 1) & ~((1 << d0) - 1)
    all_days = open_mask
    for job_id in sorted(w.entries):
        if not open_mask and job_ok.all_jobs:
            break
        pause()
        if not job_ok(job_id):
            continue
        e = w.entries[job_id]
        days, mask = e.days, e.mask & all_days
        if job_id in overrides:
            days = {**days, **overrides[job_id]}
            days = {i: v for i, v in days.items() if v is not None}
            mask = sum(1 << i for i in days) & all_days
        if not job_ok.all_jobs:
            m = mask
            while m:
                low = m & -m
                totals[low.bit_length() - 1] += 1
                m ^= low
        m = mask & open_mask
        while m:
            low = m & -m
            i = low.bit_length() - 1
            m ^= low
            first, count = days[i]
            due = out[i][0]
            due[job_id] = (first, min(count, cap))
            if count > cap:
                out[i][2].add(job_id)
            if len(due) >= cell_max:
                open_mask &= ~low
    return [(due, totals[i] if i >= d0 else 0, more) for i, (due, _t, more) in enumerate(out)]

"""The calendar pages: a month or week grid and a day timeline.

Past runs come from the store (by scheduled time, through the run filter);
upcoming due times are computed from the jobs' schedules, never stored.
Days begin and end at midnight in the viewer's zone.

Every matching job's due times are shown; the work stays bounded by
counting at most PER_DAY_CAP (in a grid cell GRID_DAY_CAP) due times per job
and day, and by per-day summaries cached per window (``due_summary``), kept
warm in the background once the calendar has been looked at. At most RUN_CAP
runs are read per window; the page says when that cut something off.
"""

import heapq
import logging
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date, timedelta

from flask import request, url_for
from markupsafe import Markup

from apsis_lite.model import jobs as jobs_mod
from apsis_lite.model.calendars import CalendarError, load_calendars
from apsis_lite.web.due_summary import DueSummaries, Warmer, day_start, grid_bounds, interval_times
from apsis_lite.errors import BadRequest
from apsis_lite.web.request_args import shown
from apsis_lite.store.runfilter import compile_filter, parse_terms
from apsis_lite.model.runs import ACTIVE, FINISHED, PENDING
from apsis_lite.model.schedules import IntervalSchedule
from apsis_lite.timeutil import from_epoch, get_tz, parse_date

log = logging.getLogger(__name__)

RUN_CAP = 2000         # runs read per window, latest scheduled first
PER_DAY_CAP = 100      # due times kept per job and day in a day timeline; more shows as "100+"
GRID_DAY_CAP = 10      # the same in a month or week cell, which shows a count, not each time
CELL_MAX = 6           # entries of each kind listed in a month cell (a week cell: 4x)
DAY_ROWS_MAX = 300     # job rows in a day timeline
ARGS_STEP_BUDGET = 25_000  # due times stepped through per page for an ARG=VAL filter (no summary)
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(9998, 12, 31)   # days the calendar shows
ABBR = {"scheduled": "sched", "waiting": "wait", "starting": "start", "running": "run",
        "stopping": "stop", "success": "ok", "failure": "fail", "error": "err", "skipped": "skip"}

# The day timeline's SVG geometry, in its own units (pixels at 100%).
LABEL_W, TRACK_W, ROW_H, HEAD_H = 230, 960, 30, 20


@dataclass
class Due:
    """An upcoming due time of a job."""

    job_id: str
    t: float


@dataclass
class DayCell:
    day: date
    start: float
    end: float
    in_month: bool = True
    today: bool = False
    holiday: bool = False
    runs: list = field(default_factory=list)
    due: dict = field(default_factory=dict)     # job_id -> (first epoch, count), the first few job ids
    due_total: int = 0                          # jobs with due times this day
    more: set = field(default_factory=set)      # job ids with more due times than were counted


# -- the filter, applied to due times ----------------------------------------------


def due_matcher(q):
    """Predicates ``(job_ok(job_id), args_ok(args))`` for the run filter ``q``, applied to due times.

    A due time is what would become a run in state "scheduled" with the
    schedule's args, so every term has a meaning: words and ``job:`` match
    the job id as for runs, ``state:`` matches if it names "scheduled", and
    ``ARG=VAL`` the schedule's args. ``args_ok`` is None when no term is
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
    if term.kind == "arg":
        name, value = term.name, term.value
        if value is None:
            return lambda args: name in args
        return lambda args: str(args.get(name)) == value if name in args else False
    word = term.value.lower()
    return lambda job_id: word in job_id.lower()


# -- data ------------------------------------------------------------------------


def due_times(engine, since, until, bounds, job_ok, args_ok, budget=float("inf"), per_day=PER_DAY_CAP,
              stored=frozenset()):
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
                                   found, more)
        except Exception:  # a schedule that raises (an extension's) hides no other job
            log.debug("the due times of %s cannot be computed", job_id, exc_info=True)
    return found, more, done, len(jobs)


def job_due_times(job_id, job, since, until, bounds, args_ok, per_day, stored, budget, found, more):
    """Add one job's due times to ``found`` and ``more`` (see ``due_times``); returns the budget left."""
    schedules = [s for s in job.schedules if s.enabled]
    if not schedules:
        return budget
    start, day, count = since, None, 0
    while start < until and budget > 0:
        merged = heapq.merge(*(s.times(from_epoch(start)) for s in schedules), key=lambda ta: ta[0])
        restart = None
        for dt, supplied in merged:
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


def day_job_times(job_id, job, since, until, bounds, per_day, stored, found, more):
    """``job_due_times`` without an args filter for one day, by arithmetic when every
    enabled schedule is an interval (the common many-times-a-day case)."""
    schedules = [s for s in job.schedules if s.enabled]
    if not all(type(s) is IntervalSchedule for s in schedules):
        job_due_times(job_id, job, since, until, bounds, None, per_day, stored, float("inf"), found, more)
        return
    n = per_day + 1 + sum(1 for j, _t in stored if j == job_id)
    times = sorted(t for s in schedules for t in interval_times(s, since, until, n))
    times = [t for t in times if (job_id, round(t, 3)) not in stored]
    found.extend(Due(job_id, t) for t in times[:per_day])
    if len(times) > per_day:
        more.add((bisect_right(bounds, times[per_day]) - 1, job_id))


def due_marks_svg(times, y, label, start, span):
    """The due marks of one timeline row as SVG, built here: a busy day has thousands.
    ``times`` lie within the day [start, start + span), so need no clamping."""
    y1, y2 = y + 4, y + ROW_H - 4
    parts = []
    for t in times:
        x = round(LABEL_W + TRACK_W * (t - start) / span, 1)
        parts.append(f'<line class="tl-due" x1="{x}" x2="{x}" y1="{y1}" y2="{y2}"><title>due {label(t)}</title></line>\n')
    return Markup("".join(parts))


def day_labeller(tf, day, start, end):
    """``tf.short`` for times within day ``day`` [start, end), by arithmetic when the
    day has no clock change."""
    if end - start != 86400 or tf.local(start).utcoffset() != tf.local(end - 1).utcoffset():
        return tf.short
    prefix, base = day.isoformat() + " ", round(start * 1e6)

    def label(t):
        secs = (round(t * 1e6) - base) // 1_000_000
        return f"{prefix}{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"

    return label


def grid_dues(engine, summaries, bounds, now, job_ok, args_ok, stored, cell_max, cap=GRID_DAY_CAP):
    """Per day of a grid, ``(due, total, more)``: the first ``cell_max`` matching job ids'
    ``{job_id: (first, count)}``, how many jobs are due that day, and which have more than
    ``cap``; with (jobs computed, jobs matching), which differ only when an ARG=VAL filter ran
    out of its step budget.

    Without an ARG=VAL filter every matching job counts. Without an args filter the cached per-day
    summaries answer; a job-day holding a planned run (``stored``) is
    counted afresh so that run is not also shown as due.
    """
    n = len(bounds) - 1
    out = [({}, 0, set()) for _ in range(n)]
    since = max(bounds[0], now)
    if since >= bounds[-1]:
        return out, 0, 0
    d0 = bisect_right(bounds, since) - 1
    jobs = engine.jobs
    if args_ok is not None:
        # Args come from each due time: no summary to reuse, so count them here.
        found, more, done, total = due_times(engine, since, bounds[-1], bounds, job_ok, args_ok,
                                             budget=ARGS_STEP_BUDGET, per_day=cap, stored=stored)
        per_job = {}
        for d in found:
            i = bisect_right(bounds, d.t) - 1
            first, count = per_job.get((d.job_id, i), (d.t, 0))
            per_job[(d.job_id, i)] = (first, count + 1)
        for (job_id, i), (first, count) in sorted(per_job.items()):
            due, total, m = out[i]
            if len(due) < cell_max:
                due[job_id] = (first, count)
            out[i] = (due, total + 1, m)
        for i, job_id in more:
            out[i][2].add(job_id)
        return out, done, total
    w = summaries.summary(jobs, bounds, now)
    overrides = {}
    for job_id, t in stored:
        if not (since <= t < bounds[-1]) or job_id not in jobs or not job_ok(job_id):
            continue
        i = bisect_right(bounds, t) - 1
        if i in overrides.get(job_id, {}):
            continue
        found, more = [], set()
        job_due_times(job_id, jobs[job_id], max(since, bounds[i]), bounds[i + 1], bounds, None, cap,
                      stored, float("inf"), found, more)
        overrides.setdefault(job_id, {})[i] = (found[0].t, len(found) + bool(more)) if found else None
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
    out = [(due, totals[i] if i >= d0 else 0, more) for i, (due, _t, more) in enumerate(out)]
    return out, 0, 0


def window_runs(store, where, params, since, until):
    """Runs scheduled in [since, until) matching the filter: (runs, whether capped)."""
    runs = store.calendar_runs(where, params, since=since, until=until, limit=RUN_CAP + 1)
    return runs[:RUN_CAP], len(runs) > RUN_CAP


def run_span(run, now):
    """(start, end) of a run's bar: from starting/running to its end (now while active)."""
    start = run.times.get("starting") or run.times.get("running")
    if start is None:
        return None
    if run.state in ACTIVE:
        return start, max(start, now)
    ends = [run.times[s] for s in FINISHED if s in run.times]
    return start, max([start] + ends + ([run.time_updated] if not ends and run.time_updated else []))


def parse_day(text, today):
    """The day a page shows: ``text`` (YYYY-MM-DD), or ``today`` without one."""
    if not text:
        return today
    try:
        day = parse_date(text.strip())
    except ValueError:
        raise BadRequest(f"date: not a date: {shown(text)} (expected YYYY-MM-DD)") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        # The grid reaches a week either side; dates near year 1 or 9999 have no neighbours.
        raise BadRequest(f"date: must be between {FIRST_DAY} and {LAST_DAY}, not {day}")
    return day


# -- routes ----------------------------------------------------------------------


def register_calendar(bp, config, store, engine, page, zone_name):
    """Add /calendar and /calendar/day to the pages blueprint ``bp``."""
    from apsis_lite.web.format import DEFAULT_ZONE, TimeFormat

    library, _problems = load_calendars(getattr(config, "calendars_dir", None))
    grid_summaries = DueSummaries(GRID_DAY_CAP)
    # The day timeline needs from the summary only which jobs are due at all.
    day_summaries = DueSummaries(0)
    warmer = Warmer(engine, grid_summaries, day_summaries, [get_tz(DEFAULT_ZONE)])
    bp.record_once(lambda state: state.app.extensions.setdefault("calendar_warmer", warmer))

    def common():
        """The filter, holidays and zone shared by both pages."""
        tf = TimeFormat(zone_name(), engine.clock())
        warmer.seen(tf.zone)
        # Warming starts with the first look at the calendar, not with the
        # server: with 10,000 cron jobs a pass costs some 15 s of CPU and 70 MB,
        # which a server whose calendar nobody opens should not pay.
        warmer.start()
        q = request.args.get("q", "")
        where, params = compile_filter(q)
        job_ok, args_ok = due_matcher(q)
        holidays_name = request.args.get("holidays", "").strip()
        holidays = None
        if holidays_name:
            try:
                holidays = library.get(holidays_name)
            except CalendarError as exc:
                raise BadRequest(f"holidays: {exc}") from None
        today = tf.local(tf.now).date()
        return tf, q, where, params, job_ok, args_ok, holidays_name, holidays, today

    @bp.get("/calendar")
    def calendar():
        tf, q, where, params, job_ok, args_ok, holidays_name, holidays, today = common()
        view = request.args.get("view", "month")
        if view not in ("month", "week"):
            raise BadRequest(f"view: {view!r} is not one of month, week")
        anchor = parse_day(request.args.get("date", ""), today)
        if view == "month":
            first = anchor.replace(day=1)
            nxt_month = (first + timedelta(days=32)).replace(day=1)
            prev_date, next_date = (first - timedelta(days=1)).replace(day=1), nxt_month
            title = first.strftime("%B %Y")
        else:
            week = anchor - timedelta(days=anchor.weekday())
            prev_date, next_date = week - timedelta(days=7), week + timedelta(days=7)
            title = f"Week of {week.isoformat()}"
        grid_start, grid_end, bounds = grid_bounds(anchor, view, tf.zone)
        days = [grid_start + timedelta(days=i) for i in range((grid_end - grid_start).days)]
        cells = [DayCell(d, bounds[i], bounds[i + 1], in_month=view == "week" or d.month == anchor.month,
                         today=d == today, holiday=holidays is not None and d in holidays)
                 for i, d in enumerate(days)]
        runs, runs_capped = window_runs(store, where, params, bounds[0], bounds[-1])
        pending = set()
        for run in sorted(runs, key=lambda r: (r.time_schedule, r.run_id)):
            cells[bisect_right(bounds, run.time_schedule) - 1].runs.append(run)
            if run.state in PENDING:
                pending.add((run.job_id, round(run.time_schedule, 3)))
        cell_max = CELL_MAX * (4 if view == "week" else 1)
        per_day, jobs_done, jobs_total = grid_dues(engine, grid_summaries, bounds, tf.now, job_ok, args_ok,
                                                   pending, cell_max)
        for c, (due, total, more) in zip(cells, per_day):
            c.due, c.due_total, c.more = due, total, more
        nav = {k: v for k, v in {"q": q, "holidays": holidays_name, "view": view}.items() if v}
        return page("calendar.html", active="calendar", view=view, title=title, cells=cells,
                    weeks=[cells[i:i + 7] for i in range(0, len(cells), 7)],
                    cell_max=cell_max, abbr=ABBR, grid_day_cap=GRID_DAY_CAP,
                    q=q, holidays_name=holidays_name, calendar_names=library.names(),
                    runs_capped=runs_capped, run_cap=RUN_CAP, per_day_cap=PER_DAY_CAP,
                    anchor=anchor, jobs_done=jobs_done, jobs_total=jobs_total,
                    prev_url=url_for("ui.calendar", date=prev_date.isoformat(), **nav),
                    next_url=url_for("ui.calendar", date=next_date.isoformat(), **nav),
                    today_url=url_for("ui.calendar", **nav),
                    day_url=lambda d: url_for("ui.calendar_day", date=d.isoformat(),
                                              **{k: v for k, v in nav.items() if k != "view"}))

    @bp.get("/calendar/day")
    def calendar_day():
        tf, q, where, params, job_ok, args_ok, holidays_name, holidays, today = common()
        day = parse_day(request.args.get("date", ""), today)
        start, end = day_start(day, tf.zone), day_start(day + timedelta(days=1), tf.zone)
        span = end - start

        def x(t):
            return round(LABEL_W + TRACK_W * min(max(t - start, 0), span) / span, 1)

        runs, runs_capped = window_runs(store, where, params, start, end)
        rows, pending = {}, set()
        for run in sorted(runs, key=lambda r: (r.time_schedule, r.run_id)):
            row = rows.setdefault(run.job_id, {"bars": [], "marks": [], "due": [], "more": False, "counts": {}})
            row["counts"][run.state] = row["counts"].get(run.state, 0) + 1
            bar = run_span(run, tf.now)
            if bar is None:
                row["marks"].append({"run": run, "x": x(run.time_schedule)})
                if run.state in PENDING:
                    pending.add((run.job_id, round(run.time_schedule, 3)))
            else:
                x0, x1 = x(bar[0]), x(bar[1])
                row["bars"].append({"run": run, "x": x0, "w": max(round(x1 - x0, 1), 2),
                                    "start": bar[0], "end": bar[1]})
        since = max(start, tf.now)
        found, more, jobs_done, jobs_total = [], set(), 0, 0
        if args_ok is not None:
            # Args come from each due time: no summary to reuse, so compute them here.
            found, more, jobs_done, jobs_total = due_times(engine, since, end, [start, end], job_ok, args_ok,
                                                           budget=ARGS_STEP_BUDGET, stored=pending)
            due_jobs = {d.job_id for d in found}
        elif since < end:
            w = day_summaries.summary(engine.jobs, [start, end], tf.now)
            due_jobs = {j for j, e in w.entries.items() if e.mask & 1 and job_ok(j)}
        else:
            due_jobs = set()
        # Only the rows shown need each due time.
        shown = sorted(set(rows) | due_jobs)[:DAY_ROWS_MAX]
        rows_total = len(set(rows) | due_jobs)
        if args_ok is None:
            for job_id in shown:
                if job_id in due_jobs:
                    day_job_times(job_id, engine.jobs[job_id], since, end, [start, end], PER_DAY_CAP,
                                  pending, found, more)
        for d in found:
            row = rows.setdefault(d.job_id, {"bars": [], "marks": [], "due": [], "more": False, "counts": {}})
            row["due"].append(d.t)
        for _i, job_id in more:
            rows[job_id]["more"] = True
        shown = [j for j in shown if j in rows]
        label = day_labeller(tf, day, start, end)
        for k, job_id in enumerate(shown):
            row = rows[job_id]
            row["due_svg"] = due_marks_svg(row["due"], HEAD_H + k * ROW_H, label, start, span)
        hours = [{"x": x(day_start(day, tf.zone) + h * 3600), "label": f"{h:02d}:00"} for h in range(0, 24, 3)]
        nav = {k: v for k, v in {"q": q, "holidays": holidays_name}.items() if v}
        return page("calendar_day.html", active="calendar", day=day, rows=[(j, rows[j]) for j in shown],
                    rows_total=rows_total, rows_max=DAY_ROWS_MAX, jobs_done=jobs_done, jobs_total=jobs_total, abbr=ABBR, q=q,
                    holidays_name=holidays_name, calendar_names=library.names(),
                    holiday=holidays is not None and day in holidays,
                    runs_capped=runs_capped, run_cap=RUN_CAP, per_day_cap=PER_DAY_CAP,
                    now_x=x(tf.now) if start <= tf.now < end else None, hours=hours,
                    label_w=LABEL_W, track_w=TRACK_W, row_h=ROW_H, head_h=HEAD_H,
                    svg_w=LABEL_W + TRACK_W + 10, svg_h=HEAD_H + ROW_H * max(len(shown), 1) + 4,
                    prev_url=url_for("ui.calendar_day", date=(day - timedelta(days=1)).isoformat(), **nav),
                    next_url=url_for("ui.calendar_day", date=(day + timedelta(days=1)).isoformat(), **nav),
                    month_url=url_for("ui.calendar", date=day.isoformat(), **nav))

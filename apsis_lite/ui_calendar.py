"""The calendar pages: a month or week grid and a day timeline.

Past runs come from the store (by scheduled time, through the run filter);
upcoming due times are computed from the jobs' schedules, never stored.
Days begin and end at midnight in the viewer's zone.

The work is bounded whatever the data: at most RUN_CAP runs per window, at
most PER_DAY_CAP (in a grid cell GRID_DAY_CAP) due times per job and day, and at most STEP_BUDGET due
times in all per page; the page says when a limit cut something off.
"""

import heapq
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from flask import request, url_for

from . import jobs as jobs_mod
from .calendars import CalendarError, load_calendars
from .errors import BadRequest
from .runfilter import _join, _split_op, _terms, compile_filter
from .runs import ACTIVE, FINISHED, PENDING
from .timeutil import first_instant_at, from_epoch, parse_date

RUN_CAP = 2000         # runs read per window, newest first
PER_DAY_CAP = 100      # due times kept per job and day in a day timeline; more shows as "100+"
GRID_DAY_CAP = 10      # the same in a month or week cell, which shows a count, not each time
STEP_BUDGET = 25_000   # due times computed per page, over all jobs
CELL_MAX = 6           # entries of each kind listed in a month cell (a week cell: 4x)
DAY_ROWS_MAX = 300     # job rows in a day timeline
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
    due: dict = field(default_factory=dict)     # job_id -> [epoch]
    more: set = field(default_factory=set)      # job ids with more due times than were counted


# -- the filter, applied to due times ----------------------------------------------


def due_matcher(q):
    """Predicates ``(job_ok(job_id), args_ok(args))`` for the run filter ``q``, applied to due times.

    A due time is what would become a run in state "scheduled" with the
    schedule's args, so every term has a meaning: words and ``job:`` match
    the job id as for runs, ``state:`` matches if it names "scheduled", and
    ``ARG=VAL`` the schedule's args. ``compile_filter`` has already checked
    the text, so terms here are well formed.
    """
    job_terms, arg_terms = [], []
    for raw, segs in _terms(q or ""):
        neg = bool(segs) and not segs[0][1] and segs[0][0].startswith("!")
        if neg:
            segs = [(segs[0][0][1:], False)] + segs[1:]
        test, on_args = _term_test(segs)
        wrapped = (lambda v, f=test: not f(v)) if neg else test
        (arg_terms if on_args else job_terms).append(wrapped)
    return (lambda job_id: all(f(job_id) for f in job_terms),
            (lambda args: all(f(args) for f in arg_terms)) if arg_terms else None)


def _term_test(segs):
    """(predicate, whether it takes args rather than a job id) for one term."""
    left, op, right = _split_op(segs, "=:")
    if op == ":" and not any(q for _, q in left):
        name, value = _join(left).lower(), _join(right)
        if name == "job":
            return (lambda job_id: job_id == value), False
        if name == "state":
            names = [n.strip().lower() for n in value.split(",")]
            hit = any("scheduled".startswith(n) for n in names if n)
            return (lambda _job_id: hit), False
    left, op, right = _split_op(segs, "=")
    if op == "=":
        name, value = _join(left), _join(right)
        if not right:
            return (lambda args: name in args), True
        return (lambda args: str(args.get(name)) == value if name in args else False), True
    word = _join(segs).lower()
    return (lambda job_id: word in job_id.lower()), False


# -- data ------------------------------------------------------------------------


def day_start(d: date, zone) -> float:
    """The epoch time at which day ``d`` begins in ``zone``."""
    return first_instant_at(datetime.combine(d, time()), zone).timestamp()


def due_times(engine, since, until, bounds, job_ok, args_ok, budget=STEP_BUDGET, per_day=PER_DAY_CAP,
              stored=frozenset()):
    """Due times of matching jobs in [since, until), bounded.

    ``bounds`` are the epoch starts of the window's days (and its end): a
    job's times beyond ``per_day`` in one day are skipped by restarting its
    schedules at the next day. Times in ``stored`` ((job_id, rounded epoch)
    of runs already planned) are left out before counting. Returns ``(list of Due, {(day index, job_id)
    with more}, jobs computed, jobs matching)``.
    """
    found, more = [], set()
    jobs = sorted((j for j in engine.jobs.items() if job_ok(j[0])), key=lambda j: j[0])
    done = 0
    for job_id, job in jobs:
        if budget <= 0:
            break
        done += 1
        schedules = [s for s in job.schedules if s.enabled]
        if not schedules:
            continue
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
    return found, more, done, len(jobs)


def window_runs(store, where, params, since, until):
    """Runs scheduled in [since, until) matching the filter: (runs, whether capped)."""
    runs, nxt = store.query_runs(where, params, since=since, until=until, limit=RUN_CAP)
    return runs, nxt is not None


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
    if not text:
        return today
    try:
        return parse_date(text.strip())
    except ValueError as exc:
        raise BadRequest(f"date: {exc}") from None


# -- routes ----------------------------------------------------------------------


def register_calendar(bp, config, store, engine, page, zone_name):
    """Add /calendar and /calendar/day to the pages blueprint ``bp``."""
    from .ui_format import TimeFormat

    library, _problems = load_calendars(getattr(config, "calendars_dir", None))

    def common():
        """The filter, holidays and zone shared by both pages."""
        tf = TimeFormat(zone_name(), engine.clock())
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
            grid_start = first - timedelta(days=first.weekday())
            grid_end = nxt_month + timedelta(days=(7 - nxt_month.weekday()) % 7)
            prev_date, next_date = (first - timedelta(days=1)).replace(day=1), nxt_month
            title = first.strftime("%B %Y")
        else:
            grid_start = anchor - timedelta(days=anchor.weekday())
            grid_end = grid_start + timedelta(days=7)
            prev_date, next_date = grid_start - timedelta(days=7), grid_end
            title = f"Week of {grid_start.isoformat()}"
        days = [grid_start + timedelta(days=i) for i in range((grid_end - grid_start).days)]
        bounds = [day_start(d, tf.zone) for d in days] + [day_start(grid_end, tf.zone)]
        cells = [DayCell(d, bounds[i], bounds[i + 1], in_month=view == "week" or d.month == anchor.month,
                         today=d == today, holiday=holidays is not None and d in holidays)
                 for i, d in enumerate(days)]
        runs, runs_capped = window_runs(store, where, params, bounds[0], bounds[-1])
        pending = set()
        for run in sorted(runs, key=lambda r: (r.time_schedule, r.run_id)):
            cells[bisect_right(bounds, run.time_schedule) - 1].runs.append(run)
            if run.state in PENDING:
                pending.add((run.job_id, round(run.time_schedule, 3)))
        dues, more, jobs_done, jobs_total = due_times(
            engine, max(bounds[0], tf.now), bounds[-1], bounds, job_ok, args_ok, per_day=GRID_DAY_CAP,
            stored=pending)
        for d in dues:
            cells[bisect_right(bounds, d.t) - 1].due.setdefault(d.job_id, []).append(d.t)
        for i, job_id in more:
            cells[i].more.add(job_id)
        nav = {k: v for k, v in {"q": q, "holidays": holidays_name, "view": view}.items() if v}
        return page("calendar.html", active="calendar", view=view, title=title, cells=cells,
                    weeks=[cells[i:i + 7] for i in range(0, len(cells), 7)],
                    cell_max=CELL_MAX * (4 if view == "week" else 1), abbr=ABBR,
                    q=q, holidays_name=holidays_name, calendar_names=library.names(),
                    runs_capped=runs_capped, run_cap=RUN_CAP, per_day_cap=PER_DAY_CAP,
                    jobs_done=jobs_done, jobs_total=jobs_total, anchor=anchor,
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
        dues, more, jobs_done, jobs_total = due_times(
            engine, max(start, tf.now), end, [start, end], job_ok, args_ok, stored=pending)
        for d in dues:
            row = rows.setdefault(d.job_id, {"bars": [], "marks": [], "due": [], "more": False, "counts": {}})
            row["due"].append({"t": d.t, "x": x(d.t)})
        for _i, job_id in more:
            rows[job_id]["more"] = True
        job_ids = sorted(rows)
        shown = job_ids[:DAY_ROWS_MAX]
        hours = [{"x": x(day_start(day, tf.zone) + h * 3600), "label": f"{h:02d}:00"} for h in range(0, 24, 3)]
        nav = {k: v for k, v in {"q": q, "holidays": holidays_name}.items() if v}
        return page("calendar_day.html", active="calendar", day=day, rows=[(j, rows[j]) for j in shown],
                    rows_total=len(job_ids), rows_max=DAY_ROWS_MAX, abbr=ABBR, q=q,
                    holidays_name=holidays_name, calendar_names=library.names(),
                    holiday=holidays is not None and day in holidays,
                    runs_capped=runs_capped, run_cap=RUN_CAP, per_day_cap=PER_DAY_CAP,
                    jobs_done=jobs_done, jobs_total=jobs_total,
                    now_x=x(tf.now) if start <= tf.now < end else None, hours=hours,
                    label_w=LABEL_W, track_w=TRACK_W, row_h=ROW_H, head_h=HEAD_H,
                    svg_w=LABEL_W + TRACK_W + 10, svg_h=HEAD_H + ROW_H * max(len(shown), 1) + 4,
                    prev_url=url_for("ui.calendar_day", date=(day - timedelta(days=1)).isoformat(), **nav),
                    next_url=url_for("ui.calendar_day", date=(day + timedelta(days=1)).isoformat(), **nav),
                    month_url=url_for("ui.calendar", date=day.isoformat(), **nav))

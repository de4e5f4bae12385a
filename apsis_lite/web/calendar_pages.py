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

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date, timedelta

from flask import request, url_for
from markupsafe import Markup

from apsis_lite.model.calendars import CalendarError, load_calendars
from apsis_lite.web.calendar_dues import (
    ARGS_STEP_BUDGET, GRID_DAY_CAP, PER_DAY_CAP, day_job_times, due_matcher, due_times, grid_dues,
)
from apsis_lite.web.due_summary import DueSummaries, Warmer, day_start, grid_bounds
from apsis_lite.errors import BadRequest
from apsis_lite.web.request_args import shown
from apsis_lite.store.runfilter import compile_filter
from apsis_lite.model.runs import ACTIVE, FINISHED, PENDING
from apsis_lite.timeutil import get_tz, parse_date

RUN_CAP = 2000         # runs read per window, latest scheduled first
CELL_MAX = 6           # entries of each kind listed in a month cell (a week cell: 4x)
DAY_ROWS_MAX = 300     # job rows in a day timeline
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(9998, 12, 31)   # days the calendar shows
ABBR = {"scheduled": "sched", "waiting": "wait", "starting": "start", "running": "run",
        "stopping": "stop", "success": "ok", "failure": "fail", "error": "err", "skipped": "skip"}

# The day timeline's SVG geometry, in its own units (pixels at 100%).
LABEL_W, TRACK_W, ROW_H, HEAD_H = 230, 960, 30, 20


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


# -- data ------------------------------------------------------------------------


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

"""The calendar's day timeline (``/calendar/day``): a row per job, its runs as bars and marks
on the day's hours, its due times as ticks (drawn here as SVG: a busy day has thousands)."""

from datetime import timedelta

from flask import request, url_for
from markupsafe import Markup

from apsis_lite.engine.slices import Slices
from apsis_lite.model.runs import ACTIVE, FINISHED, PENDING
from apsis_lite.web.backend import backend
from apsis_lite.web.calendar_dues import ARGS_STEP_BUDGET, PER_DAY_CAP, day_job_times, due_times
from apsis_lite.web.due_summary import day_start
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.calendar import ABBR, RUN_CAP, calendar_query, calendar_state, parse_day, window_runs
from apsis_lite.web.pages.rendering import page

DAY_ROWS_MAX = 300     # job rows in a day timeline

# The day timeline's SVG geometry, in its own units (pixels at 100%).
LABEL_W, TRACK_W, ROW_H, HEAD_H = 230, 960, 30, 20


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


def run_span(run, now):
    """(start, end) of a run's bar: from starting/running to its end (now while active)."""
    start = run.times.get("starting") or run.times.get("running")
    if start is None:
        return None
    if run.state in ACTIVE:
        return start, max(start, now)
    ends = [run.times[s] for s in FINISHED if s in run.times]
    return start, max([start] + ends + ([run.time_updated] if not ends and run.time_updated else []))


def new_row():
    return {"bars": [], "marks": [], "due": [], "more": False, "counts": {}}


def run_rows(runs, now, x):
    """Rows ``{job_id: row}`` of the day's runs (a bar once started, else a mark at its scheduled
    time, ``x(t)`` across), and the (job_id, time) of those still pending."""
    rows, pending = {}, set()
    for run in sorted(runs, key=lambda r: (r.time_schedule, r.run_id)):
        row = rows.setdefault(run.job_id, new_row())
        row["counts"][run.state] = row["counts"].get(run.state, 0) + 1
        bar = run_span(run, now)
        if bar is None:
            row["marks"].append({"run": run, "x": x(run.time_schedule)})
            if run.state in PENDING:
                pending.add((run.job_id, round(run.time_schedule, 3)))
        else:
            x0, x1 = x(bar[0]), x(bar[1])
            row["bars"].append({"run": run, "x": x0, "w": max(round(x1 - x0, 1), 2),
                                "start": bar[0], "end": bar[1]})
    return rows, pending


def add_due_rows(query, rows, start, end, pending):
    """Add the due times from now to ``end`` to ``rows``, for the first DAY_ROWS_MAX jobs with runs
    or due times: (job ids shown, rows in all, jobs computed, jobs matching)."""
    engine = backend().engine
    pause = Slices()
    since = max(start, query.tf.now)
    found, more, jobs_done, jobs_total = [], set(), 0, 0
    if query.args_ok is not None:
        # Args come from each due time: no summary to reuse, so compute them here.
        found, more, jobs_done, jobs_total = due_times(engine, since, end, [start, end], query.job_ok,
                                                       query.args_ok, budget=ARGS_STEP_BUDGET, stored=pending,
                                                       pause=pause)
        due_jobs = {d.job_id for d in found}
    elif since < end:
        w = calendar_state().warmer.day.summary(engine.jobs, [start, end], query.tf.now, pause)
        due_jobs = {j for j, e in w.entries.items() if e.mask & 1 and query.job_ok(j)}
    else:
        due_jobs = set()
    # Only the rows shown need each due time.
    shown = sorted(set(rows) | due_jobs)[:DAY_ROWS_MAX]
    rows_total = len(set(rows) | due_jobs)
    if query.args_ok is None:
        for job_id in shown:
            if job_id in due_jobs:
                day_job_times(job_id, engine.jobs[job_id], since, end, [start, end], PER_DAY_CAP,
                              pending, found, more, pause)
    for d in found:
        rows.setdefault(d.job_id, new_row())["due"].append(d.t)
    for _i, job_id in more:
        rows[job_id]["more"] = True
    return [j for j in shown if j in rows], rows_total, jobs_done, jobs_total


@bp.get("/calendar/day")
def calendar_day():
    query = calendar_query()
    tf = query.tf
    day = parse_day(request.args.get("date", ""), query.today)
    start, end = day_start(day, tf.zone), day_start(day + timedelta(days=1), tf.zone)
    span = end - start

    def x(t):
        return round(LABEL_W + TRACK_W * min(max(t - start, 0), span) / span, 1)

    runs, runs_capped = window_runs(backend().store, query.where, query.params, start, end)
    rows, pending = run_rows(runs, tf.now, x)
    shown, rows_total, jobs_done, jobs_total = add_due_rows(query, rows, start, end, pending)
    label = day_labeller(tf, day, start, end)
    for k, job_id in enumerate(shown):
        row = rows[job_id]
        row["due_svg"] = due_marks_svg(row["due"], HEAD_H + k * ROW_H, label, start, span)
    hours = [{"x": x(day_start(day, tf.zone) + h * 3600), "label": f"{h:02d}:00"} for h in range(0, 24, 3)]
    nav = {k: v for k, v in {"q": query.q, "holidays": query.holidays_name}.items() if v}
    return page("calendar_day.html", active="calendar", day=day, rows=[(j, rows[j]) for j in shown],
                rows_total=rows_total, rows_max=DAY_ROWS_MAX, jobs_done=jobs_done, jobs_total=jobs_total,
                abbr=ABBR, q=query.q, holidays_name=query.holidays_name,
                calendar_names=calendar_state().library.names(),
                holiday=query.holidays is not None and day in query.holidays,
                runs_capped=runs_capped, run_cap=RUN_CAP, per_day_cap=PER_DAY_CAP,
                now_x=x(tf.now) if start <= tf.now < end else None, hours=hours,
                label_w=LABEL_W, track_w=TRACK_W, row_h=ROW_H, head_h=HEAD_H,
                svg_w=LABEL_W + TRACK_W + 10, svg_h=HEAD_H + ROW_H * max(len(shown), 1) + 4,
                prev_url=url_for("ui.calendar_day", date=(day - timedelta(days=1)).isoformat(), **nav),
                next_url=url_for("ui.calendar_day", date=(day + timedelta(days=1)).isoformat(), **nav),
                month_url=url_for("ui.calendar", date=day.isoformat(), **nav))

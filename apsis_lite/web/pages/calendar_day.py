"""The calendar's day timeline (``/calendar/day``): a row per job, its runs as bars and marks
on the day's hours, its due times as ticks (drawn here as SVG: a busy day has thousands)."""

from datetime import timedelta

from flask import request, url_for
from markupsafe import Markup

from apsis_lite.engine.slices import Slices
from apsis_lite.model.runs import ACTIVE, FINISHED, PENDING
from apsis_lite.timeutil import format_duration
from apsis_lite.web.backend import backend
from apsis_lite.web.calendar_dues import ARGS_STEP_BUDGET, day_job_times, due_times
from apsis_lite.web.due_summary import day_start
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.calendar import ABBR, RUN_CAP, calendar_query, calendar_state, parse_day, window_runs
from apsis_lite.web.pages.rendering import page

DAY_ROWS_MAX = 300     # job rows in a day timeline
DUE_MARKS_CAP = 1440   # due times drawn per job: one a minute reaches midnight
BAND_GAP = 4           # due marks closer than this (in pixels) merge into a band
RUN_MIN_W = 6          # the narrowest run bar, in pixels: a run of a few ms stays visible
DENSE_SLICES = 96      # past DUE_MARKS_CAP, the rest of a job's day is drawn by quarter-hours

# The day timeline's SVG geometry, in its own units (pixels at 100%).
LABEL_W, TRACK_W, ROW_H, HEAD_H = 230, 960, 30, 20


def due_marks_svg(marks, y, label, start, span):
    """The due marks of one timeline row as SVG, built here: a busy day has thousands.

    ``marks`` are sorted ``(first, last, count, dense)`` spans within the day
    [start, start + span): a due time is ``(t, t, 1, False)``, a stretch
    holding more due times than were counted one by one has ``dense`` set.
    Marks closer than BAND_GAP pixels merge into one band, so a job due every
    minute costs one element, not 1,440.
    """
    y1, y2 = y + 4, y + ROW_H - 4
    parts = []
    for first, last, count, dense in merged_marks(marks, span * BAND_GAP / TRACK_W):
        x0 = round(LABEL_W + TRACK_W * (first - start) / span, 1)
        if count == 1 and not dense:
            parts.append(f'<line class="tl-due" x1="{x0}" x2="{x0}" y1="{y1}" y2="{y2}">'
                         f'<title>due {label(first)}</title></line>\n')
            continue
        x1 = round(LABEL_W + TRACK_W * (last - start) / span, 1)
        what = (f"due at least {count} times" if dense
                else f"due {count} times, about every {format_duration((last - first) / (count - 1))}")
        parts.append(f'<rect class="tl-due-band" x="{x0}" y="{y1}" width="{max(round(x1 - x0, 1), 2)}" '
                     f'height="{y2 - y1}"><title>{what}, {label(first)} – {label(last)}</title></rect>\n')
    return Markup("".join(parts))


def time_marks(times, gap):
    """Sorted due ``times`` as marks (see ``due_marks_svg``), neighbours less than ``gap``
    apart joined; one pass over plain floats, as a dense row has 1,440 of them."""
    out = []
    if not times:
        return out
    first = last = times[0]
    count = 0
    for t in times:
        if t - last >= gap:
            out.append((first, last, count, False))
            first, count = t, 0
        last = t
        count += 1
    out.append((first, last, count, False))
    return out


def merged_marks(marks, gap):
    """``marks`` (see ``due_marks_svg``) joined where one ends less than ``gap`` before the next."""
    out = []
    for first, last, count, dense in marks:
        if out and first - out[-1][1] < gap:
            f, l, n, d = out[-1]
            out[-1] = (f, max(l, last), n + count, d or dense)
        else:
            out.append((first, last, count, dense))
    return out


def dense_rest(job_id, job, after, start, end, pending):
    """The marks of a job's day past its first DUE_MARKS_CAP due times (the last at ``after``):
    the day cut in DENSE_SLICES, a slice with more than one due time drawn whole, so the
    work stays bounded however often the job is due."""
    width = (end - start) / DENSE_SLICES
    marks = []
    for i in range(DENSE_SLICES):
        a, b = max(start + i * width, after + 1e-6), min(start + (i + 1) * width, end)
        if a >= b:
            continue
        found, more = [], set()
        day_job_times(job_id, job, a, b, [a, b], 1, pending, found, more)
        if more:
            marks.append((found[0].t, b, 2, True))
        elif found:
            marks.append((found[0].t, found[0].t, 1, False))
    return marks


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
            row["bars"].append({"run": run, "x": x0, "w": max(round(x1 - x0, 1), RUN_MIN_W),
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
                                                       query.args_ok, budget=ARGS_STEP_BUDGET,
                                                       per_day=DUE_MARKS_CAP, stored=pending, pause=pause)
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
                times = []
                day_job_times(job_id, engine.jobs[job_id], since, end, [start, end], DUE_MARKS_CAP,
                              pending, times, more, pause)
                rows.setdefault(job_id, new_row())["due"] = sorted(d.t for d in times)
    else:
        for d in found:
            rows.setdefault(d.job_id, new_row())["due"].append(d.t)
    for _i, job_id in more:
        rows[job_id]["more"] = True
    gap = (end - start) * BAND_GAP / TRACK_W
    for job_id in shown:
        row = rows.get(job_id)
        if row is None:
            continue
        row["due"].sort()
        row["marks_due"] = time_marks(row["due"], gap)
        if row["more"] and query.args_ok is None and row["due"]:
            # More than one a minute (only a sub-minute interval is): the rest of the day still shows.
            row["marks_due"] += dense_rest(job_id, engine.jobs[job_id], row["due"][-1], start, end, pending)
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

    if query.error:  # shown in the filter box; the timeline waits for a filter that reads
        rows, runs_capped, shown, rows_total, jobs_done, jobs_total = {}, False, [], 0, 0, 0
    else:
        runs, runs_capped = window_runs(backend().store, query.where, query.params, start, end)
        rows, pending = run_rows(runs, tf.now, x)
        shown, rows_total, jobs_done, jobs_total = add_due_rows(query, rows, start, end, pending)
    label = day_labeller(tf, day, start, end)
    for k, job_id in enumerate(shown):
        row = rows[job_id]
        row["due_svg"] = due_marks_svg(row.get("marks_due", ()), HEAD_H + k * ROW_H, label, start, span)
    hours = [{"x": x(day_start(day, tf.zone) + h * 3600), "label": f"{h:02d}:00"} for h in range(0, 24, 3)]
    nav = {k: v for k, v in {"q": query.q, "holidays": query.holidays_name}.items() if v}
    return page("calendar_day.html", 400 if query.error else 200, active="calendar", day=day,
                filter_error=query.error, rows=[(j, rows[j]) for j in shown],
                rows_total=rows_total, rows_max=DAY_ROWS_MAX, jobs_done=jobs_done, jobs_total=jobs_total,
                abbr=ABBR, q=query.q, holidays_name=query.holidays_name,
                calendar_names=calendar_state().library.names(),
                holiday=query.holidays is not None and day in query.holidays,
                runs_capped=runs_capped, run_cap=RUN_CAP,
                now_x=x(tf.now) if start <= tf.now < end else None, hours=hours,
                label_w=LABEL_W, track_w=TRACK_W, row_h=ROW_H, head_h=HEAD_H,
                svg_w=LABEL_W + TRACK_W + 10, svg_h=HEAD_H + ROW_H * max(len(shown), 1) + 4,
                prev_url=url_for("ui.calendar_day", date=(day - timedelta(days=1)).isoformat(), **nav),
                next_url=url_for("ui.calendar_day", date=(day + timedelta(days=1)).isoformat(), **nav),
                month_url=url_for("ui.calendar", date=day.isoformat(), **nav))

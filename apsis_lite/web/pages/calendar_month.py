"""The calendar's month and week grids (``/calendar``): per day, the runs scheduled and the jobs due."""

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date, timedelta

from flask import request, url_for

from apsis_lite.engine.slices import Slices
from apsis_lite.errors import BadRequest
from apsis_lite.model.runs import PENDING
from apsis_lite.web.backend import backend
from apsis_lite.web.calendar_dues import GRID_DAY_CAP, PER_DAY_CAP, grid_dues
from apsis_lite.web.due_summary import grid_bounds
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.calendar import ABBR, RUN_CAP, calendar_query, calendar_state, parse_day, window_runs
from apsis_lite.web.pages.rendering import page

CELL_MAX = 6           # entries of each kind listed in a month cell (a week cell: 4x)


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
    entries: list = field(default_factory=list)  # what the cell lists: Entry, by time


@dataclass(frozen=True)
class Entry:
    """One line of a cell: a run, or a job's first due time that day (with its count)."""

    t: float
    job_id: str
    label: str              # the part of job_id that tells the cell's jobs apart
    run: object = None
    count: int = 0


def distinct_part(job_ids):
    """``{job id: label}``: each id's last path parts, as few as tell it from the other ids
    ("team/nightly/zeta", "team/nightly/alpha", "tick" -> "zeta", "alpha", "tick")."""
    parts = {j: j.split("/") for j in job_ids}
    labels = {}
    for j, p in parts.items():
        k = 1
        while k < len(p) and any(q[-k:] == p[-k:] for other, q in parts.items() if other != j):
            k += 1
        labels[j] = "/".join(p[-k:])
    return labels


def cell_entries(cell, cell_max):
    """The cell's first ``cell_max`` runs and due jobs, as one list ordered by time."""
    runs, dues = cell.runs[:cell_max], sorted(cell.due.items())[:cell_max]
    labels = distinct_part({r.job_id for r in runs} | {j for j, _ in dues})
    entries = [Entry(r.time_schedule, r.job_id, labels[r.job_id], run=r) for r in runs]
    entries += [Entry(first, j, labels[j], count=count) for j, (first, count) in dues]
    # A due entry after a run at the same time: what happened reads before what is planned.
    return sorted(entries, key=lambda e: (e.t, e.run is None, e.job_id))


def grid_title(view, anchor):
    """(title, the previous page's date, the next page's date) of the month or week holding ``anchor``."""
    if view == "month":
        first = anchor.replace(day=1)
        nxt_month = (first + timedelta(days=32)).replace(day=1)
        return first.strftime("%B %Y"), (first - timedelta(days=1)).replace(day=1), nxt_month
    week = anchor - timedelta(days=anchor.weekday())
    return f"Week of {week.isoformat()}", week - timedelta(days=7), week + timedelta(days=7)


def grid_cells(query, view, anchor):
    """The grid's day cells, holding their runs and due jobs; with whether runs were capped,
    the cells' entry limit and (jobs computed, jobs matching)."""
    tf = query.tf
    grid_start, grid_end, bounds = grid_bounds(anchor, view, tf.zone)
    days = [grid_start + timedelta(days=i) for i in range((grid_end - grid_start).days)]
    cells = [DayCell(d, bounds[i], bounds[i + 1], in_month=view == "week" or d.month == anchor.month,
                     today=d == query.today, holiday=query.holidays is not None and d in query.holidays)
             for i, d in enumerate(days)]
    runs, runs_capped = window_runs(backend().store, query.where, query.params, bounds[0], bounds[-1])
    pending = set()
    for run in sorted(runs, key=lambda r: (r.time_schedule, r.run_id)):
        cells[bisect_right(bounds, run.time_schedule) - 1].runs.append(run)
        if run.state in PENDING:
            pending.add((run.job_id, round(run.time_schedule, 3)))
    cell_max = CELL_MAX * (4 if view == "week" else 1)
    per_day, jobs_done, jobs_total = grid_dues(backend().engine, calendar_state().warmer.grid, bounds, tf.now,
                                               query.job_ok, query.args_ok, pending, cell_max, pause=Slices())
    for c, (due, total, more) in zip(cells, per_day):
        c.due, c.due_total, c.more = due, total, more
        c.entries = cell_entries(c, cell_max)
    return cells, runs_capped, cell_max, jobs_done, jobs_total


@bp.get("/calendar")
def calendar():
    query = calendar_query()
    view = request.args.get("view", "month")
    if view not in ("month", "week"):
        raise BadRequest(f"view: {view!r} is not one of month, week")
    anchor = parse_day(request.args.get("date", ""), query.today)
    title, prev_date, next_date = grid_title(view, anchor)
    if query.error:  # shown in the filter box; the grid waits for a filter that reads
        cells, runs_capped, cell_max, jobs_done, jobs_total = [], False, CELL_MAX, 0, 0
    else:
        cells, runs_capped, cell_max, jobs_done, jobs_total = grid_cells(query, view, anchor)
    nav = {k: v for k, v in {"q": query.q, "holidays": query.holidays_name, "view": view}.items() if v}
    return page("calendar.html", 400 if query.error else 200, active="calendar", view=view,
                filter_error=query.error, title=title, cells=cells,
                weeks=[cells[i:i + 7] for i in range(0, len(cells), 7)],
                cell_max=cell_max, abbr=ABBR, grid_day_cap=GRID_DAY_CAP,
                q=query.q, holidays_name=query.holidays_name, calendar_names=calendar_state().library.names(),
                runs_capped=runs_capped, run_cap=RUN_CAP, per_day_cap=PER_DAY_CAP,
                anchor=anchor, jobs_done=jobs_done, jobs_total=jobs_total,
                prev_url=url_for("ui.calendar", date=prev_date.isoformat(), **nav),
                next_url=url_for("ui.calendar", date=next_date.isoformat(), **nav),
                today_url=url_for("ui.calendar", **nav),
                day_url=lambda d: url_for("ui.calendar_day", date=d.isoformat(),
                                          **{k: v for k, v in nav.items() if k != "view"}))

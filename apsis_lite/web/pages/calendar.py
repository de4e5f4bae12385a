"""What the calendar pages share: the holiday calendars and due-time summaries of this app,
the filter and day a request asks for, and the runs of a window.

Past runs come from the store (by scheduled time, through the run filter);
upcoming due times are computed from the jobs' schedules (``calendar_dues``).
Days begin and end at midnight in the viewer's zone. The per-day summaries
are kept warm in the background once the calendar has been looked at. At
most RUN_CAP runs are read per window; the page says when that cut
something off.
"""

from dataclasses import dataclass
from datetime import date

from flask import current_app, request

from apsis_lite.errors import BadRequest
from apsis_lite.model.calendars import CalendarError, load_calendars
from apsis_lite.store.runfilter import compile_filter
from apsis_lite.timeutil import get_tz, parse_date
from apsis_lite.web.backend import backend
from apsis_lite.web.calendar_dues import GRID_DAY_CAP, due_matcher
from apsis_lite.web.due_summary import DueSummaries, Warmer
from apsis_lite.web.format import DEFAULT_ZONE, TimeFormat
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.rendering import zone
from apsis_lite.web.request_args import shown

RUN_CAP = 2000         # runs read per window, latest scheduled first
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(9998, 12, 31)   # days the calendar shows
ABBR = {"scheduled": "sched", "waiting": "wait", "starting": "start", "running": "run",
        "stopping": "stop", "success": "ok", "failure": "fail", "error": "err", "skipped": "skip"}
EXTENSION = "apsis_calendar"


@dataclass(frozen=True)
class CalendarState:
    """This app's calendar: the holiday calendars it offers, and the warmer that keeps the
    due-time summaries of the month and week grids (``warmer.grid``) and of the day
    timeline (``warmer.day``)."""

    library: object
    warmer: Warmer


def set_up_calendar(state):
    """The app's CalendarState, made when the pages are registered on it."""
    library, _problems = load_calendars(getattr(backend(state.app).config, "calendars_dir", None))
    # The day timeline needs from the summary only which jobs are due at all.
    warmer = Warmer(backend(state.app).engine, DueSummaries(GRID_DAY_CAP), DueSummaries(0),
                    [get_tz(DEFAULT_ZONE)])
    state.app.extensions[EXTENSION] = CalendarState(library, warmer)
    state.app.extensions["calendar_warmer"] = warmer  # the benchmarks and tests drive it


bp.record_once(set_up_calendar)


def calendar_state() -> CalendarState:
    """The calendar of the app serving this request."""
    return current_app.extensions[EXTENSION]


@dataclass(frozen=True)
class CalendarQuery:
    """The filter, holidays and zone a calendar request asks for."""

    tf: TimeFormat
    q: str
    where: str
    params: list
    job_ok: object          # see calendar_dues.due_matcher
    args_ok: object
    holidays_name: str
    holidays: object        # the holiday calendar, or None
    today: date
    error: str = ""         # what is wrong with the filter or holidays: the page shows it in place


def calendar_query() -> CalendarQuery:
    """This request's filter, holidays and zone; the first look at the calendar starts its warmer."""
    tf = TimeFormat(zone(), backend().engine.clock())
    warmer = calendar_state().warmer
    warmer.seen(tf.zone)
    # Warming starts with the first look at the calendar, not with the
    # server: with 10,000 cron jobs a pass costs some 15 s of CPU and 70 MB,
    # which a server whose calendar nobody opens should not pay.
    warmer.start()
    q = request.args.get("q", "")
    holidays_name = request.args.get("holidays", "").strip()
    today = tf.local(tf.now).date()
    try:
        where, params = compile_filter(q)
        job_ok, args_ok = due_matcher(q)
    except BadRequest as exc:
        return CalendarQuery(tf, q, "0", [], None, None, holidays_name, None, today, error=str(exc))
    holidays = None
    if holidays_name:
        try:
            holidays = calendar_state().library.get(holidays_name)
        except CalendarError as exc:
            return CalendarQuery(tf, q, where, params, job_ok, args_ok, holidays_name, None, today,
                                 error=f"holidays: {exc}")
    return CalendarQuery(tf, q, where, params, job_ok, args_ok, holidays_name, holidays, today)


def window_runs(store, where, params, since, until):
    """Runs scheduled in [since, until) matching the filter: (runs, whether capped)."""
    runs = store.calendar_runs(where, params, since=since, until=until, limit=RUN_CAP + 1)
    return runs[:RUN_CAP], len(runs) > RUN_CAP


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

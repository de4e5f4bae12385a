"""The runs page (``/runs``; ``/`` with a filter, its old address, still shows it): runs matching a filter, newest first, as rerun groups, a page at a time.

Pages are keyset pages (a cursor: the run id to continue below); a rerun
group is listed once, on the page holding its newest matching run, and
"newer" steps backwards from any page.
"""

from flask import request, url_for

from apsis_lite.errors import BadRequest
from apsis_lite.model.runs import STATES, format_run_id, parse_run_id
from apsis_lite.store.run_listing import within_times
from apsis_lite.store.runfilter import compile_filter
from apsis_lite.web.backend import backend
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.form_input import time_field
from apsis_lite.web.pages.rendering import fragment_for, page, zone
from apsis_lite.web.pages.run_groups import group_runs
from apsis_lite.web.request_args import int_arg

RUNS_PAGE = 50


def runs_form(args):
    """The filter form's values as sent."""
    return {"q": args.get("q", ""), "state": args.getlist("state"),
            "since": args.get("since", ""), "until": args.get("until", ""),
            "cursor": args.get("cursor", ""), "limit": args.get("limit", "")}


def runs_query(args):
    """The page's filter from query args: (where, params, since, until, form values)."""
    form = {**runs_form(args), "state": [s for s in args.getlist("state") if s in STATES]}
    where, params = compile_filter(form["q"])
    if form["state"]:
        where = f"({where}) AND state IN ({','.join('?' * len(form['state']))})"
        params = params + form["state"]
    tz = zone()
    since = time_field("since", form["since"], tz)
    until = time_field("until", form["until"], tz)
    return where, params, since, until, form


def groups_on_newer_pages(group_ids, where, params, since, until, cursor):
    """Of ``group_ids``, those with a matching run at or after ``cursor``.

    A rerun group is listed once, on the page holding its newest
    matching run; a page past the first leaves out the groups an
    earlier page showed. One index probe per group.
    """
    store = backend().store
    cond, values = within_times(where, params, since, until)
    shown = set()
    for g in group_ids:
        hit, _ = store.query_runs(f"{cond} AND (run_id = ? OR rerun_group = ?) AND run_id >= ?",
                                  values + [g, g, cursor], limit=1)
        if hit:
            shown.add(g)
    return shown


def newer_cursor(where, params, since, until, cursor, limit):
    """The cursor of the page before the one at ``cursor`` (keyset backwards), or None
    when that is the newest page."""
    cond, values = within_times(where, params, since, until)
    # The ``limit + 1`` matching runs just after the cursor, oldest first.
    newer, _ = backend().store.query_runs(
        f"run_id IN (SELECT run_id FROM runs WHERE {cond} AND run_id >= ? ORDER BY run_id LIMIT ?)",
        values + [cursor, limit + 1], limit=limit + 1)
    if len(newer) <= limit:
        return None
    return newer[1].run_id + 1  # newest first: the page holds newer[1:], so it starts above newer[1]


def runs_url(form, cursor=None):
    """The runs page with ``form``'s filter, at ``cursor``."""
    return url_for("ui.runs", **{k: v for k, v in form.items() if v and k != "cursor"},
                   **({"cursor": cursor} if cursor else {}))


def runs_page_of(args, where, params, since, until, cursor_text):
    """(groups, next cursor, newer cursor) of the page of the filter's runs at ``cursor_text``."""
    cursor = parse_run_id(cursor_text) if cursor_text else None
    limit = min(max(int_arg(args, "limit", RUNS_PAGE), 1), RUNS_PAGE)
    runs_, nxt = backend().store.query_runs(where, params, since=since, until=until, limit=limit, cursor=cursor)
    groups, newer = group_runs(runs_), None
    if cursor is not None:
        shown_before = groups_on_newer_pages([g.group_id for g in groups], where, params, since, until, cursor)
        groups = [g for g in groups if g.group_id not in shown_before]
        newer = newer_cursor(where, params, since, until, cursor, limit)
    return groups, nxt, newer


@bp.get("/runs")
def runs():
    error, groups, nxt, newer, status = None, [], None, None, 200
    form = runs_form(request.args)
    try:
        where, params, since, until, form = runs_query(request.args)
        groups, nxt, newer = runs_page_of(request.args, where, params, since, until, form["cursor"])
    except BadRequest as exc:
        error, status = str(exc), 400
    # With ``limit`` the list is embedded in another page (a job's recent
    # runs), which has no filter form to keep its polls in step with.
    embedded = "limit" in request.args
    ctx = {"form": form, "groups": groups, "error": error, "states": STATES,
           "sync_with": None if embedded else "#runs-filter",
           "poll_url": runs_url(form, form["cursor"] or None),
           "next_url": runs_url(form, format_run_id(nxt)) if nxt else None,
           "first_url": runs_url(form) if form["cursor"] else None,
           # Backwards a page; from the second page that is the newest one.
           "newer_url": (runs_url(form, format_run_id(newer)) if newer
                         else runs_url(form) if form["cursor"] and not error else None)}
    if fragment_for("runs-results"):
        return page("_runs_results.html", status, **ctx)
    return page("runs.html", status, active="runs", **ctx)

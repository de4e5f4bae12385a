"""The overview (``/``): is everything all right? What failed lately and whether it has
recovered, what runs, waits, is late or paused, what is due next; each count a link
into the runs list filtered to it. Refreshed in place like the lists.

Every read is bounded (see ``store/overview_reads``): the page costs the same
at a million runs as at a hundred.
"""

from dataclasses import dataclass

from flask import current_app, request, url_for

from apsis_lite.model.runs import Run
from apsis_lite.web.backend import backend
from apsis_lite.web.format import TimeFormat
from apsis_lite.web.next_due import NextDueTimes
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.jobs import filter_quote
from apsis_lite.web.pages.rendering import fragment_for, page, zone
from apsis_lite.web.pages.runs import runs as runs_list

DAY = 86400.0
LIST_LIMIT = 8          # runs listed per panel
FAILURE_PROBE = 25      # newest failures looked at for the jobs still failing (one probe each)
COUNT_CAP = 20_000      # runs counted in the last day at most (shown as "N+" beyond: a poll stays cheap)
LATE_CAP = 1000         # overdue runs counted at most
RUNS_ARGS = ("q", "state", "since", "until", "cursor", "limit")

bp.add_app_template_filter(filter_quote, "filter_quote")


@dataclass
class Count:
    """A tile: how many runs are ``kind``, and the runs list filtered to them."""

    kind: str
    label: str
    n: int
    url: str
    note: str
    capped: bool = False  # counted up to a cap: there may be more


@dataclass
class Failure:
    """A recent failed or errored run, and the job's newer success if there is one."""

    run: Run
    recovered: int | None


def _next_due(engine, now):
    times = current_app.extensions.setdefault("apsis_next_due", NextDueTimes())
    return times.soonest(engine, now, LIST_LIMIT)


def recent_failures(store, limit):
    """The newest failed and errored runs, newest first, each with the job's later success if any."""
    runs = store.newest_in_state("failure", limit) + store.newest_in_state("error", limit)
    runs = sorted(runs, key=lambda r: r.run_id, reverse=True)[:limit]
    return [Failure(r, store.succeeded_since(r.job_id, r.run_id)) for r in runs]


def in_flight(store, limit):
    """Runs starting, running or stopping, the longest-running first (at most ``limit``)."""
    # The oldest due first, over all of them: the newest few of each state would miss the longest.
    return store.runs_in_states(("starting", "running", "stopping"), limit)


def local_field(tf: TimeFormat, t: float) -> str:
    """``t`` as the runs list's time fields take it: the viewer's zone, to the second."""
    return tf.local(t).strftime("%Y-%m-%dT%H:%M:%S")


def overview_context():
    b = backend()
    store, engine, config = b.store, b.engine, b.config
    now = engine.clock()
    tf = TimeFormat(zone(), now)
    day, day_capped = store.state_counts_between(now - DAY, now, COUNT_CAP)
    totals = store.stats()["runs_by_state"]
    late_before = now - config.sanity_behind
    failures = recent_failures(store, FAILURE_PROBE)
    failing = list(dict.fromkeys(f.run.job_id for f in failures if f.recovered is None))
    due, not_worked_out = _next_due(engine, now)
    since = local_field(tf, now - DAY)
    late_count = store.overdue_count(late_before, LATE_CAP)

    def runs_link(*states, **extra):
        return url_for("ui.runs", state=list(states), **extra)

    counts = [
        Count("failure", "failed", day.get("failure", 0), runs_link("failure", since=since), "in the last 24 h",
              day_capped),
        Count("error", "errors", day.get("error", 0), runs_link("error", since=since), "in the last 24 h",
              day_capped),
        Count("success", "succeeded", day.get("success", 0), runs_link("success", since=since), "in the last 24 h",
              day_capped),
        Count("running", "running", sum(totals.get(s, 0) for s in ("starting", "running", "stopping")),
              runs_link("starting", "running", "stopping"), "now"),
        Count("waiting", "waiting", totals.get("waiting", 0), runs_link("waiting"), "on conditions or a pause"),
        Count("late", "late", late_count, runs_link("scheduled", until=local_field(tf, late_before)),
              "due and not started", late_count >= LATE_CAP),
    ]
    return {
        "now": now, "counts": counts, "links": {c.kind: c.url for c in counts}, "late_count": late_count,
        "failures": failures[:LIST_LIMIT], "failing": failing, "failing_more": len(failures) == FAILURE_PROBE,
        "running": in_flight(store, LIST_LIMIT),
        "waiting": store.newest_in_state("waiting", LIST_LIMIT),
        "late": store.overdue_runs(late_before, LIST_LIMIT), "late_threshold": config.sanity_behind,
        "due": due, "due_paused": {d.job_id: engine.pause_of_job(d.job_id) for d in due},
        "not_worked_out": not_worked_out, "job_count": len(engine.jobs),
        "broken_count": len(engine.job_errors), "pauses": engine.pauses,
        "failures_url": runs_link("failure", "error"),
    }


@bp.get("/")
def overview():
    # The runs list lived here: its links (with a filter or a page) still lead to it.
    if any(k in request.args for k in RUNS_ARGS) or fragment_for("runs-results"):
        return runs_list()
    ctx = overview_context()
    if fragment_for("overview-results"):
        return page("_overview_results.html", **ctx)
    return page("overview.html", active="overview", **ctx)

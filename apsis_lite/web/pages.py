"""The browser pages: server-rendered HTML with htmx fragments.

Thin, like the API: it reads through the (read-only) store and changes
state only through the engine's operations, always with a POST. A page and
the fragment that refreshes it come from one template, the fragment alone
when htmx asks for it (``HX-Request``). Lists and the run page poll for
fresh fragments every couple of seconds (see ``static/app.js``): a poll is
one short request, so it suits waitress's fixed thread pool as well as
gevent, where a server-sent event stream would hold a thread per open tab.
"""

import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

import yaml
from flask import (
    Blueprint,
    Response,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from apsis_lite.errors import ApsisError, BadRequest, NotFound
from apsis_lite.model.pauses import parse_pause_request
from apsis_lite.model.programs import parse_program
from apsis_lite.store.runfilter import compile_filter
from apsis_lite.model.runs import ACTIVE, FINISHED, PENDING, STATES, format_run_id, parse_run_id
from apsis_lite.model.schedules import SpecError
from apsis_lite.timeutil import format_duration
from apsis_lite.web.calendar_pages import register_calendar
from apsis_lite.web.format import (
    DEFAULT_ZONE,
    TimeFormat,
    complete_utf8,
    job_zone,
    render_markdown,
    valid_zone,
    zone_names,
)
from apsis_lite.web.security import current_user, safe_next
from apsis_lite.web.request_args import int_arg, shown, time_value

RUNS_PAGE = 50
JOBS_PAGE = 200
JOB_RECENT_RUNS = 20
INITIAL_OUTPUT = 256 * 1024   # the run page shows at most the last this many bytes at first
TAIL_CHUNK = 256 * 1024       # and takes at most this much more per poll
ZONE_COOKIE = "tz"
SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGKILL")
MARK_STATES = ("success", "failure", "error", "skipped")


class CrossSiteRequest(ApsisError):
    """A state-changing request sent by a page of another site."""

    status = 403


@dataclass
class RunGroup:
    """An original run and its reruns (newest first), as one block of a runs list."""

    original: object
    reruns: list = field(default_factory=list)
    expanded: bool = False

    @property
    def group_id(self):
        return self.original.run_id


def netloc(url: str):
    """The host and port a URL names, or None if it is not a URL."""
    try:
        return urlsplit(url).netloc
    except ValueError:
        return None


def filter_quote(text: str) -> str:
    """``text`` quoted for the run filter language when it needs it."""
    if text and not any(c.isspace() or c in '"\\:=!' for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def job_matches(job, q: str) -> bool:
    """Whether ``q`` is in the job's id, description or one of its labels (any case)."""
    if not q:
        return True
    q = q.lower()
    meta = job.metadata or {}
    hay = [job.job_id, str(meta.get("description") or "")] + [str(x) for x in meta.get("labels") or []]
    return any(q in h.lower() for h in hay)


def folder_tree(job_ids):
    """Nested folders of job ids: ``{"folders": {name: tree}, "jobs": [job_id]}``."""
    root = {"folders": {}, "jobs": []}
    for job_id in job_ids:
        node = root
        for part in job_id.split("/")[:-1]:
            node = node["folders"].setdefault(part, {"folders": {}, "jobs": []})
        node["jobs"].append(job_id)
    return root


def parse_args_text(text: str) -> dict:
    """Args typed one ``name=value`` per line."""
    args = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        name, eq, value = line.partition("=")
        if not eq or not name.strip():
            raise BadRequest(f"args, line {number}: expected name=value, got {line.strip()!r}")
        args[name.strip()] = value.strip()
    return args


def create_ui(config, store, engine, launcher):
    """The pages blueprint over a read ``store``, the ``engine`` and its ``launcher``."""
    bp = Blueprint("ui", __name__)
    bp.add_app_template_filter(format_duration, "duration")
    # The banner in base.html: every page says when scheduled runs are paused.
    bp.app_context_processor(lambda: {"active_pauses": engine.pauses, "global_pause": engine.job_pause(None),
                                      "health_problems": engine.health.problems()})

    # -- plumbing ---------------------------------------------------------------

    def zone():
        return valid_zone(request.cookies.get(ZONE_COOKIE)) or DEFAULT_ZONE

    def page(template, status=200, **ctx):
        tf = TimeFormat(zone(), engine.clock())
        return render_template(template, tf=tf, zone=tf.zone_name, job_zone_of=job_zone_of,
                               finished=FINISHED, active_states=ACTIVE, pending=PENDING, **ctx), status

    def job_zone_of(job_id):
        job = engine.jobs.get(job_id)
        return job_zone(job) if job is not None else None

    def fragment_for(target_id):
        """Whether htmx asked for just the element ``target_id``."""
        return (request.headers.get("HX-Request") == "true"
                and not request.headers.get("HX-History-Restore-Request")
                and request.headers.get("HX-Target") == target_id)

    def go(url):
        """Send the browser to ``url``: htmx follows HX-Redirect, a plain form a 303."""
        if request.headers.get("HX-Request"):
            resp = make_response("", 204)
            resp.headers["HX-Redirect"] = url
            return resp
        return redirect(url, 303)

    @bp.before_request
    def same_origin_posts():
        # Browsers send Origin with every POST; a page of another site must
        # not be able to stop or start runs through a user's browser.
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin and origin != "null" and netloc(origin) != request.host:
                raise CrossSiteRequest(f"refused a request from another site ({shown(origin)})")

    def time_field(name, text, tz):
        if not text or text.strip().lower() == "now":
            return None
        return time_value(text, name, tz)

    # -- runs -------------------------------------------------------------------

    def group_runs(runs, expand=()):
        """Runs of a page as rerun groups, in the order their newest member appears."""
        order = list(dict.fromkeys(r.rerun_group or r.run_id for r in runs))
        originals = store.runs_by_ids(order)
        for r in runs:
            originals.setdefault(r.rerun_group or r.run_id, r)
        reruns = store.reruns_in_groups(order)
        return [RunGroup(originals[g], reruns.get(g, []), g in expand) for g in order]

    def runs_query(args):
        """The page's filter from query args: (where, params, since, until, form values)."""
        form = {"q": args.get("q", ""), "state": [s for s in args.getlist("state") if s in STATES],
                "since": args.get("since", ""), "until": args.get("until", ""),
                "cursor": args.get("cursor", ""), "limit": args.get("limit", "")}
        where, params = compile_filter(form["q"])
        if form["state"]:
            where = f"({where}) AND state IN ({','.join('?' * len(form['state']))})"
            params = params + form["state"]
        tz = zone()
        since = time_field("since", form["since"], tz)
        until = time_field("until", form["until"], tz)
        return where, params, since, until, form

    def bounded(where, params, since, until):
        """``where`` with the page's time range, for a query of our own."""
        clauses, values = [f"({where})"], list(params)
        if since is not None:
            clauses.append("time_schedule >= ?")
            values.append(since)
        if until is not None:
            clauses.append("time_schedule < ?")
            values.append(until)
        return " AND ".join(clauses), values

    def groups_on_newer_pages(group_ids, where, params, since, until, cursor):
        """Of ``group_ids``, those with a matching run at or after ``cursor``.

        A rerun group is listed once, on the page holding its newest
        matching run; a page past the first leaves out the groups an
        earlier page showed. One index probe per group.
        """
        cond, values = bounded(where, params, since, until)
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
        cond, values = bounded(where, params, since, until)
        # The ``limit + 1`` matching runs just after the cursor, oldest first.
        newer, _ = store.query_runs(
            f"run_id IN (SELECT run_id FROM runs WHERE {cond} AND run_id >= ? ORDER BY run_id LIMIT ?)",
            values + [cursor, limit + 1], limit=limit + 1)
        if len(newer) <= limit:
            return None
        return newer[1].run_id + 1  # newest first: the page holds newer[1:], so it starts above newer[1]

    def runs_url(form, cursor=None):
        return url_for("ui.runs", **{k: v for k, v in form.items() if v and k != "cursor"},
                       **({"cursor": cursor} if cursor else {}))

    @bp.get("/")
    def runs():
        error, groups, nxt, newer, status = None, [], None, None, 200
        form = {"q": request.args.get("q", ""), "state": request.args.getlist("state"),
                "since": request.args.get("since", ""), "until": request.args.get("until", ""),
                "cursor": request.args.get("cursor", ""), "limit": request.args.get("limit", "")}
        try:
            where, params, since, until, form = runs_query(request.args)
            cursor = parse_run_id(form["cursor"]) if form["cursor"] else None
            limit = min(max(int_arg(request.args, "limit", RUNS_PAGE), 1), RUNS_PAGE)
            runs_, nxt = store.query_runs(where, params, since=since, until=until,
                                          limit=limit, cursor=cursor)
            groups = group_runs(runs_)
            if cursor is not None:
                shown_before = groups_on_newer_pages([g.group_id for g in groups], where, params,
                                                     since, until, cursor)
                groups = [g for g in groups if g.group_id not in shown_before]
                newer = newer_cursor(where, params, since, until, cursor, limit)
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

    def run_or_404(run_id):
        return store.get_run(parse_run_id(run_id))

    def summary_ctx(run, rerun=None):
        job = engine.jobs.get(run.job_id)
        group_id = run.rerun_group or run.run_id
        group = store.runs_by_ids([group_id]).get(group_id)
        members = ([group] if group else []) + list(reversed(store.reruns_in_groups([group_id]).get(group_id, [])))
        log = [{**e, "epoch": datetime.fromisoformat(e["time"]).timestamp()} for e in store.run_log(run.run_id)]
        # What a waiting run waits for, condition by condition (checked now).
        why = engine.explain(run.run_id) if run.state == "waiting" and hasattr(engine, "explain") else None
        return {"run": run, "job": job, "log": log, "group": members, "why": why,
                    "rerun": rerun, "live": run.state not in FINISHED, "signals": SIGNALS, "mark_states": MARK_STATES}

    @bp.get("/runs/<run_id>")
    def run_page(run_id):
        run = run_or_404(run_id)
        start, text, end, complete = initial_output(run)
        return page("run.html", active="runs", output_start=start, output_text=text, output_end=end,
                    output_complete=complete, program_text=program_text(run.program),
                    **summary_ctx(run))

    @bp.get("/runs/<run_id>/summary")
    def run_summary(run_id):
        return page("_run_summary.html", **summary_ctx(run_or_404(run_id)))

    def output_chunk(run, offset, size):
        """(bytes from ``offset``, whether that is the end of a finished run's output)."""
        if run.state in FINISHED:
            data = store.read_output(run.run_id, offset, size)
            if data is None:
                return b"", True
            return data, offset + len(data) >= (store.output_length(run.run_id) or 0)
        if run.state in ACTIVE:
            return launcher.read_live_output(run.run_id, offset, size), False
        return b"", False

    def output_size(run):
        if run.state in FINISHED:
            return store.output_length(run.run_id) or 0
        if run.state in ACTIVE:
            try:
                return os.path.getsize(launcher.output_path(run.run_id))
            except OSError:
                return 0
        return 0

    def initial_output(run):
        """(start offset, text, end offset, complete) of the output shown when the page opens."""
        size = output_size(run)
        start = max(0, size - INITIAL_OUTPUT)
        data, complete = output_chunk(run, start, size - start)
        if start:
            # Begin on a character boundary, not inside one.
            skip = next((i for i, b in enumerate(data[:4]) if b & 0xC0 != 0x80), 0)
            data, start = data[skip:], start + skip
        keep = len(data) if complete else complete_utf8(data)
        return start, data[:keep].decode("utf-8", "replace"), start + keep, complete

    @bp.get("/runs/<run_id>/tail")
    def run_tail(run_id):
        run = run_or_404(run_id)
        offset = int_arg(request.args, "offset", 0)
        data, complete = output_chunk(run, offset, TAIL_CHUNK)
        keep = len(data) if complete else complete_utf8(data)
        return page("_output_tail.html", run=run, text=data[:keep].decode("utf-8", "replace"),
                    output_end=offset + keep, output_complete=complete)

    def after_operation(run, affected, rerun=None):
        """The fragment that replaces the one whose button was pressed."""
        view = request.args.get("view", "group")
        if view == "summary":
            return page("_run_summary.html", **summary_ctx(run, rerun))
        group_id = affected.rerun_group or affected.run_id
        groups = group_runs(list(store.runs_by_ids([group_id]).values()), expand=(group_id,) if rerun else ())
        return page("_run_group.html", group=groups[0], signals=SIGNALS, mark_states=MARK_STATES)

    def operate(run_id, fn):
        rid = parse_run_id(run_id)
        result = fn(rid)
        if result.run_id != rid:  # a rerun: the new run, shown beside its original
            return after_operation(store.get_run(rid), result, rerun=result)
        return after_operation(result, result)

    @bp.post("/runs/<run_id>/op/<op>")
    def run_op(run_id, op):
        fns = {"start": engine.start, "skip": engine.skip, "stop": engine.stop, "rerun": engine.rerun}
        if op not in fns:
            raise NotFound(f"no operation {op!r} (operations: {', '.join(fns)})")
        return operate(run_id, lambda rid: fns[op](rid, user=current_user()))

    @bp.post("/runs/<run_id>/signal/<name>")
    def run_signal(run_id, name):
        return operate(run_id, lambda rid: engine.signal(rid, name, user=current_user()))

    @bp.post("/runs/<run_id>/mark/<state>")
    def run_mark(run_id, state):
        return operate(run_id, lambda rid: engine.mark(rid, state, user=current_user()))

    def program_text(program):
        return yaml.safe_dump(program, sort_keys=False, default_flow_style=False).strip() if program else ""

    # -- jobs -------------------------------------------------------------------

    @bp.get("/jobs")
    def jobs():
        q = request.args.get("q", "").strip()
        cursor = request.args.get("cursor") or None
        matching = sorted(j for j, job in engine.jobs.items() if job_matches(job, q))
        shown = [j for j in matching if cursor is None or j > cursor][:JOBS_PAGE]
        remaining = len([j for j in matching if cursor is None or j > cursor]) - len(shown)
        latest = store.latest_runs_of_jobs(shown)
        now = engine.clock()
        due = {}
        for job_id in shown:
            times = engine.next_times(engine.jobs[job_id], 1, after=now)
            due[job_id] = times[0][0].timestamp() if times else None
        ctx = {"q": q, "tree": folder_tree(shown), "jobs": engine.jobs, "latest": latest, "due": due,
                   "total": len(matching), "shown": len(shown), "errors": engine.job_errors,
                   "next_url": url_for("ui.jobs", q=q or None, cursor=shown[-1]) if remaining > 0 else None,
                   "poll_url": url_for("ui.jobs", q=q or None, cursor=cursor)}
        if fragment_for("jobs-results"):
            return page("_jobs_results.html", **ctx)
        return page("jobs.html", active="jobs", **ctx)

    @bp.get("/jobs/<path:job_id>")
    def job_page(job_id):
        job = engine.get_job(job_id)
        try:
            program = parse_program(job.program, allow_templates=True).describe()
        except (SpecError, ValueError):  # a stored ad hoc job of an older form: show it raw
            program = ""
        where, params = compile_filter(f"job:{filter_quote(job_id)}")
        recent, nxt = store.query_runs(where, params, limit=JOB_RECENT_RUNS)
        form = {"q": f"job:{filter_quote(job_id)}"}
        return page("job.html", active="jobs", job=job, program=program,
                    program_yaml=program_text(job.program),
                    description=render_markdown((job.metadata or {}).get("description")),
                    conditions=[program_text(c) for c in job.conditions],
                    actions=[program_text(a) for a in job.actions],
                    next_times=engine.next_times(job, 10), broken=engine.broken(job.job_id),
                    groups=group_runs(recent), error=None, form=form,
                    poll_url=url_for("ui.runs", **form, limit=JOB_RECENT_RUNS),
                    next_url=runs_url(form) if nxt else None, first_url=None,
                    signals=SIGNALS, mark_states=MARK_STATES, zones=zone_names(),
                    job_pause=engine.job_pause(job.job_id))

    # -- pauses: "Pause all" in the header, Pause on a job's page -----------------

    def pause_form():
        return parse_pause_request({"reason": request.form.get("reason", ""),
                                    "mode": request.form.get("mode") or "skip"})

    def after_pause(template, **ctx):
        """htmx: the control pressed, and the banners out of band; a plain form: back to the page."""
        if request.headers.get("HX-Request") != "true":
            return redirect(safe_next(request.form.get("next")), 303)
        html = page(template, **ctx)[0] + render_template("_pauses.html", oob=True)
        return make_response(html)

    @bp.post("/pause")
    def pause_all():
        reason, mode = pause_form()
        engine.pause(None, reason, mode, user=current_user())
        return after_pause("_pause_control.html")

    @bp.post("/resume")
    def resume_all():
        engine.resume(None, user=current_user())
        return after_pause("_pause_control.html")

    @bp.post("/jobs/<path:job_id>/pause")
    def job_pause(job_id):
        reason, mode = pause_form()
        job = engine.get_job(job_id)
        engine.pause(job.job_id, reason, mode, user=current_user())
        return after_pause("_job_pause.html", job=job, job_pause=engine.job_pause(job.job_id))

    @bp.post("/jobs/<path:job_id>/resume")
    def job_resume(job_id):
        job = engine.get_job(job_id)
        engine.resume(job.job_id, user=current_user())
        return after_pause("_job_pause.html", job=job, job_pause=None)

    @bp.post("/jobs/<path:job_id>/run")
    def job_run(job_id):
        job = engine.get_job(job_id)
        args = {p: request.form.get(f"arg:{p}", "") for p in job.params}
        when = run_time(request.form)
        run = engine.submit(job.job_id, args, when, user=current_user())
        return go(url_for("ui.run_page", run_id=format_run_id(run.run_id)))

    def run_time(form):
        if form.get("when", "now") == "now":
            return None
        tz = valid_zone(form.get("tz", "").strip())
        if tz is None:
            raise BadRequest(f"zone: unknown time zone {shown(form.get('tz', ''))}")
        text = form.get("at", "").strip()
        if not text:
            raise BadRequest("time: give a time, or choose 'now'")
        return time_field("time", text, tz)

    # -- ad hoc runs ------------------------------------------------------------

    @bp.get("/adhoc")
    def adhoc():
        return page("adhoc.html", active="adhoc", zones=zone_names(), form=request.args)

    @bp.post("/adhoc")
    def adhoc_submit():
        form = request.form
        when = run_time(form)
        if form.get("kind", "command") == "command":
            command = form.get("command", "").strip()
            if not command:
                raise BadRequest("command: type a shell command to run")
            run = engine.submit_program(command, when, user=current_user())
        else:
            job_id = form.get("job_id", "").strip()
            if not job_id:
                raise BadRequest("job: give the id of the job to run")
            run = engine.submit(job_id, parse_args_text(form.get("args", "")), when, user=current_user())
        return go(url_for("ui.run_page", run_id=format_run_id(run.run_id)))

    # -- the header: zone picker, connection check -------------------------------

    @bp.get("/ui/zones")
    def zones():
        return page("_zones.html", zones=zone_names())

    @bp.post("/ui/zone")
    def set_zone():
        name = valid_zone(request.form.get("tz", "").strip())
        if name is None:
            raise BadRequest(f"unknown time zone {shown(request.form.get('tz', ''))}; "
                             "pick one from the list, e.g. Europe/London")
        # Back to the page the picker was on (its path only: never another site).
        try:
            ref = urlsplit(request.referrer or "")
            back = (ref.path or url_for("ui.runs")) + (f"?{ref.query}" if ref.query else "")
        except ValueError:  # not a URL (a malformed IPv6 host, say)
            back = url_for("ui.runs")
        if request.headers.get("HX-Request"):
            resp = make_response("", 204)
            resp.headers["HX-Refresh"] = "true"
        else:
            resp = redirect(back, 303)
        resp.set_cookie(ZONE_COOKIE, name, max_age=5 * 365 * 86400, samesite="Lax", httponly=True)
        return resp

    @bp.get("/ui/ping")
    def ping():
        # The health banner, out of band: it appears and goes without a reload.
        return render_template("_health.html", oob=True)

    register_calendar(bp, config, store, engine, page, zone)
    return bp


def render_error(message, status):
    """A readable error: the page, or for htmx a message swapped into the page's message area."""
    if request.headers.get("HX-Request") == "true":
        resp = make_response(render_template("_error.html", message=message, status=status), status)
        resp.headers["HX-Retarget"] = "#messages"
        resp.headers["HX-Reswap"] = "innerHTML"
        return resp
    tf = TimeFormat(valid_zone(request.cookies.get(ZONE_COOKIE)) or DEFAULT_ZONE, time.time())
    return render_template("error.html", message=message, status=status, tf=tf, zone=tf.zone_name), status


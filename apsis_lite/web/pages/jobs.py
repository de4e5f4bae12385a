"""The jobs: a searchable folder tree with each job's last run and next due time; a job's page; "run now"."""

from flask import request, url_for

from apsis_lite.engine.slices import Slices
from apsis_lite.model.fields import SpecError
from apsis_lite.model.programs import parse_program
from apsis_lite.model.runs import format_run_id
from apsis_lite.store.runfilter import compile_filter
from apsis_lite.web.backend import backend
from apsis_lite.web.format import TimeFormat, program_text, render_markdown, zone_names
from apsis_lite.web.history_picture import HISTORY_RUNS, history_picture, success_rates
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.form_input import run_time
from apsis_lite.web.pages.rendering import fragment_for, go, page, zone
from apsis_lite.web.pages.run_groups import MARK_STATES, SIGNALS, group_runs
from apsis_lite.web.pages.runs import runs_url
from apsis_lite.web.security import current_user

JOBS_PAGE = 200
JOB_RECENT_RUNS = 20


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


@bp.get("/jobs")
def jobs():
    engine = backend().engine
    q = request.args.get("q", "").strip()
    cursor = request.args.get("cursor") or None
    pause = Slices()  # 10,000 jobs searched, 200 next due times: in slices
    matching = []
    for j, job in engine.jobs.items():
        if job_matches(job, q):
            matching.append(j)
        pause()
    matching.sort()
    shown = [j for j in matching if cursor is None or j > cursor][:JOBS_PAGE]
    remaining = len([j for j in matching if cursor is None or j > cursor]) - len(shown)
    latest = backend().store.latest_runs_of_jobs(shown)
    now = engine.clock()
    due = {}
    for job_id in shown:
        times = engine.next_times(engine.jobs[job_id], 1, after=now)
        due[job_id] = times[0][0].timestamp() if times else None
        pause()
    ctx = {"q": q, "tree": folder_tree(shown), "jobs": engine.jobs, "latest": latest, "due": due,
           "total": len(matching), "shown": len(shown), "errors": engine.job_errors,
           "next_url": url_for("ui.jobs", q=q or None, cursor=shown[-1]) if remaining > 0 else None,
           "poll_url": url_for("ui.jobs", q=q or None, cursor=cursor)}
    if fragment_for("jobs-results"):
        return page("_jobs_results.html", **ctx)
    return page("jobs.html", active="jobs", **ctx)


def job_history(job):
    """The picture of a job's recent runs, with its success rates."""
    store, now = backend().store, backend().engine.clock()
    runs = store.job_history(job.job_id, HISTORY_RUNS)
    return history_picture(job.job_id, runs, now, TimeFormat(zone(), now),
                           success_rates(store, job.job_id, now))


@bp.get("/jobs/<path:job_id>")
def job_page(job_id):
    engine = backend().engine
    job = engine.get_job(job_id)
    if fragment_for("job-history"):
        return page("_job_history.html", job=job, history=job_history(job))
    try:
        program = parse_program(job.program, allow_templates=True).describe()
    except (SpecError, ValueError):  # a stored ad hoc job of an older form: show it raw
        program = ""
    where, params = compile_filter(f"job:{filter_quote(job_id)}")
    recent, nxt = backend().store.query_runs(where, params, limit=JOB_RECENT_RUNS)
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
                job_pause=engine.job_pause(job.job_id), history=job_history(job))


@bp.post("/jobs/<path:job_id>/run")
def job_run(job_id):
    engine = backend().engine
    job = engine.get_job(job_id)
    args = {p: request.form.get(f"arg:{p}", "") for p in job.params}
    when = run_time(request.form)
    run = engine.submit(job.job_id, args, when, user=current_user())
    return go(url_for("ui.run_page", run_id=format_run_id(run.run_id)))

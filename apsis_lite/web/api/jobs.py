"""The jobs: a searchable, paged list, reloading the jobs folder, and one job with its next times."""

from flask import request

from apsis_lite.errors import BadRequest
from apsis_lite.timeutil import to_iso
from apsis_lite.web.api import bp
from apsis_lite.web.api.pauses import pause_jso
from apsis_lite.web.backend import backend
from apsis_lite.web.request_args import int_arg


def job_matches(job, q):
    """Whether ``q`` is in the job's id, description or one of its labels (any case)."""
    if not q:
        return True
    q = q.lower()
    meta = job.metadata or {}
    hay = [job.job_id, str(meta.get("description") or "")] + [str(x) for x in meta.get("labels", []) or []]
    return any(q in h.lower() for h in hay)


@bp.get("/jobs")
def jobs_list():
    engine = backend().engine
    q = request.args.get("q", "")
    limit = int_arg(request.args, "limit", 500, 1, 10_000)
    cursor = request.args.get("cursor")
    ids = sorted(j for j in engine.jobs if job_matches(engine.jobs[j], q) and (cursor is None or j > cursor))
    page = ids[:limit]
    return {
        "items": [{**engine.jobs[j].to_jso(), "pause": pause_jso(j)} for j in page],
        "next": page[-1] if len(ids) > limit else None,
        "errors": [e.to_jso() for e in engine.job_errors],
    }


@bp.post("/jobs/reload")
def jobs_reload():
    reload_jobs = backend().reload_jobs
    if reload_jobs is None:
        raise BadRequest("this server cannot reload its jobs")
    return reload_jobs()


@bp.get("/jobs/<path:job_id>")
def job_detail(job_id):
    engine = backend().engine
    job = engine.get_job(job_id)
    count = int_arg(request.args, "next", 10, 0, 1000)
    jso = job.to_jso()
    jso["pause"] = pause_jso(job.job_id) if not job.adhoc else None
    jso["broken"] = engine.broken(job.job_id)
    jso["global_pause"] = pause_jso(None)
    jso["next_times"] = [
        {"time": to_iso(t), "args": {k: str(v) for k, v in args.items()}}
        for t, args in engine.next_times(job, count)
    ]
    return jso

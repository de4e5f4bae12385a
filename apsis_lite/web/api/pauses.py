"""Pausing scheduled runs, of every job (``/pause``) or of one (``/jobs/<id>/pause``)."""

from apsis_lite.model.pauses import parse_pause_request
from apsis_lite.web.api import bp, request_json
from apsis_lite.web.backend import backend
from apsis_lite.web.security import current_user


def pause_jso(job_id):
    """A job's own pause (the global one is ``/pauses`` and a job's ``global_pause``)."""
    pause = backend().engine.job_pause(job_id)
    return pause.to_jso() if pause is not None else None


@bp.get("/pauses")
def pauses_list():
    return {"items": [p.to_jso() for p in backend().engine.pauses]}


@bp.post("/pause")
def pause_all():
    reason, mode = parse_pause_request(request_json())
    return backend().engine.pause(None, reason, mode, user=current_user()).to_jso()


@bp.delete("/pause")
def resume_all():
    return backend().engine.resume(None, user=current_user()).to_jso()


@bp.post("/jobs/<path:job_id>/pause")
def pause_job(job_id):
    reason, mode = parse_pause_request(request_json())
    return backend().engine.pause(job_id, reason, mode, user=current_user()).to_jso()


@bp.delete("/jobs/<path:job_id>/pause")
def resume_job(job_id):
    return backend().engine.resume(job_id, user=current_user()).to_jso()

"""Pausing scheduled runs from the pages: "Pause all" in the header, Pause on a job's page."""

from flask import make_response, redirect, render_template, request

from apsis_lite.model.pauses import parse_pause_request
from apsis_lite.web.backend import backend
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.rendering import page
from apsis_lite.web.security import current_user, safe_next


def pause_form():
    """(reason, mode) the pause form sent."""
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
    backend().engine.pause(None, reason, mode, user=current_user())
    return after_pause("_pause_control.html")


@bp.post("/resume")
def resume_all():
    backend().engine.resume(None, user=current_user())
    return after_pause("_pause_control.html")


@bp.post("/jobs/<path:job_id>/pause")
def job_pause(job_id):
    engine = backend().engine
    reason, mode = pause_form()
    job = engine.get_job(job_id)
    engine.pause(job.job_id, reason, mode, user=current_user())
    return after_pause("_job_pause.html", job=job, job_pause=engine.job_pause(job.job_id))


@bp.post("/jobs/<path:job_id>/resume")
def job_resume(job_id):
    engine = backend().engine
    job = engine.get_job(job_id)
    engine.resume(job.job_id, user=current_user())
    return after_pause("_job_pause.html", job=job, job_pause=None)

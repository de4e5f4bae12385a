"""How a page answers: its template with the viewer's zone and the engine's clock, just the
fragment when htmx asks for it, a redirect htmx follows, a readable error."""

import time

from flask import make_response, redirect, render_template, request

from apsis_lite.model.runs import ACTIVE, FINISHED, PENDING
from apsis_lite.timeutil import format_duration
from apsis_lite.web.backend import backend
from apsis_lite.web.format import DEFAULT_ZONE, TimeFormat, job_zone, valid_zone
from apsis_lite.web.pages import bp

ZONE_COOKIE = "tz"

bp.add_app_template_filter(format_duration, "duration")


def typed_in(run) -> bool:
    """Whether ``run`` is of a program typed in (an ad hoc command or definition, stored
    as a transient job ``adhoc/...``) rather than of a job file: only such runs are
    labelled "ad hoc" and listed with their program. A job's "Run now" run is that job's."""
    return bool(run.meta.get("adhoc")) and run.job_id.startswith("adhoc/")


bp.add_app_template_global(typed_in, "typed_in")


@bp.app_context_processor
def banners():
    """The banners in base.html: every page says when scheduled runs are paused, the engine is
    unwell, or the latest sanity check found something."""
    b = backend()
    engine = b.engine
    return {"active_pauses": engine.pauses, "global_pause": engine.job_pause(None),
            "health_problems": engine.health.problems(),
            "sanity_report": b.sanity.last if b.sanity is not None else None}


def zone():
    """The viewer's zone: their cookie's, or the default."""
    return valid_zone(request.cookies.get(ZONE_COOKIE)) or DEFAULT_ZONE


def page(template, status=200, **ctx):
    """(HTML of ``template``, ``status``), with times formatted for the viewer."""
    engine = backend().engine
    tf = TimeFormat(zone(), engine.clock())

    def job_zone_of(job_id):
        job = engine.jobs.get(job_id)
        return job_zone(job) if job is not None else None

    return render_template(template, tf=tf, zone=tf.zone_name, job_zone_of=job_zone_of,
                           finished=FINISHED, active_states=ACTIVE, pending=PENDING, **ctx), status


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


def render_error(message, status):
    """A readable error: the page, or for htmx a message swapped into the page's message area."""
    if request.headers.get("HX-Request") == "true":
        resp = make_response(render_template("_error.html", message=message, status=status), status)
        resp.headers["HX-Retarget"] = "#messages"
        resp.headers["HX-Reswap"] = "innerHTML"
        return resp
    tf = TimeFormat(valid_zone(request.cookies.get(ZONE_COOKIE)) or DEFAULT_ZONE, time.time())
    return render_template("error.html", message=message, status=status, tf=tf, zone=tf.zone_name), status

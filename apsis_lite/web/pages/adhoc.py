"""Ad hoc runs: a shell command, or a job with args typed one ``name=value`` per line; now or at a time."""

from flask import request, url_for

from apsis_lite.errors import BadRequest
from apsis_lite.model.runs import format_run_id
from apsis_lite.web.backend import backend
from apsis_lite.web.format import zone_names
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.form_input import run_time
from apsis_lite.web.pages.rendering import go, page
from apsis_lite.web.security import current_user


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


@bp.get("/adhoc")
def adhoc():
    return page("adhoc.html", active="adhoc", zones=zone_names(), form=request.args)


@bp.post("/adhoc")
def adhoc_submit():
    engine = backend().engine
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

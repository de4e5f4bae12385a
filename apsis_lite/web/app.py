"""The Flask application: the JSON API under ``/api/v1`` and the pages (``ui``).

Thin by design: it reads through a read-only store and changes state only
through the engine's operations. Errors become JSON ``{"error": message}``
with 400 (bad input), 404 (unknown), 409 (illegal transition) in one handler;
outside ``/api/`` the same errors render as a readable page or fragment.
"""

import logging
import os
import time

from flask import Blueprint, Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from apsis_lite import paths
from apsis_lite.web import security as webauth
from apsis_lite.web import request_args as webinput
from apsis_lite.web.auth import Auth, ensure_local_token, users_path
from apsis_lite.errors import ApsisError, BadRequest
from apsis_lite.web.httpserver import too_large_message
from apsis_lite.model.pauses import parse_pause_request
from apsis_lite.store.runfilter import compile_filter
from apsis_lite.model.runs import ACTIVE, FINISHED, format_run_id, parse_run_id
from apsis_lite.timeutil import to_iso
from apsis_lite.web.pages import create_ui, render_error

log = logging.getLogger(__name__)

OUTPUT_CHUNK = 1 << 20
MAX_WAIT = 30.0
MAX_LIMIT = 1000


class RequestTooLarge(ApsisError):
    status = 413


class CappedInput:
    """A request body without a length (chunked), read until it passes ``max_size`` bytes:
    then RequestTooLarge. (werkzeug's own limit would quietly cut it short instead.)"""

    def __init__(self, stream, max_size):
        self.stream = stream
        self.max_size = max_size
        self.left = max_size

    def _take(self, data):
        self.left -= len(data)
        if self.left < 0:
            raise RequestTooLarge(too_large_message(self.max_size))
        return data

    def _want(self, size):
        return self.left + 1 if size is None or size < 0 else min(size, self.left + 1)

    def read(self, size=-1):
        return self._take(self.stream.read(self._want(size)))

    def readline(self, size=-1):
        return self._take(self.stream.readline(self._want(size)))


def limit_request_bodies(app, max_size):
    """Refuse a request body larger than ``max_size`` on every route, before reading it.

    A body with a Content-Length is judged by it, first thing; one without
    (chunked) is read through ``CappedInput``. Form fields, held in memory,
    have the same bound.
    """
    # One byte more for werkzeug's own cap, so that CappedInput sees a body that is too large.
    app.config.update(MAX_CONTENT_LENGTH=max_size + 1, MAX_FORM_MEMORY_SIZE=max_size)

    @app.before_request
    def refuse_large_bodies():
        size = request.content_length
        if size is not None and size > max_size:
            raise RequestTooLarge(too_large_message(max_size, size))
        if size is None:
            request.environ["wsgi.input"] = CappedInput(request.environ["wsgi.input"], max_size)


def create_app(config, store, engine, launcher, reload_jobs=None, auth=None):
    """The WSGI app over a read ``store``, the ``engine`` and its ``launcher``.

    ``reload_jobs()`` reloads the jobs folder and says what changed. Every
    request but ``/alive`` and the login page is checked by ``auth`` (by
    default: the local token in the data folder, and the users file); it
    is ``app.extensions["apsis_auth"]``.
    """
    app = Flask(__name__, template_folder=paths.templates_dir(), static_folder=paths.static_dir())
    if auth is None:
        auth = Auth(ensure_local_token(config.data_dir), users_path(config))
    limit_request_bodies(app, config.max_request_size)
    webauth.install(app, config, auth)
    app.json.sort_keys = False
    started = time.time()
    api = Blueprint("api", __name__, url_prefix="/api/v1")

    def run_id_arg(text):
        return parse_run_id(text)

    def int_arg(name, default, lo=0, hi=webinput.MAX_INT):
        return webinput.int_arg(request.args, name, default, lo, hi)

    def time_arg(name):
        return webinput.time_arg(request.args, name)

    def body():
        return webinput.json_body(request.get_data(cache=True, parse_form_data=False))

    def user():
        return webauth.current_user()

    # -- service -------------------------------------------------------------

    @api.get("/alive")
    def alive():
        """200 while the engine passes; 503 with the reason when it is stopped, stuck or cannot write."""
        problems = engine.health.problems()
        if problems:
            return {"ok": False, "error": "; ".join(problems), "problems": problems}, 503
        return {"ok": True}

    @api.get("/stats")
    def stats():
        return {
            **store.stats(),
            "jobs": len(engine.jobs),
            "job_errors": len(engine.job_errors),
            "pid": os.getpid(),
            "uptime": round(time.time() - started, 3),
            "pauses": [p.to_jso() for p in engine.pauses],
            "health": engine.health.to_jso(),
        }

    # -- pauses ----------------------------------------------------------------

    def pause_jso(job_id):
        """A job's own pause (the global one is ``/pauses`` and a job's ``global_pause``)."""
        pause = engine.job_pause(job_id)
        return pause.to_jso() if pause is not None else None

    @api.get("/pauses")
    def pauses_list():
        return {"items": [p.to_jso() for p in engine.pauses]}

    @api.post("/pause")
    def pause_all():
        reason, mode = parse_pause_request(body())
        return engine.pause(None, reason, mode, user=user()).to_jso()

    @api.delete("/pause")
    def resume_all():
        return engine.resume(None, user=user()).to_jso()

    @api.post("/jobs/<path:job_id>/pause")
    def pause_job(job_id):
        reason, mode = parse_pause_request(body())
        return engine.pause(job_id, reason, mode, user=user()).to_jso()

    @api.delete("/jobs/<path:job_id>/pause")
    def resume_job(job_id):
        return engine.resume(job_id, user=user()).to_jso()

    # -- jobs ----------------------------------------------------------------

    def job_matches(job, q):
        if not q:
            return True
        q = q.lower()
        meta = job.metadata or {}
        hay = [job.job_id, str(meta.get("description", ""))] + [str(x) for x in meta.get("labels", []) or []]
        return any(q in h.lower() for h in hay)

    @api.get("/jobs")
    def jobs_list():
        q = request.args.get("q", "")
        limit = int_arg("limit", 500, 1, 10_000)
        cursor = request.args.get("cursor")
        ids = sorted(j for j in engine.jobs if job_matches(engine.jobs[j], q) and (cursor is None or j > cursor))
        page = ids[:limit]
        return {
            "items": [{**engine.jobs[j].to_jso(), "pause": pause_jso(j)} for j in page],
            "next": page[-1] if len(ids) > limit else None,
            "errors": [e.to_jso() for e in engine.job_errors],
        }

    @api.post("/jobs/reload")
    def jobs_reload():
        if reload_jobs is None:
            raise BadRequest("this server cannot reload its jobs")
        return reload_jobs()

    @api.get("/jobs/<path:job_id>")
    def job_detail(job_id):
        job = engine.get_job(job_id)
        count = int_arg("next", 10, 0, 1000)
        jso = job.to_jso()
        jso["pause"] = pause_jso(job.job_id) if not job.adhoc else None
        jso["broken"] = engine.broken(job.job_id)
        jso["global_pause"] = pause_jso(None)
        jso["next_times"] = [
            {"time": to_iso(t), "args": {k: str(v) for k, v in args.items()}}
            for t, args in engine.next_times(job, count)
        ]
        return jso

    # -- runs ----------------------------------------------------------------

    @api.get("/runs")
    def runs_list():
        where, params = compile_filter(request.args.get("q", ""))
        cursor = request.args.get("cursor")
        runs, nxt = store.query_runs(
            where, params, since=time_arg("since"), until=time_arg("until"),
            limit=int_arg("limit", 50, 1, MAX_LIMIT),
            cursor=run_id_arg(cursor) if cursor else None)
        return {"items": [r.to_jso(full=False) for r in runs],
                "next": format_run_id(nxt) if nxt else None}

    @api.get("/runs/<run_id>")
    def run_detail(run_id):
        return store.get_run(run_id_arg(run_id)).to_jso()

    @api.get("/runs/<run_id>/log")
    def run_log(run_id):
        rid = run_id_arg(run_id)
        store.get_run(rid)
        return {"items": store.run_log(rid), "next": None}

    @api.get("/runs/<run_id>/output")
    def run_output(run_id):
        rid = run_id_arg(run_id)
        run = store.get_run(rid)
        if "offset" not in request.args:
            return whole_output(run)
        offset = int_arg("offset", 0, 0)
        size = int_arg("limit", OUTPUT_CHUNK, 1, OUTPUT_CHUNK)
        wait = webinput.float_arg(request.args, "wait", 0.0, 0.0, MAX_WAIT)
        deadline = time.monotonic() + wait
        while True:
            run = store.get_run(rid)
            data, complete = output_from(run, offset, size)
            if data or complete or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        headers = {"X-Run-State": run.state, "X-Output-Complete": "1" if complete else "0",
                   "X-Output-Offset": str(offset + len(data))}
        return Response(data, mimetype="application/octet-stream", headers=headers)

    def output_from(run, offset, size):
        """(bytes from offset, whether that reaches the end of a finished run's output)."""
        if run.state in FINISHED:
            data = store.read_output(run.run_id, offset, size)
            if data is None:
                return b"", True
            length = store.output_length(run.run_id) or 0
            return data, offset + len(data) >= length
        if run.state in ACTIVE:
            return launcher.read_live_output(run.run_id, offset, size), False
        return b"", False

    def whole_output(run):
        def chunks():
            offset = 0
            while True:
                data, complete = output_from(store.get_run(run.run_id), offset, OUTPUT_CHUNK)
                if data:
                    yield data
                    offset += len(data)
                if complete or not data:
                    return
        name = f"{format_run_id(run.run_id)}-output.txt"
        return Response(chunks(), mimetype="text/plain; charset=utf-8",
                        headers={"Content-Disposition": f'inline; filename="{name}"',
                                 "X-Run-State": run.state})

    @api.post("/runs")
    def runs_create():
        jso = body()
        unknown = set(jso) - {"job_id", "job", "args", "program", "time", "tz"}
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        given = [k for k in ("job_id", "job", "program") if k in jso]
        if len(given) != 1:
            raise BadRequest("give exactly one of job_id (with args), job (an inline job definition, with args) "
                             "or program")
        tz = webinput.zone_value(jso.get("tz"), "tz")
        when = None
        if jso.get("time") not in (None, "", "now"):
            when = webinput.time_value(jso["time"], "time", tz)
        args = jso.get("args") or {}
        if not isinstance(args, dict):
            raise BadRequest(f"args: expected a JSON object of name: value, got {webinput.kind(args)}")
        if "program" in jso:
            if args:
                raise BadRequest("an inline program takes no args; use an inline job with params")
            run = engine.submit_program(jso["program"], when, user=user())
        elif "job" in jso:
            if not isinstance(jso["job"], dict):
                raise BadRequest("job must be a JSON object in job-file form (params, program, ...)")
            run = engine.submit_job(jso["job"], args, when, user=user())
        else:
            run = engine.submit(webinput.text_field(jso, "job_id", required=True), args, when, user=user())
        return run.to_jso(), 201

    def operation(name, fn):
        def view(run_id, **kw):
            result = fn(run_id_arg(run_id), user=user(), **kw)
            return result.to_jso(), 201 if name == "rerun" else 200
        view.__name__ = f"op_{name}"
        return view

    api.add_url_rule("/runs/<run_id>/start", view_func=operation("start", engine.start), methods=["POST"])
    api.add_url_rule("/runs/<run_id>/skip", view_func=operation("skip", engine.skip), methods=["POST"])
    api.add_url_rule("/runs/<run_id>/stop", view_func=operation("stop", engine.stop), methods=["POST"])
    api.add_url_rule("/runs/<run_id>/rerun", view_func=operation("rerun", engine.rerun), methods=["POST"])
    api.add_url_rule("/runs/<run_id>/signal/<name>",
                     view_func=operation("signal", lambda rid, user, name: engine.signal(rid, name, user=user)),
                     methods=["POST"])
    api.add_url_rule("/runs/<run_id>/mark/<state>",
                     view_func=operation("mark", lambda rid, user, state: engine.mark(rid, state, user=user)),
                     methods=["POST"])

    # -- why a run is where it is; its rerun group --------------------------------

    @api.get("/runs/<run_id>/explain")
    def run_explain(run_id):
        return engine.explain(run_id_arg(run_id))

    @api.get("/runs/<run_id>/group")
    def run_group(run_id):
        run = store.get_run(run_id_arg(run_id))
        runs = store.rerun_group(run.rerun_group or run.run_id)
        latest = runs[-1]
        return {
            "group": format_run_id(runs[0].run_id),
            "tries": len(runs),
            "outcome": latest.state if latest.state in FINISHED else None,
            "items": [r.to_jso(full=False) for r in runs],
        }

    app.register_blueprint(api)

    app.register_blueprint(create_ui(config, store, engine, launcher))

    def error(message, status):
        if request.path.startswith("/api/"):
            return jsonify(error=message), status
        return render_error(message, status)

    @app.errorhandler(ApsisError)
    def apsis_error(exc):
        resp = error(str(exc), exc.status)
        if exc.status == 503:  # the database cannot be written now: worth trying again soon
            resp = app.make_response(resp)
            resp.headers["Retry-After"] = "5"
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if exc.code == 413:  # werkzeug's, for a chunked body that ran past the limit
            return error(too_large_message(config.max_request_size), 413)
        return error(f"{exc.name}: {exc.description}", exc.code)

    @app.errorhandler(Exception)
    def internal_error(exc):
        log.exception("internal error serving %s %s", request.method, request.path)
        return error(f"internal error: {type(exc).__name__}; see the server log", 500)

    return app

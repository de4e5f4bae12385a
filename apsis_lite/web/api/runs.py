"""The runs: a filtered, paged list; one run, its log, why it is where it is, its rerun group; new runs."""

import os

from flask import request

from apsis_lite.engine.housekeeping import archive_dir, archive_file_name
from apsis_lite.errors import BadRequest, NotFound
from apsis_lite.model.runs import FINISHED, format_run_id, parse_run_id
from apsis_lite.store.maintenance import open_archive
from apsis_lite.store.runfilter import compile_filter
from apsis_lite.web import request_args
from apsis_lite.web.api import bp, request_json
from apsis_lite.web.api.run_params import shorthand_terms
from apsis_lite.web.backend import backend
from apsis_lite.web.security import current_user

MAX_LIMIT = 1000
RUN_FIELDS = {"job_id", "job", "args", "program", "time", "tz"}


@bp.get("/runs")
def runs_list():
    """Runs newest first, matching the filter ``q`` and apsis's parameters (``run_params``);
    with ``archive=NAME``, of the archive file NAME in DATA/archive."""
    args = request.args
    if args.get("archive") is None:
        return _runs_page(backend().store, args)
    store = _open_archive(args["archive"])
    try:
        return _runs_page(store, args)
    finally:
        store.close()


def _runs_page(store, args):
    where, params = compile_filter(args.get("q", ""), extra=shorthand_terms(args, backend().engine, store))
    cursor = args.get("cursor")
    runs, nxt = store.query_runs(
        where, params, since=request_args.time_arg(args, "since"), until=request_args.time_arg(args, "until"),
        limit=request_args.int_arg(args, "limit", 50, 1, MAX_LIMIT),
        cursor=parse_run_id(cursor) if cursor else None)
    return {"items": [r.to_jso(full=False) for r in runs],
            "next": format_run_id(nxt) if nxt else None}


def _open_archive(name):
    """A reader of the archive file ``name``: only a plain file name in the archive folder."""
    try:
        name = archive_file_name(name)
    except ValueError as exc:
        raise BadRequest(f"archive: {exc}") from None
    path = os.path.join(archive_dir(backend().config.data_dir), name)
    if not os.path.isfile(path):
        raise NotFound(f"no archive {name!r} (archives are the runs-YYYY-MM.db files in DATA/archive)")
    return open_archive(path)


@bp.get("/runs/<run_id>")
def run_detail(run_id):
    return backend().store.get_run(parse_run_id(run_id)).to_jso()


@bp.get("/runs/<run_id>/log")
def run_log(run_id):
    store = backend().store
    rid = parse_run_id(run_id)
    store.get_run(rid)
    return {"items": store.run_log(rid), "next": None}


@bp.post("/runs")
def runs_create():
    """A new run: of a job by id, of a job defined inline, or of a bare program; now or at ``time``."""
    jso = request_json()
    unknown = set(jso) - RUN_FIELDS
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    given = [k for k in ("job_id", "job", "program") if k in jso]
    if len(given) != 1:
        raise BadRequest("give exactly one of job_id (with args), job (an inline job definition, with args) "
                         "or program")
    tz = request_args.zone_value(jso.get("tz"), "tz")
    when = None
    if jso.get("time") not in (None, "", "now"):
        when = request_args.time_value(jso["time"], "time", tz)
    args = jso.get("args")
    args = {} if args is None else args
    if not isinstance(args, dict):
        raise BadRequest(f"args: expected a JSON object of name: value, got {request_args.kind(args)}")
    engine = backend().engine
    if "program" in jso:
        if args:
            raise BadRequest("an inline program takes no args; use an inline job with params")
        run = engine.submit_program(jso["program"], when, user=current_user())
    elif "job" in jso:
        if not isinstance(jso["job"], dict):
            raise BadRequest("job must be a JSON object in job-file form (params, program, ...)")
        run = engine.submit_job(jso["job"], args, when, user=current_user())
    else:
        run = engine.submit(request_args.text_field(jso, "job_id", required=True), args, when, user=current_user())
    return run.to_jso(), 201


@bp.get("/runs/<run_id>/explain")
def run_explain(run_id):
    return backend().engine.explain(parse_run_id(run_id))


@bp.get("/runs/<run_id>/group")
def run_group(run_id):
    store = backend().store
    run = store.get_run(parse_run_id(run_id))
    runs = store.rerun_group(run.rerun_group or run.run_id)
    latest = runs[-1]
    return {
        "group": format_run_id(runs[0].run_id),
        "tries": len(runs),
        "outcome": latest.state if latest.state in FINISHED else None,
        "items": [r.to_jso(full=False) for r in runs],
    }

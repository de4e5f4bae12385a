"""A run's page: its facts, log, rerun group and output; the summary and output tail it polls for."""

from datetime import datetime

from flask import request

from apsis_lite.model.runs import FINISHED, parse_run_id
from apsis_lite.web.backend import backend
from apsis_lite.web.format import complete_utf8, program_text
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.rendering import page
from apsis_lite.web.pages.run_groups import MARK_STATES, SIGNALS
from apsis_lite.web.request_args import int_arg
from apsis_lite.web.run_output import output_chunk, output_size

INITIAL_OUTPUT = 256 * 1024   # the run page shows at most the last this many bytes at first
TAIL_CHUNK = 256 * 1024       # and takes at most this much more per poll


def run_or_404(run_id):
    return backend().store.get_run(parse_run_id(run_id))


def summary_ctx(run, rerun=None):
    """What the run summary shows: the run, its job, log, rerun group, what it waits for."""
    engine, store = backend().engine, backend().store
    job = engine.jobs.get(run.job_id)
    group_id = run.rerun_group or run.run_id
    group = store.runs_by_ids([group_id]).get(group_id)
    members = ([group] if group else []) + list(reversed(store.reruns_in_groups([group_id]).get(group_id, [])))
    log = [{**e, "epoch": datetime.fromisoformat(e["time"]).timestamp()} for e in store.run_log(run.run_id)]
    # What a waiting run waits for, condition by condition (checked now).
    why = engine.explain(run.run_id) if run.state == "waiting" and hasattr(engine, "explain") else None
    return {"run": run, "job": job, "log": log, "group": members, "why": why,
            "rerun": rerun, "live": run.state not in FINISHED, "signals": SIGNALS, "mark_states": MARK_STATES}


def initial_output(run):
    """(start offset, text, end offset, complete) of the output shown when the page opens."""
    store, launcher = backend().store, backend().launcher
    size = output_size(store, launcher, run)
    start = max(0, size - INITIAL_OUTPUT)
    data, complete = output_chunk(store, launcher, run, start, size - start)
    if start:
        # Begin on a character boundary, not inside one.
        skip = next((i for i, b in enumerate(data[:4]) if b & 0xC0 != 0x80), 0)
        data, start = data[skip:], start + skip
    keep = len(data) if complete else complete_utf8(data)
    return start, data[:keep].decode("utf-8", "replace"), start + keep, complete


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


@bp.get("/runs/<run_id>/tail")
def run_tail(run_id):
    run = run_or_404(run_id)
    offset = int_arg(request.args, "offset", 0)
    data, complete = output_chunk(backend().store, backend().launcher, run, offset, TAIL_CHUNK)
    keep = len(data) if complete else complete_utf8(data)
    return page("_output_tail.html", run=run, text=data[:keep].decode("utf-8", "replace"),
                output_end=offset + keep, output_complete=complete)

"""The run buttons: start, skip, stop, rerun, signal, mark; each answers with the fragment it replaces."""

from flask import request

from apsis_lite.errors import NotFound
from apsis_lite.model.runs import parse_run_id
from apsis_lite.web.backend import backend
from apsis_lite.web.pages import bp
from apsis_lite.web.pages.rendering import page
from apsis_lite.web.pages.run import summary_ctx
from apsis_lite.web.pages.run_groups import MARK_STATES, SIGNALS, group_runs
from apsis_lite.web.security import current_user


def after_operation(run, affected, rerun=None):
    """The fragment that replaces the one whose button was pressed."""
    view = request.args.get("view", "group")
    if view == "summary":
        return page("_run_summary.html", **summary_ctx(run, rerun))
    group_id = affected.rerun_group or affected.run_id
    groups = group_runs(list(backend().store.runs_by_ids([group_id]).values()),
                        expand=(group_id,) if rerun else ())
    return page("_run_group.html", group=groups[0], signals=SIGNALS, mark_states=MARK_STATES)


def operate(run_id, operation):
    """``operation(run id)`` and the fragment showing its result."""
    rid = parse_run_id(run_id)
    result = operation(rid)
    if result.run_id != rid:  # a rerun: the new run, shown beside its original
        return after_operation(backend().store.get_run(rid), result, rerun=result)
    return after_operation(result, result)


@bp.post("/runs/<run_id>/op/<op>")
def run_op(run_id, op):
    engine = backend().engine
    fns = {"start": engine.start, "skip": engine.skip, "stop": engine.stop, "rerun": engine.rerun}
    if op not in fns:
        raise NotFound(f"no operation {op!r} (operations: {', '.join(fns)})")
    return operate(run_id, lambda rid: fns[op](rid, user=current_user()))


@bp.post("/runs/<run_id>/signal/<name>")
def run_signal(run_id, name):
    return operate(run_id, lambda rid: backend().engine.signal(rid, name, user=current_user()))


@bp.post("/runs/<run_id>/mark/<state>")
def run_mark(run_id, state):
    return operate(run_id, lambda rid: backend().engine.mark(rid, state, user=current_user()))

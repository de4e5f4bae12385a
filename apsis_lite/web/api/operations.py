"""What an operator does to a run: start, skip, stop, rerun (a new run: 201), signal, mark."""

from apsis_lite.model.runs import parse_run_id
from apsis_lite.web.api import bp
from apsis_lite.web.backend import backend
from apsis_lite.web.security import current_user


def operated(operation, run_id, *args, status=200):
    """The JSON of the run ``operation(run, *args, user=...)`` returns, with ``status``."""
    return operation(parse_run_id(run_id), *args, user=current_user()).to_jso(), status


@bp.post("/runs/<run_id>/start")
def op_start(run_id):
    return operated(backend().engine.start, run_id)


@bp.post("/runs/<run_id>/skip")
def op_skip(run_id):
    return operated(backend().engine.skip, run_id)


@bp.post("/runs/<run_id>/stop")
def op_stop(run_id):
    return operated(backend().engine.stop, run_id)


@bp.post("/runs/<run_id>/rerun")
def op_rerun(run_id):
    return operated(backend().engine.rerun, run_id, status=201)


@bp.post("/runs/<run_id>/signal/<name>")
def op_signal(run_id, name):
    return operated(backend().engine.signal, run_id, name)


@bp.post("/runs/<run_id>/mark/<state>")
def op_mark(run_id, state):
    return operated(backend().engine.mark, run_id, state)

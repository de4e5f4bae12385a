"""In-server programs: ``ServerProgram.run`` in a few worker threads, each run with a time limit.

An extension's code must never stall the engine, so it is not called in
the engine's loop: each run is a call in a small pool of native threads,
watched by a greenlet that gives up after the program's time limit. A call
that raises, returns something that is not an Outcome, or runs out of time
ends its own run in error; nothing else waits for it. A thread cannot be
killed, so a call past its limit runs on and its result is ignored; its
``context.stopping`` is set so that a program that looks can stop early.
"""

import logging
import threading
import traceback

import gevent
import gevent.threadpool

from apsis_lite.model.programs import Outcome, ServerContext
from apsis_lite.model.runs import format_run_id
from apsis_lite.timeutil import format_duration

log = logging.getLogger("apsis_lite.engine")

#: Worker threads for in-server programs.
WORKERS = 4


class InServerRunner:
    """Runs in-server programs; ``done(run_id, state, message, output)`` is called in the
    event loop when each ends (``state``: success, failure or error)."""

    def __init__(self, data_dir, done, workers=WORKERS):
        self.data_dir = data_dir
        self._done = done
        self._pool = gevent.threadpool.ThreadPool(workers)
        self._running = {}  # run_id -> its context (for stop)

    def __contains__(self, run_id):
        return run_id in self._running

    def start(self, run, program):
        """Start ``program`` for ``run`` (a Run in 'running')."""
        context = ServerContext(format_run_id(run.run_id), run.job_id, run.args, self.data_dir,
                                threading.Event())
        self._running[run.run_id] = context
        gevent.spawn(self._watch, run.run_id, program, context)

    def stop(self, run_id):
        """Ask a running call to stop (it learns through ``context.stopping``); True if one runs."""
        context = self._running.pop(run_id, None)
        if context is None:
            return False
        context.stopping.set()
        return True

    def _watch(self, run_id, program, context):
        limit = program.time_limit
        started = threading.Event()
        result = self._pool.spawn(_call, program, context, started)
        try:
            state, message, output = result.get(timeout=limit)
        except gevent.Timeout:
            context.stopping.set()
            if started.is_set():
                state, message = "error", f"did not finish within its time limit of {format_duration(limit)}"
            else:
                state, message = "error", (f"did not start within its time limit of {format_duration(limit)}: "
                                           "every worker for in-server programs was busy")
            output = b""
            log.error("run %s: %s (program type %s)", format_run_id(run_id), message, program.type_name)
        if self._running.pop(run_id, None) is None:
            return  # stopped meanwhile: the stop has already ended it
        self._done(run_id, state, message, output)


def _call(program, context, started):
    """In a worker thread: run the program; (state, message, output) whatever it does."""
    started.set()
    try:
        outcome = program.run(context)
    except Exception as exc:
        log.error("run %s: program type %s raised:\n%s", context.run_id, program.type_name,
                  traceback.format_exc())
        return "error", f"the {program.type_name} program failed: {type(exc).__name__}: {exc}", b""
    if outcome is None:
        return "success", "done", b""
    if not isinstance(outcome, Outcome):
        return "error", (f"the {program.type_name} program returned {type(outcome).__name__}, "
                         "not an Outcome"), b""
    output = outcome.output.encode("utf-8", "replace") if isinstance(outcome.output, str) else bytes(outcome.output)
    state = "success" if outcome.success else "failure"
    return state, outcome.message or ("done" if outcome.success else "failed"), output

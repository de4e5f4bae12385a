"""Stopping runs: by hand, on a stop schedule, past a max_duration that stops.

A process gets its stop signal, then SIGKILL after the grace period (the
shepherd does that; the engine commits 'stopping', then writes the request).
An in-server program cannot be killed: its run ends at once, as stopped.
"""

import heapq
import logging
import math

from apsis_lite.engine.faults import disk_fault, raise_if_fault
from apsis_lite.errors import NotFound, TransitionError
from apsis_lite.model.programs import parse_program
from apsis_lite.model.runs import format_run_id
from apsis_lite.timeutil import format_duration, to_iso

# The engine's log lines keep the logger name they had when it was one module.
log = logging.getLogger("apsis_lite.engine")


def request_stop(launcher, run):
    """Hand a run in 'stopping' its stop request: True if a shepherd has it, False if none
    was there to take it, None if it cannot be written (a full disk: the sweep tries again)."""
    program = parse_program(run.program)
    try:
        return bool(launcher.request_stop(run.run_id, program.stop["signal"], program.stop["grace_period"]))
    except OSError as exc:
        if disk_fault(exc) is None:
            raise
        log.warning("run %s: the stop request cannot be written (%s); trying again at the next sweep",
                    format_run_id(run.run_id), exc.strerror)
        return None


class Stopper:
    """Stops runs; owns the heap of stop-schedule times.

    ``reconcile(run, now)`` brings a run in line with its folder when no
    shepherd was there to take its stop request.
    """

    def __init__(self, store, clock, launcher, folders, inserver, reconcile):
        self.store = store
        self.clock = clock
        self.launcher = launcher
        self._folders = folders
        self._inserver = inserver
        self._reconcile = reconcile
        self._stops = []            # heap of (time, run_id): stop schedules

    def reset(self):
        self._stops = []

    def next_wake(self):
        return self._stops[0][0] if self._stops else math.inf

    def stop(self, run_id, user=None, why="stop requested", expected=True):
        """Stop a running run: its stop signal, then SIGKILL after the grace period.

        ``expected``: a program that then ends by its stop signal has done what
        was asked and succeeds (apsis's rule; see ``collecting.outcome``). A
        stop because the run broke its ``max_duration`` passes False.
        """
        run = self.store.get_run(run_id)
        if run.state != "running":
            hint = "; skip it instead" if run.state in ("scheduled", "waiting") else ""
            raise TransitionError(f"run {format_run_id(run_id)} is {run.state}; only a running run can be stopped{hint}")
        program = parse_program(run.program)
        if not program.runs_process:
            return self._stop_inserver(run_id, user, why)
        sig, grace = program.stop["signal"], program.stop["grace_period"]
        if not self.store.transition(run_id, "running", "stopping", self.clock(),
                                     f"{why}: {sig}, then SIGKILL after {format_duration(grace)}",
                                     user=user, meta={"stop_expected": expected}):
            raise TransitionError(f"run {format_run_id(run_id)} changed state meanwhile; try again")
        if request_stop(self.launcher, self.store.get_run(run_id)) is False:
            self._reconcile(self.store.get_run(run_id), self.clock())
        return self.store.get_run(run_id)

    def _stop_inserver(self, run_id, user, why):
        """An in-server program cannot be killed: its run ends now, as stopped, and the
        call is told to stop (``context.stopping``); whatever it returns is ignored."""
        with self.store.write():
            if not self.store.transition(run_id, "running", "stopping", self.clock(), why, user=user):
                raise TransitionError(f"run {format_run_id(run_id)} changed state meanwhile; try again")
            self.store.transition(run_id, "stopping", "failure", self.clock(),
                                  "stopped (a program that runs in the server is abandoned, not killed)",
                                  meta={"stopped": True})
        self._inserver.abandon(run_id)
        return self.store.get_run(run_id)

    def push_stop(self, run):
        """File a run's stop-schedule time, if it has one."""
        stop_at = (run.meta or {}).get("stop_at")
        if stop_at is not None:
            heapq.heappush(self._stops, (stop_at, run.run_id))

    def stop_due(self, now):
        """Stop runs whose stop schedule has come, through the normal stop operation.

        A run not started by then is skipped: its window has closed. One
        still starting is looked at again shortly.
        """
        while self._stops and self._stops[0][0] <= now:
            stop_at, rid = heapq.heappop(self._stops)
            try:
                run = self.store.get_run(rid)
                if run.state == "running":
                    self.stop(rid, why=f"stop schedule: due to stop at {to_iso(stop_at)}")
                elif run.state in ("scheduled", "waiting"):
                    self.store.transition(rid, run.state, "skipped", now,
                                          f"its stop time {to_iso(stop_at)} came before it started")
                    self._folders.discard(rid)
                elif run.state == "starting":
                    heapq.heappush(self._stops, (now + 0.5, rid))
            except (NotFound, TransitionError):
                continue
            except Exception as exc:
                raise_if_fault(exc)
                log.exception("stopping run %s on its stop schedule failed", rid)

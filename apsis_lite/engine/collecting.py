"""Collecting: what shepherds report about runs in flight, recorded in the store.

Shepherds notify the server when a run is running and when it is done; a
notice can be lost, so the periodic sweep also reconciles each run in
flight with its run folder (liveness lock, claim, result) and records what
it finds, including specs nobody claimed and supervisors that vanished.
"""

import logging
from collections import deque

from apsis_lite.agent.protocol import NOTICE_DONE, NOTICE_RUNNING
from apsis_lite.engine.stopping import request_stop
from apsis_lite.model.programs import parse_program
from apsis_lite.model.runs import ACTIVE

# The engine's log lines keep the logger name they had when it was one module.
log = logging.getLogger("apsis_lite.engine")

# A spec not claimed by a shepherd after this long is asked for again (the
# claim rename makes a second request harmless).
RELAUNCH_AFTER = 5.0


class Collector:
    """Owns the notices not handled yet; records results; reconciles runs in flight.

    ``launch(runs)`` hands runs in 'starting' to the agent (a spec nobody claimed is asked for again).
    """

    def __init__(self, store, clock, launcher, guard, alarms, inserver, launch):
        self.store = store
        self.clock = clock
        self.launcher = launcher
        self._guard = guard
        self._alarms = alarms
        self._inserver = inserver
        self._launch = launch
        self._notices = deque()  # ("running"|"done", run_id) from shepherds
        self._awaiting = set()  # runs found at restart on a host not heard from yet

    def notice(self, kind, run_id):
        """A shepherd said a run is running or done (called from the notify server)."""
        self._notices.append((kind, run_id))

    def handle_notices(self):
        # One transaction for all pending notices: a burst of runs starting
        # or ending together costs one commit, not one fsync each.
        with self.store.write():
            while self._notices:
                kind, rid = self._notices.popleft()
                with self._guard.item(self.clock(), rid, f"recording that it is {kind}"):
                    if kind == NOTICE_RUNNING:
                        self._mark_running(rid)
                    elif kind == NOTICE_DONE:
                        self._collect(rid)

    def _mark_running(self, rid):
        info = self.launcher.pid_info(rid)
        if info is None:
            return False
        started = info.get("time") or self.clock()
        meta = {"pid": info.get("pid"), **self.launcher.run_meta(rid)}
        where = meta.get("remote", {}).get("host")
        moved = self.store.transition(rid, "starting", "running", started,
                                      f"running as pid {info.get('pid')}{' on host ' + where if where else ''}",
                                      meta=meta)
        if moved:
            self._alarms.run_started(rid)
        return moved

    def _collect(self, rid):
        """Record a finished run's result and output; False if it has none yet."""
        run = self.store.get_run(rid)
        if run.state not in ACTIVE:
            return False
        res = self.launcher.result(rid)
        if res is None:
            return False
        state, message = outcome(res, _asked_stop_signal(run))
        out = res.get("output") or {}
        meta = {"elapsed": res.get("elapsed"), "rusage": res.get("rusage"), "output": out,
                "timed_out": bool(res.get("timed_out")), "stopped": bool(res.get("stopped"))}
        end = res.get("end") or self.clock()
        with self.store.write():
            if run.state == "starting" and self._mark_running(rid):
                run = self.store.get_run(rid)
            self.store.store_output(rid, self.launcher.output_path(rid),
                                    out.get("bytes_total", 0), out.get("bytes_dropped", 0))
            self.store.transition(rid, run.state, state, end, message,
                                  exit_code=res.get("exit_code"), signal=res.get("signal"), meta=meta)
            # The run folder holds the only copy of the result until this commits.
            self.store.after_commit(lambda: self.launcher.remove(rid))
        return True

    def sweep(self, now):
        """Catch completions whose notice was lost, and specs nobody claimed."""
        for run in self.store.runs_in_states(sorted(ACTIVE)):
            with self._guard.item(now, run.run_id, "checking on it"):
                self.reconcile(run, now)

    def reconcile(self, run, now, after=None, rebooted=False):
        """Bring a run in starting, running or stopping in line with its run folder.

        Used after a restart or a resync (``after``; ``rebooted``: the
        machine restarted since the server last ran), by the periodic sweep
        (for a lost notice), and when a stop finds no shepherd to ask.
        """
        restarted = after == "restart"
        rid = run.run_id
        if (run.meta or {}).get("in_server"):
            if self._inserver.in_flight(rid):
                return  # in flight here, or its result is about to be recorded
            self.store.transition(rid, run.state, "error", now, "the server stopped while it ran "
                                  "(a program that runs in the server does not outlive it)")
            return
        # Liveness before the result: a shepherd writes its result, then
        # releases its lock, so "not alive and no result" is never a race.
        alive = self.launcher.is_alive(rid)
        if not self.launcher.known(rid):
            # A remote run whose host has not answered (yet): nothing is known, so nothing changes.
            if restarted:
                self._awaiting.add(rid)
                self.store.log(rid, now, f"after restart: not heard from {self.launcher.where(rid)} yet; "
                                         "the run is left as it is until it answers")
            return
        awaited = rid in self._awaiting
        self._awaiting.discard(rid)
        # A remote host says itself (as it answers is_alive) whether it restarted since the run started there.
        rebooted = (restarted and rebooted) or self.launcher.host_restarted(rid)
        if self.launcher.result(rid) is not None:
            self._collect(rid)
        elif alive:
            if run.state == "starting":
                self._mark_running(rid)
            elif run.state == "stopping" and not self.launcher.stop_requested(rid):
                # Its stop was committed but could not be written (a full disk): again.
                if request_stop(self.launcher, run) is False:
                    self.reconcile(self.store.get_run(rid), self.clock())
            if restarted or awaited:
                self.store.log(rid, now, "re-attached after restart")
        elif run.state == "starting" and rebooted:
            # Claims are not fsynced (see agent/protocol.py): after a restart of the
            # machine an unclaimed spec proves nothing.
            self.store.transition(rid, "starting", "error", now,
                                  f"may have started: {self.launcher.where(rid)} restarted while it was starting")
            self.launcher.remove(rid)
        elif run.state == "starting" and not self.launcher.claimed(rid):
            # No shepherd has claimed it: the request was lost (a restart, an
            # agent that died) or the agent has not got to it yet.
            pending = self.launcher.spec_pending_since(rid)
            if (after or pending is None or now - pending > RELAUNCH_AFTER) and self.launcher.revoke(rid):
                self.store.log(rid, now, "had provably not started (no shepherd claimed it); starting it now")
                self._launch([self.store.get_run(rid)])
        else:
            self._lost(run, now, rebooted)

    def _lost(self, run, now, rebooted):
        """A run whose supervisor is gone and left no result: error, saying what is known."""
        rid = run.run_id
        info = self.launcher.pid_info(rid) if run.state == "starting" else None
        if info is not None:
            why = (f"started as pid {info.get('pid')}, but its supervisor vanished "
                   "without recording a result")
        elif run.state == "starting":
            why = "may have started: its supervisor vanished while it was starting"
        elif rebooted:
            # Results not yet recorded are not fsynced (see agent/protocol.py).
            why = f"{self.launcher.where(rid)} restarted while it ran, or before its result was recorded"
        else:
            why = "its supervisor vanished without recording a result"
        # The pid, for the sanity check that finds a program left running (see sanity_checks.orphans).
        extra = {"meta": {"pid": info.get("pid")}} if info is not None and info.get("pid") else {}
        self.store.transition(rid, run.state, "error", now, why, **extra)
        self.launcher.remove(rid)


def _asked_stop_signal(run):
    """The signal of a stop asked for by hand or by the stop schedule, or None.

    None too for a stop because of ``max_duration``: that is a failure to
    finish in time, not the end the job asked for.
    """
    if not (run.meta or {}).get("stop_expected"):
        return None
    try:
        return parse_program(run.program).stop["signal"]
    except Exception:  # a bound program read back; if it cannot be, the stop was not ours to judge
        return None


def outcome(res, stop_signal=None):
    """(state, message) for a shepherd's result.

    ``stop_signal``: the signal of a stop asked for by hand or by the stop
    schedule. A program that ends by that signal did what the stop asked:
    a success, as in apsis ("if the program terminates correctly in response
    to the stop request, success"); ended any other way (SIGKILL after the
    grace period, an exit code), a failure.
    """
    if res.get("error"):
        return "error", res["error"]
    notes = []
    if res.get("timed_out"):
        notes.append("timed out")
    elif res.get("stopped"):
        notes.append("stopped")
    if res.get("group_killed"):
        count = res["group_killed"]
        notes.append(f"SIGKILL after the grace period to {count} process{'es' if count != 1 else ''}"
                     " it left in its group")
    if res.get("group_left"):
        notes.append(f"{res['group_left']} of them survived it")
    lost = (res.get("output") or {}).get("bytes_lost")
    if lost:
        notes.append(f"{lost} bytes of output lost: the disk was full")
    suffix = f" ({', '.join(notes)})" if notes else ""
    if res.get("signal"):
        if (stop_signal is not None and res["signal"] == stop_signal
                and res.get("stopped") and not res.get("timed_out")):
            return "success", f"killed by {res['signal']}{suffix}: it was asked to stop with that signal"
        return "failure", f"killed by {res['signal']}{suffix}"
    code = res.get("exit_code")
    if code == 0:
        return "success", f"exit code 0{suffix}"
    return "failure", f"exit code {code}{suffix}"

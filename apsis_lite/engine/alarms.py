"""Alarms: a run's deadline and its job's max_duration, timers that report a run late.

Both are timers in one heap; a deadline is also a row in the store, so that
it outlives a restart. A report is a line in the run's log and a call to
each alarm listener once that line has committed; a max_duration that says
``stop`` also stops the run.
"""

import functools
import heapq
import logging
import math

from apsis_lite.engine.faults import raise_if_fault
from apsis_lite.errors import NotFound, TransitionError
from apsis_lite.model.runs import ACTIVE, dumps
from apsis_lite.timeutil import to_iso

# The engine's log lines keep the logger name they had when it was one module.
log = logging.getLogger("apsis_lite.engine")


class Alarms:
    """Owns the alarm timers, the runs already reported over max_duration, and the listeners.

    ``stop(run_id, why)`` stops a running run (a max_duration with ``stop``).
    """

    def __init__(self, store, catalog, stop):
        self.store = store
        self._catalog = catalog
        self._stop = stop
        self._alarms = []           # heap of (time, kind, run_id): deadlines, max_duration
        self._listeners = []
        self.alarmed = set()        # run ids whose max_duration alarm was reported; dropped when they finish

    def reset(self):
        """Forget the timers (``load`` and re-arming read them back)."""
        self._alarms = []

    def load(self):
        """Arm the deadlines stored in the database."""
        for rid, t, _ in self.store.get_deadlines():
            heapq.heappush(self._alarms, (t, "deadline", rid))

    def next_wake(self):
        return self._alarms[0][0] if self._alarms else math.inf

    def add_listener(self, fn):
        """Call ``fn(run_id, kind, message)`` when a run misses its deadline or max_duration."""
        self._listeners.append(fn)

    def arm_deadline(self, job, run, now):
        """Record a new run's deadline, if its job has one still ahead."""
        deadline = getattr(job, "deadline", None)
        if deadline is None or run is None:
            return
        t = deadline.due(run.args, run.time_schedule)
        if t is None or t <= now:
            return  # created after its deadline (a catch-up, a late rerun), or none before year 9999
        self.store.add_deadline(run.run_id, t, deadline.describe())
        self.store.after_commit(functools.partial(heapq.heappush, self._alarms, (t, "deadline", run.run_id)))

    def run_started(self, rid):
        """A run is now running: arm its job's max_duration, if any job has one."""
        if self._catalog.any_max_duration:
            self.arm_max_duration(self.store.get_run(rid))

    def arm_max_duration(self, run):
        job = self._catalog.jobs.get(run.job_id)
        started = run.times.get("running")
        if job is None or job.max_duration is None or started is None:
            return
        heapq.heappush(self._alarms, (started + job.max_duration.duration, "max_duration", run.run_id))

    def run_finished(self, rid):
        """A run finished: its max_duration alarm can no longer come."""
        self.alarmed.discard(rid)

    def fire(self, now):
        """Report the runs whose alarm time has come, and stop those their max_duration says to."""
        # Deadlines reported in this call, by (job_id, args, time): runs of
        # the same job and args share a deadline time, so they all come due
        # in this one call; nothing needs remembering beyond it.
        reported = set()
        while self._alarms and self._alarms[0][0] <= now:
            t, kind, rid = heapq.heappop(self._alarms)
            try:
                with self.store.write():
                    if kind == "deadline":
                        self._check_deadline(rid, t, now, reported)
                        continue
                    limit = self._check_max_duration(rid, now)
                # Outside the transaction: asking the agent to stop yields.
                if limit is not None and limit.stop:
                    self._stop(rid, f"max_duration {limit.describe()} exceeded")
            except (NotFound, TransitionError):
                continue
            except Exception as exc:  # one bad alarm must not stop the others
                raise_if_fault(exc)
                log.exception("checking the %s of run %s failed", kind, rid)

    def _check_deadline(self, rid, t, now, reported):
        row = self.store.get_deadline(rid)
        if row is None or row[0] != t:
            return
        self.store.delete_deadline(rid)
        run = self.store.get_run(rid)
        if run.state == "success" or self.store.runs_of(run.job_id, run.args, ["success"], limit=1):
            return
        # A later try of its rerun group with the same deadline reports it instead.
        if any(r.run_id > rid and self.store.get_deadline(r.run_id)
               for r in self.store.rerun_group(run.rerun_group or rid)):
            return
        key = (run.job_id, dumps(run.args), t)
        if key in reported:
            return  # two runs of the same job and args: one report
        reported.add(key)
        self._alarm(rid, "deadline", f"deadline {row[1]} missed: {_status_words(run)}", now)

    def _check_max_duration(self, rid, now):
        """Report a run past its job's max_duration; returns that max_duration if it is."""
        run = self.store.get_run(rid)
        job = self._catalog.jobs.get(run.job_id)
        started = run.times.get("running")
        if run.state != "running" or job is None or job.max_duration is None or started is None:
            return
        limit = job.max_duration
        if started + limit.duration > now:  # the job file changed meanwhile
            heapq.heappush(self._alarms, (started + limit.duration, "max_duration", rid))
            return
        if rid in self.alarmed:
            return  # armed twice (at a restart, and as it was found running)
        self.alarmed.add(rid)
        self._alarm(rid, "max_duration", f"ran longer than max_duration {limit.describe()} "
                                         f"(running since {to_iso(started)})", now)
        return limit

    def _alarm(self, rid, kind, message, now):
        self.store.log(rid, now, message)
        for fn in self._listeners:
            self.store.after_commit(functools.partial(_call_alarm_listener, fn, rid, kind, message))

    def explain(self, run, job, out):
        """Add to an explanation the alarms ahead of a run."""
        lines = out["lines"]
        row = self.store.get_deadline(run.run_id)
        if row is not None:
            lines.append(f"deadline {row[1]}: must have succeeded by {to_iso(row[0])}")
        started = run.times.get("running")
        if run.state == "running" and job is not None and job.max_duration and started is not None:
            lines.append(f"max_duration {job.max_duration.describe()}: an alarm at "
                         f"{to_iso(started + job.max_duration.duration)}"
                         + (", and it is stopped" if job.max_duration.stop else ""))


def _call_alarm_listener(fn, rid, kind, message):
    try:
        fn(rid, kind, message)
    except Exception:  # a listener's bug must not stop the engine
        log.exception("alarm listener failed for run %s (%s)", rid, kind)


def _status_words(run):
    """Where a run stands, for a missed deadline: ``the run is still waiting (for ...)``."""
    state = run.state
    if state == "scheduled":
        return f"the run is still scheduled (for {to_iso(run.time_schedule)})"
    if state == "waiting":
        why = run.message or ""
        why = why.removeprefix("waiting ")
        return "the run is still waiting" + (f" ({why})" if why else "")
    if state in ACTIVE:
        return f"the run is still {state} (since {to_iso(run.times.get(state, run.time_updated))})"
    at = run.times.get(state, run.time_updated)
    return f"the run ended {state} at {to_iso(at)}" + (f": {run.message}" if run.message else "")

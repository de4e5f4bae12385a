"""The runs in 'waiting': checking their conditions, filing them, waking and expiring them.

A due run with conditions goes to 'waiting' and is checked at once; if a
condition does not hold, the run is filed in the wait index under what could
change that (runs of a job and args, a resource, a pause) and is not looked
at again until such a change is reported (see reactions.py). So 10,000
waiting runs cost nothing while nothing happens. The pieces (index,
resources, checks) are in waiting.py.
"""

import heapq
import math

from apsis_lite.engine.pauses import words as pause_words
from apsis_lite.engine.waiting import Resources, StoreContext, WaitIndex, check_conditions, explain_run, resource_wants
from apsis_lite.errors import NotFound
from apsis_lite.timeutil import format_duration


class WaitingRuns:
    """Owns the wait index, the resource slots held, the give-up times and the polls."""

    def __init__(self, config, store, catalog, pauses, folders):
        self.config = config
        self.store = store
        self._catalog = catalog
        self._pauses = pauses
        self._folders = folders
        self.reset()

    def reset(self):
        """Forget every waiting run and resource holder (read back at start-up or after a failed write)."""
        self._waits = WaitIndex()
        self._resources = Resources(self.config.resources)
        self._deadlines = []        # heap of (time, run_id, max_time): waiting.max_time
        self._has_deadline = set()
        self._rechecks = []         # heap of (time, run_id): polled conditions to check again

    def __len__(self):
        """How many runs are filed as waiting for something."""
        return len(self._waits)

    def next_wake(self):
        return min(self._deadlines[0][0] if self._deadlines else math.inf,
                   self._rechecks[0][0] if self._rechecks else math.inf)

    def forget(self, run_id):
        """A run no longer waits (it started, failed or was skipped)."""
        self._waits.remove(run_id)

    def hold_resources(self, run_id, conditions):
        """A run in flight holds its resources, over capacity if need be."""
        self._resources.take(run_id, resource_wants(conditions))

    def may_start(self, run, now):
        """Check a waiting run's conditions and resources; True if it may start now.

        Otherwise it is filed under what it waits for, with its reason
        recorded, or sent to the finished state a condition asks for.
        """
        pause = self._pauses.applying_to(run) if self._pauses else None
        if pause is not None:
            self._hold_or_skip(run, pause, now)
            return False
        if not run.conditions:
            return True
        verdict = check_conditions(run, StoreContext(self.store, self._catalog.find_job), self._resources)
        if verdict.ok:
            return True
        rid = run.run_id
        if verdict.finish:
            self._waits.remove(rid)
            if self.store.transition(rid, "waiting", verdict.finish, now, verdict.reason):
                self._folders.discard(rid)
            return False
        self._waits.add(rid, verdict.keys)
        if verdict.recheck:
            heapq.heappush(self._rechecks, (now + max(verdict.recheck, 0.1), rid))
        self.store.set_waiting_reason(rid, verdict.reason, now)
        if rid not in self._has_deadline:
            job = self._catalog.find_job(run.job_id)
            max_time = (job and job.waiting_max_time) or self.config.waiting_max_time
            since = run.times.get("waiting", now)
            heapq.heappush(self._deadlines, (since + max_time, rid, max_time))
            self._has_deadline.add(rid)
        return False

    def _hold_or_skip(self, run, pause, now):
        """A waiting run under a pause: skip it, or file it under the pause until it is lifted."""
        rid = run.run_id
        if pause.mode == "skip":
            self._waits.remove(rid)
            if self.store.transition(rid, "waiting", "skipped", now, f"skipped: {pause_words(pause)}"):
                self._folders.discard(rid)
            return
        self._waits.add(rid, [("pause", pause.scope)])
        self.store.set_waiting_reason(
            rid, f"held: {pause_words(pause)}; starts when the pause is lifted", now)

    def start_waiting(self, run, now, why):
        """waiting -> starting, taking the run's resources; False if it moved meanwhile."""
        wants = resource_wants(run.conditions)
        self._resources.take(run.run_id, wants)
        if self.store.transition(run.run_id, "waiting", "starting", now, why):
            self._waits.remove(run.run_id)
            return True
        self._resources.release(run.run_id)
        return False

    def finished(self, run_id) -> set:
        """A run finished: its resources are free; returns the runs that waited for them."""
        woken = set()
        for name in self._resources.release(run_id):
            woken |= self._waits.pop(("resource", name))
        self._has_deadline.discard(run_id)
        return woken

    def woken_by(self, key) -> set:
        """The runs filed under ``key`` (``("runs", job_id, args)``, ``("pause", scope)``), unfiled."""
        return self._waits.pop(key)

    def polls_due(self, now) -> list:
        """Waiting runs whose condition asked to be polled (see Verdict.recheck) and whose time has come."""
        due = set()
        while self._rechecks and self._rechecks[0][0] <= now:
            due.add(heapq.heappop(self._rechecks)[1])
        return sorted(due)

    def expire(self, now):
        """Send runs that waited longer than their waiting max_time to error."""
        if not self._deadlines or self._deadlines[0][0] > now:
            return
        with self.store.write():
            while self._deadlines and self._deadlines[0][0] <= now:
                _, rid, max_time = heapq.heappop(self._deadlines)
                self._has_deadline.discard(rid)
                try:
                    run = self.store.get_run(rid)
                except NotFound:
                    continue
                if run.state != "waiting":
                    continue
                if self._pauses and self._pauses.applying_to(run) is not None:
                    continue  # a pause is no condition: its hold is not timed out
                self._waits.remove(rid)
                last = f": {run.message}" if run.message else ""
                if self.store.transition(rid, "waiting", "error", now,
                                         f"waited longer than waiting max_time "
                                         f"({format_duration(max_time)}){last}"):
                    self._folders.discard(rid)

    def explain(self, run, job, now):
        """Why a run is in its state, as far as its conditions and resources go (see explain_run)."""
        max_time = (job and job.waiting_max_time) or self.config.waiting_max_time
        ctx = StoreContext(self.store, self._catalog.find_job)
        return explain_run(run, ctx, self._resources, now, max_time=max_time,
                           reruns=job.reruns if job else None)

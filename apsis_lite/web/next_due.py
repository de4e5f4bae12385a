"""Each job's next due time, kept between requests so the overview's "due next" costs little.

Runs are stored only up to the horizon (a couple of minutes), so what is due
later comes from the schedules. A job's next time is computed once and kept
until it passes or the job changes (a reload makes a new ``Job``), so a poll
recomputes only the jobs whose time has come, at most ``budget`` of them.
"""

import heapq
import threading
from dataclasses import dataclass

# Jobs whose next time is computed per request at most; the rest wait for the next poll.
RECOMPUTE_BUDGET = 2000


@dataclass(frozen=True)
class NextDue:
    job_id: str
    t: float
    args: dict


class NextDueTimes:
    """{job_id: (Job, its next due time or None, args)}, refreshed as times pass."""

    def __init__(self):
        self._known = {}
        self._lock = threading.Lock()

    def soonest(self, engine, now, count, budget=RECOMPUTE_BUDGET) -> tuple[list, int]:
        """(The ``count`` soonest ``NextDue`` at or after ``now``, how many jobs are not yet worked out)."""
        jobs = engine.jobs
        with self._lock:
            for job_id in [j for j in self._known if j not in jobs]:
                del self._known[job_id]
            stale = [(job_id, job) for job_id, job in jobs.items() if self._stale(job_id, job, now)]
            for job_id, job in stale[:budget]:
                times = engine.next_times(job, 1, after=now)
                self._known[job_id] = (job, times[0][0].timestamp(), times[0][1]) if times else (job, None, {})
            due = [NextDue(job_id, t, args) for job_id, (_, t, args) in self._known.items()
                   if t is not None and t >= now]
        return heapq.nsmallest(count, due, key=lambda d: (d.t, d.job_id)), max(0, len(stale) - budget)

    def _stale(self, job_id, job, now):
        known = self._known.get(job_id)
        return known is None or known[0] is not job or (known[1] is not None and known[1] < now)

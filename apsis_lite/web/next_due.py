"""Each job's next due time, kept between requests so the overview's "due next" costs little.

Runs are stored only up to the horizon (a couple of minutes), so what is due
later comes from the schedules. A job's next time is worked out once and kept
in a heap until it passes; a reload (a new jobs mapping) keeps the times of
the jobs it left unchanged. A request works out at most ``budget`` jobs (the
first after start-up has them all to do) and reads the soonest few off the
heap without looking at the rest.
"""

import heapq
import threading
from dataclasses import dataclass

from apsis_lite.engine.slices import Slices

# Jobs whose next time is worked out per request at most; the rest wait for the next poll.
RECOMPUTE_BUDGET = 10_000


@dataclass(frozen=True)
class NextDue:
    job_id: str
    t: float
    args: dict


def _smallest(heap, k) -> list:
    """The ``k`` smallest items of a heap, in order, visiting O(k log k) of them."""
    out, frontier = [], [(heap[0], 0)] if heap else []
    while frontier and len(out) < k:
        item, i = heapq.heappop(frontier)
        out.append(item)
        for child in (2 * i + 1, 2 * i + 2):
            if child < len(heap):
                heapq.heappush(frontier, (heap[child], child))
    return out


class NextDueTimes:
    """The jobs' next due times: ``{job_id: (Job, time or None, args)}`` and a heap of them."""

    def __init__(self):
        self._jobs = None     # the engine's jobs mapping the times were worked out for
        self._known = {}
        self._heap = []       # (time, job_id), one per job with a next time
        self._pending = []    # job ids to work out
        self._lock = threading.Lock()

    def soonest(self, engine, now, count, budget=RECOMPUTE_BUDGET) -> tuple[list, int]:
        """(The ``count`` soonest ``NextDue`` at or after ``now``, how many jobs are not yet worked out)."""
        with self._lock:
            jobs = engine.jobs
            if jobs is not self._jobs:
                self._reloaded(jobs)
            while self._heap and self._heap[0][0] < now:
                _, job_id = heapq.heappop(self._heap)
                self._pending.append(job_id)
            work, self._pending = self._pending[:budget], self._pending[budget:]
            pause = Slices()  # thousands of jobs after a start or reload: the scheduler goes first
            for job_id in work:
                pause()
                job = jobs.get(job_id)
                if job is None:
                    continue
                times = engine.next_times(job, 1, after=now)
                t, args = (times[0][0].timestamp(), times[0][1]) if times else (None, {})
                self._known[job_id] = (job, t, args)
                if t is not None:
                    heapq.heappush(self._heap, (t, job_id))
            soonest = [NextDue(job_id, t, self._known[job_id][2]) for t, job_id in _smallest(self._heap, count)]
            return soonest, len(self._pending)

    def _reloaded(self, jobs):
        """Keep the times of the jobs a reload left as they were; work out the others."""
        self._jobs = jobs
        self._known = {j: known for j, known in self._known.items() if jobs.get(j) is known[0]}
        self._heap = [(t, j) for j, (_, t, _) in self._known.items() if t is not None]
        heapq.heapify(self._heap)
        self._pending = [j for j in jobs if j not in self._known]

"""The reads behind the sanity checks and the metrics: overdue runs, recently
due runs, a job's latest outcomes, runs in flight by job, pending actions.

Each is bounded by an index and a LIMIT, or by the horizon (runs not yet
finished), whatever the number of runs stored.
"""

import json

from apsis_lite.model.runs import Run
from apsis_lite.store.run_reads import UNFINISHED
from apsis_lite.store.schema import RUN_COLUMNS, row_to_run

# The finished states that count as an outcome of a job's run (not skipped).
OUTCOMES = ("success", "failure", "error")


class HealthReads:
    """The sanity and metrics reads of ``Store`` (a part of it, over ``Transactions``)."""

    def overdue_runs(self, before, limit) -> list:
        """Runs still scheduled though due before ``before``, oldest first (the scheduled
        runs are those up to the horizon)."""
        rows = self._all(f"SELECT {RUN_COLUMNS} FROM runs WHERE state='scheduled' AND time_schedule < ?"
                         " ORDER BY time_schedule, run_id LIMIT ?", (before, limit))
        return [row_to_run(r) for r in rows]

    def runs_due_between(self, since, until, limit) -> list:
        """Runs due in [since, until), latest due first, at most ``limit``, with only id,
        job, state, due time and times (through the time index)."""
        rows = self._all(
            "SELECT run_id, job_id, state, time_schedule, time_updated, times FROM runs INDEXED BY runs_time"
            " WHERE time_schedule >= ? AND time_schedule < ? ORDER BY time_schedule DESC, run_id DESC LIMIT ?",
            (since, until, limit))
        return [Run(run_id=r, job_id=j, args={}, state=st, time_schedule=ts, time_updated=tu,
                    times=json.loads(tm)) for r, j, st, ts, tu, tm in rows]

    def latest_outcomes(self, job_id, limit) -> list:
        """[(run_id, state, time, message)] of a job's newest finished runs that were not
        skipped, newest first."""
        rows = self._all(
            "SELECT run_id, state, time_updated, message FROM runs WHERE job_id=?"
            f" AND state IN ({','.join('?' * len(OUTCOMES))}) ORDER BY run_id DESC LIMIT ?",
            (job_id, *OUTCOMES, limit))
        return [tuple(r) for r in rows]

    def has_pending_run(self, job_id) -> bool:
        """Whether a job has a run scheduled or waiting."""
        return self._one("SELECT 1 FROM runs WHERE job_id=? AND state IN ('scheduled', 'waiting') LIMIT 1",
                         (job_id,)) is not None

    def unfinished_by_job(self) -> list:
        """[(job_id, state, count)] of runs not yet finished (bounded by the horizon)."""
        marks = ",".join("?" * len(UNFINISHED))
        return [tuple(r) for r in self._all(
            f"SELECT job_id, state, count(*) FROM runs WHERE state IN ({marks}) GROUP BY job_id, state",
            UNFINISHED)]

    def pending_action_count(self) -> int:
        return self._one("SELECT count(*) FROM pending_actions")[0]

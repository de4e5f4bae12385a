"""The reads behind the overview page and a job's history picture.

Each is bounded by an index and a LIMIT, whatever the number of runs stored:
the newest runs of a state walk ``runs_state`` (state, run_id) backwards; the
next due runs walk ``runs_time`` forwards from now; counts over a recent
window stop at a cap (and say so), so a busy day costs no more than the cap.
"""

from apsis_lite.store.schema import RUN_COLUMNS, row_to_run


class OverviewReads:
    """The overview reads of ``Store`` (a part of it, over ``Transactions``)."""

    def newest_in_state(self, state, limit) -> list:
        """A state's newest runs (by id), at most ``limit``: one backwards walk of ``runs_state``."""
        rows = self._all(f"SELECT {RUN_COLUMNS} FROM runs INDEXED BY runs_state WHERE state = ?"
                         " ORDER BY run_id DESC LIMIT ?", (state, limit))
        return [row_to_run(r) for r in rows]

    def next_due(self, after, limit) -> list:
        """The scheduled runs due at or after ``after``, soonest first, at most ``limit``."""
        rows = self._all(f"SELECT {RUN_COLUMNS} FROM runs INDEXED BY runs_time WHERE time_schedule >= ?"
                         " AND state = 'scheduled' ORDER BY time_schedule, run_id LIMIT ?", (after, limit))
        return [row_to_run(r) for r in rows]

    def overdue_count(self, before, cap) -> int:
        """How many runs are still scheduled though due before ``before``, counting at most ``cap``.

        Scheduled runs are those up to the horizon; ``runs_state`` finds them without
        touching the finished history.
        """
        return self._one("SELECT count(*) FROM (SELECT 1 FROM runs INDEXED BY runs_state WHERE state = 'scheduled'"
                         " AND time_schedule < ? LIMIT ?)", (before, cap))[0]

    def state_counts_between(self, since, until, cap) -> tuple[dict, bool]:
        """({state: count} of the runs due in [since, until], whether the count stopped at ``cap`` runs).

        Through the time index; a window holding more than ``cap`` runs is
        counted over its latest ``cap`` only, and the second value says so.
        """
        rows = self._all("SELECT state, count(*) FROM (SELECT state FROM runs INDEXED BY runs_time"
                         " WHERE time_schedule >= ? AND time_schedule <= ? ORDER BY time_schedule DESC LIMIT ?)"
                         " GROUP BY state", (since, until, cap))
        counts = dict(rows)
        return counts, sum(counts.values()) >= cap

    def job_state_counts_between(self, job_id, since, until, cap) -> tuple[dict, bool]:
        """({state: count} of a job's runs due in [since, until], whether its newest ``cap`` runs
        were all in the window, so that older ones may have been left out).

        Counted over the job's newest ``cap`` runs (``runs_job`` backwards): a
        job due every second costs no more than one due daily.
        """
        rows = self._all("SELECT state, count(*) FROM (SELECT state, time_schedule FROM runs INDEXED BY runs_job"
                         " WHERE job_id = ? ORDER BY run_id DESC LIMIT ?)"
                         " WHERE time_schedule >= ? AND time_schedule <= ? GROUP BY state",
                         (job_id, cap, since, until))
        counts = dict(rows)
        return counts, sum(counts.values()) >= cap

    def job_history(self, job_id, limit) -> list:
        """A job's newest runs that are under way or finished (not scheduled or waiting), newest
        first, at most ``limit``."""
        rows = self._all(f"SELECT {RUN_COLUMNS} FROM runs INDEXED BY runs_job WHERE job_id = ?"
                         " AND state NOT IN ('scheduled', 'waiting') ORDER BY run_id DESC LIMIT ?",
                         (job_id, limit))
        return [row_to_run(r) for r in rows]

    def succeeded_since(self, job_id, run_id) -> int | None:
        """The id of a success of ``job_id`` newer than ``run_id``, or None (one ``runs_job_state`` probe)."""
        row = self._one("SELECT run_id FROM runs WHERE job_id = ? AND state = 'success' AND run_id > ?"
                        " ORDER BY run_id DESC LIMIT 1", (job_id, run_id))
        return row[0] if row else None

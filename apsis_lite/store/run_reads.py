"""The reads the engine makes of runs: one run, runs in given states or slots,
a job's runs with given args, rerun groups, and where unfinished runs begin.

Each is bounded by an index (state, job_id or rerun_group) or by the
planning horizon, whatever the number of runs stored.
"""

from apsis_lite.errors import NotFound
from apsis_lite.model.runs import Run, dumps, format_run_id
from apsis_lite.store.schema import NOT_RERUN, RUN_COLUMNS, row_to_run

# States a run can still leave by itself (by running, or by being started).
UNFINISHED = ("scheduled", "waiting", "starting", "running", "stopping")


class RunReads:
    """The engine's run reads of ``Store`` (a part of it, over ``Transactions``)."""

    def get_run(self, run_id) -> Run:
        row = self._one(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id=?", (run_id,))
        if row is None:
            raise NotFound(f"no run {format_run_id(run_id)}")
        return row_to_run(row)

    def busy_hosts(self, hosts) -> dict:
        """``{host: runs starting, running or stopping there}`` for those of ``hosts`` that have any."""
        hosts = list(hosts)
        if not hosts:
            return {}
        marks = ",".join("?" * len(hosts))
        rows = self._all(f"SELECT host, count(*) FROM runs WHERE host IN ({marks})"
                         " AND state IN ('starting', 'running', 'stopping') GROUP BY host", hosts)
        return dict(rows)

    def run_state(self, run_id):
        """A run's state, or None if there is no such run."""
        row = self._one("SELECT state FROM runs WHERE run_id=?", (run_id,))
        return None if row is None else row[0]

    def run_key(self, run_id):
        """(job_id, args as canonical JSON) of a run, or None."""
        row = self._one("SELECT job_id, args FROM runs WHERE run_id=?", (run_id,))
        return None if row is None else (row[0], row[1])

    def scheduled_slot_runs(self, job_id, since):
        """A job's runs still scheduled for a schedule slot at or after ``since`` (bounded by its horizon).

        Automatic reruns (slot ``rerun|group|n``) are not schedule slots: not included.
        """
        rows = self._all(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE job_id=? AND state='scheduled'"
            f" AND slot IS NOT NULL AND {NOT_RERUN} AND time_schedule >= ? ORDER BY time_schedule, run_id",
            (job_id, since))
        return [row_to_run(r) for r in rows]

    def missed_slot_runs(self, job_id, before):
        """A job's runs still scheduled for a schedule slot due before ``before``, oldest first (no reruns)."""
        rows = self._all(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE job_id=? AND state='scheduled'"
            f" AND slot IS NOT NULL AND {NOT_RERUN} AND time_schedule < ? ORDER BY time_schedule, run_id",
            (job_id, before))
        return [row_to_run(r) for r in rows]

    def runs_in_states(self, states, limit=None):
        """Runs in any of ``states`` (active and pending runs: bounded by the horizon)."""
        marks = ",".join("?" * len(states))
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE state IN ({marks}) ORDER BY time_schedule, run_id"
        params = list(states)
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [row_to_run(r) for r in self._all(sql, params)]

    # -- conditions, waiting and reruns -------------------------------------------------
    # Reads the engine makes while checking a waiting run (the waiting reason
    # it records is a write: see run_writes); each is bounded by an index on
    # job_id or rerun_group.

    def runs_of(self, job_id, args, states=None, exclude=None, limit=None):
        """[(run_id, state)] of runs of ``job_id`` with exactly ``args``, newest first."""
        sql = "SELECT run_id, state FROM runs WHERE job_id=? AND args=?"
        params = [job_id, dumps(args)]
        if states is not None:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params += list(states)
        if exclude is not None:
            sql += " AND run_id != ?"
            params.append(exclude)
        sql += " ORDER BY run_id DESC"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [(rid, state) for rid, state in self._all(sql, params)]

    def rerun_group(self, group_id):
        """The runs of a rerun group, the original first."""
        rows = self._all(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id=? OR rerun_group=? ORDER BY run_id",
                         (group_id, group_id))
        return [row_to_run(r) for r in rows]

    def count_reruns(self, group_id):
        """How many reruns (not counting the original) a rerun group holds."""
        return self._one("SELECT count(*) FROM runs WHERE rerun_group=?", (group_id,))[0]

    def has_rerun_of(self, group_id, run_id) -> bool:
        """Whether a run of the rerun group is a rerun of ``run_id`` (automatic or by hand)."""
        return self._one("SELECT 1 FROM runs WHERE rerun_group=? AND rerun_of=? LIMIT 1",
                         (group_id, run_id)) is not None

    def unfinished_low_water(self) -> int:
        """The smallest id a run that finishes from now on can have.

        The oldest run not yet finished, else the next id to be given: one
        probe of the (state, run_id) index per pending or active state.
        """
        with self._lock:
            lows = [self._one("SELECT min(run_id) FROM runs WHERE state=?", (state,))[0]
                    for state in UNFINISHED]
            top = self._one("SELECT max(run_id) FROM runs")[0] or 0
        return min([x for x in lows if x is not None], default=top + 1)

    def finished_since(self, low_water, states) -> list:
        """Runs in ``states`` with ids from ``low_water`` on, oldest first (the (state, run_id) index)."""
        marks = ",".join("?" * len(states))
        rows = self._all(f"SELECT {RUN_COLUMNS} FROM runs WHERE state IN ({marks}) AND run_id >= ?"
                         " ORDER BY run_id", [*states, low_water])
        return [row_to_run(r) for r in rows]

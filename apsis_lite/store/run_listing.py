"""The reads behind the API and the pages: pages of runs matching a filter,
a calendar's window, a run's log, counts by state, and runs by id.

Every one is bounded by the page or the ids it is given: keyset pages on
run_id, the time index for a calendar window, counts kept by triggers.
"""

import json

from apsis_lite.model.runs import Run
from apsis_lite.store.schema import RUN_COLUMNS, row_to_run
from apsis_lite.timeutil import to_iso


def within_times(where, params, since=None, until=None):
    """``where`` (SQL) and its parameters, narrowed to runs scheduled in [since, until)."""
    clauses, values = [f"({where})"], list(params)
    if since is not None:
        clauses.append("time_schedule >= ?")
        values.append(since)
    if until is not None:
        clauses.append("time_schedule < ?")
        values.append(until)
    return " AND ".join(clauses), values


class RunListing:
    """The browsing reads of ``Store`` (a part of it, over ``Transactions``)."""

    def query_runs(self, where="1", params=(), *, since=None, until=None, limit=50, cursor=None):
        """One page of runs matching ``where``, newest first, and the cursor of the next page.

        Keyset pagination on run_id: the cost of a page does not depend on
        how many runs are stored or how deep the page is.
        """
        where, values = within_times(where, params, since, until)
        if cursor is not None:
            where += " AND run_id < ?"
            values.append(cursor)
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY run_id DESC LIMIT ?"
        rows = self._all(sql, values + [limit + 1])
        runs = [row_to_run(r) for r in rows[:limit]]
        next_cursor = runs[-1].run_id if len(rows) > limit else None
        return runs, next_cursor

    def calendar_runs(self, where="1", params=(), *, since, until, limit):
        """Runs matching ``where`` scheduled in [since, until), latest scheduled first, at most
        ``limit``, with only what a calendar shows: id, job, state, times (args and the other
        JSON columns left empty; decoding them for thousands of runs would cost more than the
        query). Always through the time index, in its order: no sort, and the cost is bounded
        by the runs of the window, where a job filter's index would sort all that job's history."""
        rows = self._all(
            f"SELECT run_id, job_id, state, time_schedule, time_updated, times FROM runs INDEXED BY runs_time"
            f" WHERE ({where}) AND time_schedule >= ? AND time_schedule < ?"
            f" ORDER BY time_schedule DESC, run_id DESC LIMIT ?",
            list(params) + [since, until, limit])
        return [Run(run_id=r, job_id=j, args={}, state=st, time_schedule=ts, time_updated=tu,
                    times=json.loads(tm)) for r, j, st, ts, tu, tm in rows]

    def run_log(self, run_id):
        return [
            {"time": to_iso(t), "state": s, "message": m, "user": u}
            for t, s, m, u in self._all(
                "SELECT time, state, message, user FROM run_log WHERE run_id=? ORDER BY id", (run_id,))
        ]

    def has_arg(self, name) -> bool:
        """Whether some stored run has an arg ``name`` (an index lookup)."""
        return bool(self._all("SELECT 1 FROM run_args WHERE name = ? LIMIT 1", (name,)))

    def stats(self):
        counts = dict(self._all("SELECT state, n FROM run_counts WHERE n > 0 ORDER BY state"))
        return {"runs": sum(counts.values()), "runs_by_state": counts}

    # -- pages ---------------------------------------------------------------------
    # Read-only queries for the browser pages, each bounded by the ids it is given.

    def runs_by_ids(self, run_ids) -> dict:
        """{run_id: Run} for the given ids that exist."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._all(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id IN ({marks})", ids)
        return {r.run_id: r for r in map(row_to_run, rows)}

    def reruns_in_groups(self, group_ids, limit=500) -> dict:
        """{group id: [reruns, newest first]} for the rerun groups of the given originals."""
        ids = list(dict.fromkeys(group_ids))
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._all(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE rerun_group IN ({marks}) AND run_id != rerun_group"
            " ORDER BY run_id DESC LIMIT ?", ids + [limit])
        groups = {}
        for run in map(row_to_run, rows):
            groups.setdefault(run.rerun_group, []).append(run)
        return groups

    def latest_runs_of_jobs(self, job_ids) -> dict:
        """{job_id: its newest run that is no longer scheduled or waiting}, one index probe per job."""
        out = {}
        with self._lock:
            for job_id in job_ids:
                row = self._one(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE job_id=? AND state NOT IN ('scheduled', 'waiting')"
                    " ORDER BY run_id DESC LIMIT 1", (job_id,))
                if row is not None:
                    out[job_id] = row_to_run(row)
        return out

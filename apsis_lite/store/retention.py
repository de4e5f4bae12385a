"""Retention's statements: finished runs and their output found by age, then removed or
moved to an archive file, a small batch per write transaction.

Candidates are read through the time index from the oldest, a bounded page
at a time, and judged in Python (see ``judge``): a run is kept while it is
unfinished, while a run of its rerun group is unfinished, while an action or
deadline of it is pending, or while it is among the latest ``keep_per_job``
finished runs of its job. What is kept is never changed.

Archiving is copy, commit, then delete: a crash between the two leaves a run
in both files, and the next pass copies nothing twice (INSERT OR IGNORE) and
deletes it. Never yield to other greenlets inside these transactions.
"""

import json
import os
from dataclasses import dataclass

from apsis_lite.timeutil import to_iso

FINISHED_STATES = ("success", "failure", "error", "skipped")
UNFINISHED_STATES = ("scheduled", "waiting", "starting", "running", "stopping")
_IN_UNFINISHED = f"({','.join(repr(s) for s in UNFINISHED_STATES)})"
_IN_FINISHED = f"({','.join(repr(s) for s in FINISHED_STATES)})"

# The meta key under which the time up to which every prunable output is gone is kept.
OUTPUT_FLOOR_KEY = "retention_output_floor"
# The meta key an archive file carries, so that it is never mistaken for a live database.
ARCHIVE_KEY = "archive"


@dataclass(frozen=True)
class Candidate:
    """A run old enough to be looked at, as read from the time index."""

    run_id: int
    job_id: str
    state: str
    time_schedule: float
    time_updated: float
    group: int  # its rerun group: the original's id


class Protected:
    """What a pass must not touch, read once per batch: runs with actions or deadlines
    pending, rerun groups with an unfinished run, and each job's latest finished runs."""

    def __init__(self, store, keep_per_job, thresholds=None):
        self.runs = {r for (r,) in store._all(
            "SELECT run_id FROM pending_actions UNION SELECT run_id FROM run_deadlines")}
        self.groups = {g for (g,) in store._all(
            f"SELECT coalesce(rerun_group, run_id) FROM runs WHERE state IN {_IN_UNFINISHED}")}
        self._store = store
        self._keep = keep_per_job
        # Shared by the batches of a pass: a threshold read earlier can only be lower than
        # now (newer runs have finished since), so it keeps more, never less.
        self._thresholds = {} if thresholds is None else thresholds

    def keeps(self, c: Candidate) -> bool:
        if c.state not in FINISHED_STATES or c.run_id in self.runs or c.group in self.groups:
            return True
        return self._keep > 0 and c.run_id >= self._threshold(c.job_id)

    def _threshold(self, job_id):
        """The id of the job's ``keep``-th newest finished run (0 if it has fewer)."""
        if job_id not in self._thresholds:
            row = self._store._one(
                f"SELECT run_id FROM runs INDEXED BY runs_job WHERE job_id=? AND state IN {_IN_FINISHED}"
                " ORDER BY run_id DESC LIMIT 1 OFFSET ?", (job_id, self._keep - 1))
            self._thresholds[job_id] = row[0] if row else 0
        return self._thresholds[job_id]


class Retention:
    """Retention's reads and writes of ``Store`` (a part of it, over ``Transactions``)."""

    def old_runs(self, cutoff, after, limit):
        """Up to ``limit`` runs scheduled before ``cutoff``, oldest first, after the
        (time_schedule, run_id) key ``after``: one page of the time index."""
        rows = self._all(
            "SELECT run_id, job_id, state, time_schedule, time_updated, coalesce(rerun_group, run_id)"
            " FROM runs INDEXED BY runs_time WHERE time_schedule < ? AND (time_schedule, run_id) > (?, ?)"
            " ORDER BY time_schedule, run_id LIMIT ?", (cutoff, after[0], after[1], limit))
        return [Candidate(*row) for row in rows]

    def output_sizes(self, run_ids) -> dict:
        """{run_id: stored output bytes} of those of ``run_ids`` that still have output."""
        ids = list(run_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return dict(self._all(f"SELECT run_id, length(data) FROM outputs WHERE run_id IN ({marks})", ids))

    def remove_runs(self, run_ids):
        """Delete runs with their log, args and output, in one short write transaction."""
        ids = list(run_ids)
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        with self.write():
            rows = self._exec(f"SELECT run_id, args FROM runs WHERE run_id IN ({marks})", ids).fetchall()
            # run_args is keyed (name, value, run_id): delete by the whole key, never by a scan.
            keys = [(name, value, run_id) for run_id, args in rows for name, value in json.loads(args).items()]
            if keys:
                self._exec_many("DELETE FROM run_args WHERE name=? AND value=? AND run_id=?", keys)
            self._exec(f"DELETE FROM run_log WHERE run_id IN ({marks})", ids)
            self._exec(f"DELETE FROM outputs WHERE run_id IN ({marks})", ids)
            self._exec(f"DELETE FROM runs WHERE run_id IN ({marks})", ids)

    def remove_outputs(self, run_ids, now):
        """Delete the stored output of runs (the runs and their logs stay); each run's
        output record says when (``removed``) and keeps 0 bytes, so that an empty output
        is not a mystery."""
        ids = list(run_ids)
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        with self.write():
            self._exec(f"DELETE FROM outputs WHERE run_id IN ({marks})", ids)
            self._exec("UPDATE runs SET meta = json_set(meta, '$.output', json(json_set("
                       "coalesce(json_extract(meta, '$.output'), '{}'), '$.removed', ?, '$.bytes_kept', 0)))"
                       f" WHERE run_id IN ({marks})", [to_iso(now)] + ids)

    def copy_to_archive(self, run_ids, archive_path):
        """Copy runs, their logs, args and output into the archive file (made if new), and commit there.

        Only the archive file is written; rows already there are left as they are.
        """
        ids = list(run_ids)
        if not ids:
            return
        make_archive(archive_path)
        marks = ",".join("?" * len(ids))
        with self._lock:
            self._exec("ATTACH DATABASE ? AS arch", (archive_path,))
            try:
                with self.write():
                    for table in ("runs", "run_log", "outputs"):
                        self._exec(f"INSERT OR IGNORE INTO arch.{table} SELECT * FROM main.{table}"
                                   f" WHERE run_id IN ({marks})", ids)
                    self._exec("INSERT OR IGNORE INTO arch.run_args (name, value, run_id)"
                               " SELECT a.key, a.value, r.run_id FROM main.runs AS r, json_each(r.args) AS a"
                               f" WHERE r.run_id IN ({marks})", ids)
                    self._exec("INSERT OR IGNORE INTO arch.job_ids (job_id)"
                               f" SELECT DISTINCT job_id FROM main.runs WHERE run_id IN ({marks})", ids)
            finally:
                self._exec("DETACH DATABASE arch")

    # -- space ----------------------------------------------------------------------

    def space(self) -> dict:
        """Pages in the file, free pages, page size and the auto_vacuum mode (none, full, incremental)."""
        pages = self._one("PRAGMA page_count")[0]
        free = self._one("PRAGMA freelist_count")[0]
        size = self._one("PRAGMA page_size")[0]
        mode = {0: "none", 1: "full", 2: "incremental"}.get(self._one("PRAGMA auto_vacuum")[0], "?")
        return {"pages": pages, "free_pages": free, "page_size": size, "auto_vacuum": mode}

    def incremental_vacuum(self, pages):
        """Give back up to ``pages`` free pages to the file system (incremental auto_vacuum only)."""
        with self._lock:
            cursor = self._exec(f"PRAGMA incremental_vacuum({int(pages)})")
            for _ in cursor:  # the pragma frees a page per step
                pass


def make_archive(path):
    """Create an archive file with the full schema, if it is not there yet."""
    if os.path.exists(path):
        return
    from apsis_lite.store.transactions import Transactions
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.new"
    for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
        if os.path.exists(leftover):
            os.unlink(leftover)
    db = Transactions(tmp)
    try:
        with db.write():
            db._exec("INSERT INTO meta (key, value) VALUES (?, '1')", (ARCHIVE_KEY,))
        db._exec("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        db.close()
    os.replace(tmp, path)

"""What the scheduler keeps beside runs, so that it survives a restart.

Each job's planning horizon, ad hoc job definitions, the meta table of the
engine's own facts (boot id, low-water mark), pauses, the deadlines of runs
not yet checked, and actions due and not yet done. A handful of rows each,
or rows that live only until they are acted on.
"""

import json

from apsis_lite.model.runs import dumps


class SchedulerRecords:
    """The non-run records of ``Store`` (a part of it, over ``Transactions``)."""

    # -- jobs ------------------------------------------------------------------------

    def get_horizons(self):
        return dict(self._all("SELECT job_id, horizon FROM job_horizons"))

    def set_horizon(self, job_id, horizon):
        with self.write():
            self._exec("INSERT INTO job_horizons (job_id, horizon) VALUES (?, ?)"
                       " ON CONFLICT(job_id) DO UPDATE SET horizon=excluded.horizon", (job_id, horizon))

    def put_adhoc_job(self, job_id, definition, now):
        with self.write():
            self._exec("INSERT OR REPLACE INTO adhoc_jobs (job_id, definition, time_created) VALUES (?,?,?)",
                       (job_id, dumps(definition), now))

    def get_adhoc_job(self, job_id):
        row = self._one("SELECT definition FROM adhoc_jobs WHERE job_id=?", (job_id,))
        return json.loads(row[0]) if row else None

    def get_meta(self, key):
        row = self._one("SELECT value FROM meta WHERE key=?", (key,))
        return None if row is None else row[0]

    def set_meta(self, key, value):
        with self.write():
            self._exec("INSERT INTO meta (key, value) VALUES (?, ?)"
                       " ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, str(value)))

    # -- pauses and deadlines ------------------------------------------------------------
    # A handful of rows each: pauses are set by people, and a deadline row
    # lives only until its time has come.

    def get_pauses(self) -> list:
        """[(scope, mode, reason, user, time)] of every pause."""
        return self._all("SELECT scope, mode, reason, user, time FROM pauses ORDER BY scope")

    def set_pause(self, scope, mode, reason, user, now):
        with self.write():
            self._exec("INSERT INTO pauses (scope, mode, reason, user, time) VALUES (?,?,?,?,?)"
                       " ON CONFLICT(scope) DO UPDATE SET mode=excluded.mode, reason=excluded.reason,"
                       " user=excluded.user, time=excluded.time", (scope, mode, reason, user, now))

    def delete_pause(self, scope) -> bool:
        """Remove a pause; False if there was none."""
        with self.write():
            self._exec("DELETE FROM pauses WHERE scope=?", (scope,))
            return self.conn.changes() == 1

    def add_deadline(self, run_id, t, what):
        with self.write():
            self._exec("INSERT OR REPLACE INTO run_deadlines (run_id, time, what) VALUES (?,?,?)",
                       (run_id, t, what))

    def get_deadlines(self) -> list:
        """[(run_id, time, what)] of deadlines not yet checked."""
        return self._all("SELECT run_id, time, what FROM run_deadlines ORDER BY time, run_id")

    def get_deadline(self, run_id):
        """(time, what) of a run's unchecked deadline, or None."""
        return self._one("SELECT time, what FROM run_deadlines WHERE run_id=?", (run_id,))

    def delete_deadline(self, run_id):
        with self.write():
            self._exec("DELETE FROM run_deadlines WHERE run_id=?", (run_id,))

    # -- actions due (see actions.py) --------------------------------------------

    def add_pending_action(self, run_id, action, old, new, time, alarm=None):
        with self.write():
            self._exec("INSERT INTO pending_actions (run_id, action, old, new, time, alarm)"
                       " VALUES (?,?,?,?,?,?)",
                       (run_id, dumps(action), old, new, time, dumps(alarm) if alarm else None))

    def pending_actions(self, from_id, limit=100):
        """Up to ``limit`` pending actions with ids from ``from_id``, oldest first:
        (id, run_id, action, old, new, time, alarm) each."""
        rows = self._all("SELECT id, run_id, action, old, new, time, alarm FROM pending_actions"
                         " WHERE id >= ? ORDER BY id LIMIT ?", (from_id, limit))
        return [(i, rid, json.loads(action), old, new, t, json.loads(alarm) if alarm else None)
                for i, rid, action, old, new, t, alarm in rows]

    def last_pending_action_id(self):
        """The id of the newest pending action; 0 if there is none."""
        return self._one("SELECT coalesce(max(id), 0) FROM pending_actions")[0]

    def remove_pending_action(self, action_id):
        with self.write():
            self._exec("DELETE FROM pending_actions WHERE id=?", (action_id,))

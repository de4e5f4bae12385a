"""Writing runs: inserting them, compare-and-set transitions, their logs, and who hears of a change.

A transition is an UPDATE that names the state it expects, so two callers
can never both move a run. Listeners hear of a change once it has
committed; transaction listeners write beside it, in its transaction.
"""

import functools
import logging

from apsis_lite.model.runs import Run, check_transition, dumps
from apsis_lite.store.schema import JSON_FIELDS
from apsis_lite.timeutil import to_iso

# The name the store's log lines have always carried.
log = logging.getLogger("apsis_lite.store")


def _call_listener(fn, run_id, old, new):
    try:
        fn(run_id, old, new)
    except Exception:  # a listener's bug must not undo or block the writer
        log.exception("state-change listener failed for run %s (%s -> %s)", run_id, old, new)


class RunWrites:
    """The run writes of ``Store`` (a part of it: it needs ``Transactions`` and the
    listener lists that ``Store.__init__`` makes)."""

    def insert_run(self, job_id, args, state, time_schedule, now, *, slot=None, rerun_of=None,
                   rerun_group=None, program=None, conditions=None, actions=None, meta=None,
                   message=None, user=None):
        """Insert one run in ``state``; None if its slot already exists. Logs the creation."""
        with self.write():
            row = self._exec(
                "INSERT INTO runs (job_id, args, state, time_schedule, time_updated, times, slot,"
                " rerun_of, rerun_group, program, conditions, actions, message, meta)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (job_id, slot) WHERE slot IS NOT NULL DO NOTHING RETURNING run_id",
                (job_id, dumps(args), state, time_schedule, now, dumps({state: now}), slot,
                 rerun_of, rerun_group,
                 dumps(program) if program is not None else None,
                 dumps(conditions) if conditions is not None else None,
                 dumps(actions) if actions is not None else None,
                 message, dumps(meta or {})),
            ).fetchone()
            if row is None:
                return None
            run_id = row[0]
            if args:
                self._exec_many("INSERT INTO run_args (name, value, run_id) VALUES (?, ?, ?)",
                                [(name, value, run_id) for name, value in args.items()])
            self._exec("INSERT OR IGNORE INTO job_ids (job_id) VALUES (?)", (job_id,))
            text = message or f"created as {state} for {to_iso(time_schedule)}"
            self._log(run_id, now, state, text, user)
            self._announce(run_id, None, state)
        # Built here rather than read back: planning inserts thousands at once.
        return Run(run_id=run_id, job_id=job_id, args=dict(args), state=state,
                   time_schedule=time_schedule, time_updated=now, times={state: now}, slot=slot,
                   rerun_of=rerun_of, rerun_group=rerun_group, program=program,
                   conditions=conditions, actions=actions, message=message, meta=dict(meta or {}))

    def transition(self, run_id, old, new, now, message, *, user=None, **fields):
        """Compare-and-set ``old -> new``, record the time and extra fields, log it.

        Returns False (and changes nothing) if the run is no longer in ``old``.
        """
        check_transition(run_id, old, new)
        sets = ["state=?", "time_updated=?", "times=json_set(times, ?, ?)"]
        params = [new, now, f"$.{new}", now]
        for name, value in fields.items():
            if name == "meta":
                # Merge, so that facts recorded earlier (pid, adhoc) stay.
                sets.append("meta=json_patch(meta, ?)")
                params.append(dumps(value))
                continue
            sets.append(f"{name}=?")
            params.append(dumps(value) if name in JSON_FIELDS and value is not None else value)
        if "message" not in fields:
            sets.append("message=?")
            params.append(message)
        params += [run_id, old]
        with self.write():
            self._exec(f"UPDATE runs SET {', '.join(sets)} WHERE run_id=? AND state=?", params)
            if self.conn.changes() != 1:
                return False
            self._log(run_id, now, new, message, user)
            self._announce(run_id, old, new)
            return True

    def set_host(self, run_id, host, now, message):
        """Record the remote host a run in 'starting' goes to, and log ``message``; True if it was."""
        with self.write():
            self._exec("UPDATE runs SET host=? WHERE run_id=? AND state='starting'", (host, run_id))
            if self.conn.changes() != 1:
                return False
            self._log(run_id, now, None, message, None)
            return True

    def set_waiting_reason(self, run_id, reason, now):
        """Make ``reason`` a waiting run's message, and log it, if it changed; True if it did."""
        with self.write():
            self._exec("UPDATE runs SET message=? WHERE run_id=? AND state='waiting' AND message IS NOT ?",
                       (reason, run_id, reason))
            if self.conn.changes() != 1:
                return False
            self._log(run_id, now, None, reason, None)
            return True

    def add_listener(self, fn):
        """Call ``fn(run_id, old, new)`` after each committed state change.

        ``old`` is None for a newly inserted run. Called once the
        transaction has committed, so a listener never acts on a change
        that could still be rolled back; an exception in one is logged and
        does not reach the writer.
        """
        self._listeners.append(fn)

    def add_transaction_listener(self, fn):
        """Call ``fn(run_id, old, new)`` on each state change, inside its
        transaction: what ``fn`` writes commits or rolls back with it."""
        self._tx_listeners.append(fn)

    def _announce(self, run_id, old, new):
        for fn in self._tx_listeners:
            fn(run_id, old, new)
        for fn in self._listeners:
            self.after_commit(functools.partial(_call_listener, fn, run_id, old, new))

    def log(self, run_id, now, message, user=None):
        """Add a line to a run's log without changing its state."""
        with self.write():
            self._log(run_id, now, None, message, user)

    def _log(self, run_id, now, state, message, user):
        self._exec("INSERT INTO run_log (run_id, time, state, message, user) VALUES (?,?,?,?,?)",
                   (run_id, now, state, message, user))

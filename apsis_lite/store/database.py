"""The SQLite store: every SQL statement apsis-lite runs lives here.

One file, opened through apsw in WAL mode. The engine owns the single write
connection; web requests and CLI reads use read-only connections. Write
transactions begin IMMEDIATE so that a read never has to be upgraded to a
write halfway (which is where "database is locked" errors come from), and
``synchronous=FULL`` makes every committed transition survive a power cut,
not just a process crash. Transitions are compare-and-set: an UPDATE that
names the state it expects, so two callers can never both move a run.
"""

import contextlib
import functools
import json
import logging
import os
import threading

import apsw

from apsis_lite.errors import NotFound, StoreUnavailable
from apsis_lite.model.runs import Run, check_transition, dumps, format_run_id
from apsis_lite.timeutil import to_iso

# Ordered schema steps; ``PRAGMA user_version`` records how many have run.
# Never edit a released step: append a new one.
MIGRATIONS = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE runs (
        run_id        INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id        TEXT NOT NULL,
        args          TEXT NOT NULL,
        state         TEXT NOT NULL,
        time_schedule REAL NOT NULL,
        time_updated  REAL NOT NULL,
        times         TEXT NOT NULL DEFAULT '{}',
        slot          TEXT,
        rerun_of      INTEGER,
        rerun_group   INTEGER,  -- the original run's id; NULL for an original
        program       TEXT,
        conditions    TEXT,
        actions       TEXT,
        exit_code     INTEGER,
        signal        TEXT,
        message       TEXT,
        meta          TEXT NOT NULL DEFAULT '{}'
    );
    -- A scheduled slot (job, args, instant) exists at most once, whatever crashes.
    CREATE UNIQUE INDEX runs_slot ON runs (job_id, slot) WHERE slot IS NOT NULL;
    CREATE INDEX runs_state ON runs (state, time_schedule);
    CREATE INDEX runs_job ON runs (job_id, run_id);
    CREATE INDEX runs_group ON runs (rerun_group, run_id);
    CREATE INDEX runs_time ON runs (time_schedule);
    CREATE TABLE run_log (
        id      INTEGER PRIMARY KEY,
        run_id  INTEGER NOT NULL,
        time    REAL NOT NULL,
        state   TEXT,
        message TEXT NOT NULL,
        user    TEXT
    );
    CREATE INDEX run_log_run ON run_log (run_id, id);
    CREATE TABLE outputs (
        run_id        INTEGER PRIMARY KEY,
        data          BLOB NOT NULL,
        bytes_total   INTEGER NOT NULL,
        bytes_dropped INTEGER NOT NULL
    );
    CREATE TABLE adhoc_jobs (
        job_id       TEXT PRIMARY KEY,
        definition   TEXT NOT NULL,
        time_created REAL NOT NULL
    );
    CREATE TABLE job_horizons (job_id TEXT PRIMARY KEY, horizon REAL NOT NULL);
    """,
    # Runs lists filter by state and page by run_id: with (state, run_id) a
    # state filter reads only the page it returns, instead of every run in
    # that state (200 ms at a million runs).
    """
    DROP INDEX runs_state;
    CREATE INDEX runs_state ON runs (state, run_id);
    """,
    # Indexes for the filter language: ``ARG=VAL`` looks up run_args instead
    # of parsing every run's JSON, and a job id word is matched against the
    # few distinct job ids rather than every run (both were full scans,
    # ~250 ms at a million runs).
    """
    CREATE TABLE run_args (
        name   TEXT NOT NULL,
        value  TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        PRIMARY KEY (name, value, run_id)
    ) WITHOUT ROWID;
    INSERT INTO run_args (name, value, run_id)
        SELECT a.key, a.value, r.run_id FROM runs AS r, json_each(r.args) AS a;
    CREATE TABLE job_ids (job_id TEXT PRIMARY KEY) WITHOUT ROWID;
    INSERT OR IGNORE INTO job_ids (job_id) SELECT job_id FROM runs;
    """,
    # Run counts by state, kept by triggers: counting a million runs took
    # 30 ms per /stats request.
    """
    CREATE TABLE run_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO run_counts (state, n) SELECT state, count(*) FROM runs GROUP BY state;
    CREATE TRIGGER run_counts_insert AFTER INSERT ON runs BEGIN
        INSERT INTO run_counts (state, n) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER run_counts_update AFTER UPDATE OF state ON runs
    WHEN OLD.state IS NOT NEW.state BEGIN
        UPDATE run_counts SET n = n - 1 WHERE state = OLD.state;
        INSERT INTO run_counts (state, n) VALUES (NEW.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER run_counts_delete AFTER DELETE ON runs BEGIN
        UPDATE run_counts SET n = n - 1 WHERE state = OLD.state;
    END;
    """,
    # A job's runs in a state (``job:X state:failure``, a job's recent
    # failures): 10 ms through the state index at a million runs, 1 ms here.
    """
    CREATE INDEX runs_job_state ON runs (job_id, state, run_id);
    """,
    # Pauses (scope '' is the global pause, else a job id), and the
    # deadlines of runs not yet checked against them, so that both survive
    # a restart; see pauses.py and deadlines.py.
    """
    CREATE TABLE pauses (
        scope  TEXT PRIMARY KEY,
        mode   TEXT NOT NULL,
        reason TEXT NOT NULL,
        user   TEXT,
        time   REAL NOT NULL
    );
    CREATE TABLE run_deadlines (
        run_id INTEGER PRIMARY KEY,
        time   REAL NOT NULL,
        what   TEXT NOT NULL
    );
    """,
    # Actions due and not yet done, written in the transaction of the change
    # that made them due, so that a restart still does them (see actions.py).
    """
    CREATE TABLE pending_actions (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the dispatcher reads on from an id
        run_id INTEGER NOT NULL,
        action TEXT NOT NULL,
        old    TEXT,
        new    TEXT NOT NULL,
        time   REAL NOT NULL,
        alarm  TEXT
    );
    """,
]

RUN_COLUMNS = (
    "run_id, job_id, args, state, time_schedule, time_updated, times, slot, rerun_of,"
    " rerun_group, program, conditions, actions, exit_code, signal, message, meta"
)

_JSON_FIELDS = {"program", "conditions", "actions", "meta"}

# Automatic reruns have a slot too (``rerun|group|n``, so that each is made
# once), but are not slots of a schedule: planning and catch-up leave them be.
RERUN_SLOT_PREFIX = "rerun|"
_NOT_RERUN = "slot NOT LIKE 'rerun|%'"

# States a run can still leave by itself (by running, or by being started).
UNFINISHED = ("scheduled", "waiting", "starting", "running", "stopping")


log = logging.getLogger(__name__)

# apsw errors that say the storage failed rather than the statement: a full
# disk, an I/O error, a file gone read-only or locked by another program.
# They become StoreUnavailable: the caller waits and tries again, and no run
# is judged by them.
STORAGE_FAULTS = (apsw.FullError, apsw.IOError, apsw.CantOpenError, apsw.ReadOnlyError,
                  apsw.BusyError, apsw.LockedError, apsw.CorruptError, apsw.NotADBError,
                  apsw.NoMemError, apsw.ProtocolError, apsw.PermissionsError)


def _fault_words(exc):
    if isinstance(exc, apsw.FullError):
        return "the disk is full"
    if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
        return f"the database file is damaged ({exc})"
    if isinstance(exc, (apsw.BusyError, apsw.LockedError)):
        return f"it is locked by another program ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _call_listener(fn, run_id, old, new):
    try:
        fn(run_id, old, new)
    except Exception:  # a listener's bug must not undo or block the writer
        log.exception("state-change listener failed for run %s (%s -> %s)", run_id, old, new)


def _row_to_run(row) -> Run:
    (run_id, job_id, args, state, time_schedule, time_updated, times, slot, rerun_of,
     rerun_group, program, conditions, actions, exit_code, signal, message, meta) = row
    return Run(
        run_id=run_id, job_id=job_id, args=json.loads(args), state=state,
        time_schedule=time_schedule, time_updated=time_updated, times=json.loads(times),
        slot=slot, rerun_of=rerun_of, rerun_group=rerun_group,
        program=json.loads(program) if program else None,
        conditions=json.loads(conditions) if conditions else None,
        actions=json.loads(actions) if actions else None,
        exit_code=exit_code, signal=signal, message=message, meta=json.loads(meta),
    )


class Store:
    """A connection to the apsis-lite database; ``readonly`` for readers."""

    def __init__(self, path, readonly=False, vfs=None):
        self.path = str(path)
        self.readonly = readonly
        if readonly:
            flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI
        # ``vfs``: an SQLite VFS by name (the tests inject disk faults through one).
        self.conn = apsw.Connection(self.path, flags=flags, vfs=vfs)
        self.conn.set_busy_timeout(10_000)
        # Serializes use of this one connection among threads (waitress) or
        # greenlets; re-entrant so that a batch can wrap several writes.
        self._lock = threading.RLock()
        self._depth = 0
        self._after_commit = []
        # A reader's write is a bug, not a failure of the disk: it is not caught.
        self._storage_faults = tuple(e for e in STORAGE_FAULTS if not (readonly and e is apsw.ReadOnlyError))
        self.faults = 0         # storage failures met so far (see _fault)
        self.last_fault = None
        self._listeners = []
        self._tx_listeners = []
        try:
            if not readonly:
                self._exec("PRAGMA journal_mode=WAL")
                self._exec("PRAGMA synchronous=FULL")
                # Keep the WAL file from staying huge after a burst.
                self._exec("PRAGMA journal_size_limit=67108864")
                self._migrate()
            else:
                self._exec("PRAGMA query_only=1")
        except BaseException:
            self.conn.close()  # a full disk at start-up is waited out: no connection may leak per try
            raise

    # -- plumbing ----------------------------------------------------------

    def _fault(self, exc):
        """The StoreUnavailable for an apsw error that says the storage failed;
        counted, so that the engine knows its memory may be ahead of the disk."""
        self.faults += 1
        self.last_fault = f"{type(exc).__name__}: {exc}"
        return StoreUnavailable(f"the database cannot be {'read' if self.readonly else 'written'}: "
                                f"{_fault_words(exc)}")

    def _exec(self, sql, params=()):
        try:
            return self.conn.execute(sql, params)
        except self._storage_faults as exc:
            raise self._fault(exc) from exc

    def _exec_many(self, sql, rows):
        try:
            return self.conn.executemany(sql, rows)
        except self._storage_faults as exc:
            raise self._fault(exc) from exc

    def _all(self, sql, params=()):
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except self._storage_faults as exc:
                raise self._fault(exc) from exc

    def _one(self, sql, params=()):
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchone()
            except self._storage_faults as exc:
                raise self._fault(exc) from exc

    @contextlib.contextmanager
    def write(self):
        """One IMMEDIATE write transaction; nested uses join the outer one.

        A transaction that fails, in its body or at its COMMIT, is rolled
        back whole and its after-commit callbacks are dropped: nothing is
        ever acted on that is not on disk. Storage failures (a full disk,
        an I/O error) surface as StoreUnavailable. Never yield to other
        greenlets (no network I/O) inside it.
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self._exec("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self
                self._depth = 0
                self._exec("COMMIT")
            except BaseException as exc:
                self._depth = 0
                self._after_commit.clear()
                self._rollback()
                if isinstance(exc, self._storage_faults):
                    raise self._fault(exc) from exc
                raise
            callbacks, self._after_commit = self._after_commit, []
        for fn in callbacks:
            fn()

    def _rollback(self):
        # SQLite may already have rolled back on its own (some SQLITE_FULL and
        # I/O errors do); a ROLLBACK then would fail.
        if self.conn.getautocommit():
            return
        try:
            self.conn.execute("ROLLBACK")
        except apsw.Error as exc:
            self.faults += 1
            log.error("rolling back a failed transaction failed too: %s", exc)

    @contextlib.contextmanager
    def atomic(self):
        """A savepoint in the current write transaction (one is begun if there is none).

        If the block raises, its writes and the after-commit callbacks it
        added are undone and the exception goes on; the transaction around
        it stays usable, so one bad run or job in a batch costs only its own
        changes. A storage failure is not confined: it fails the transaction.
        """
        with self.write():
            name = f"item{self._depth}"
            self._exec(f"SAVEPOINT {name}")
            mark = len(self._after_commit)
            try:
                yield self
            except StoreUnavailable:
                raise
            except BaseException:
                del self._after_commit[mark:]
                self._exec(f"ROLLBACK TO {name}")
                self._exec(f"RELEASE {name}")
                raise
            self._exec(f"RELEASE {name}")

    def after_commit(self, fn):
        """Call ``fn`` once the current transaction has committed (now, if there is none).

        For acting on a state change only once it is durable, e.g. removing
        a run folder whose result has just been recorded. Dropped if the
        transaction (or the ``atomic`` block it was added in) rolls back.
        """
        with self._lock:
            if self._depth:
                self._after_commit.append(fn)
                return
        fn()

    def _migrate(self):
        version = self._exec("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path}: database schema version {version} is newer than this apsis-lite "
                f"({len(MIGRATIONS)}); upgrade apsis-lite")
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.write():
                self._exec(step)
                self._exec(f"PRAGMA user_version={number}")

    def close(self):
        self.conn.close()

    def checkpoint(self):
        """Checkpoint and truncate the WAL so it cannot grow without bound.

        StoreUnavailable if the disk refuses it (full, say); that alone leaves
        nothing half-done, so it is not counted as a fault of the engine's writes.
        """
        with self._lock:
            try:
                return self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except self._storage_faults as exc:
                raise StoreUnavailable(f"cannot checkpoint the database: {_fault_words(exc)}") from exc

    # -- runs: writes ------------------------------------------------------------

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
            params.append(dumps(value) if name in _JSON_FIELDS and value is not None else value)
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

    # -- runs: reads -------------------------------------------------------------

    def get_run(self, run_id) -> Run:
        row = self._one(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id=?", (run_id,))
        if row is None:
            raise NotFound(f"no run {format_run_id(run_id)}")
        return _row_to_run(row)

    def scheduled_slot_runs(self, job_id, since):
        """A job's runs still scheduled for a schedule slot at or after ``since`` (bounded by its horizon).

        Automatic reruns (slot ``rerun|group|n``) are not schedule slots: not included.
        """
        rows = self._all(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE job_id=? AND state='scheduled'"
            f" AND slot IS NOT NULL AND {_NOT_RERUN} AND time_schedule >= ? ORDER BY time_schedule, run_id",
            (job_id, since))
        return [_row_to_run(r) for r in rows]

    def missed_slot_runs(self, job_id, before):
        """A job's runs still scheduled for a schedule slot due before ``before``, oldest first (no reruns)."""
        rows = self._all(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE job_id=? AND state='scheduled'"
            f" AND slot IS NOT NULL AND {_NOT_RERUN} AND time_schedule < ? ORDER BY time_schedule, run_id",
            (job_id, before))
        return [_row_to_run(r) for r in rows]

    def runs_in_states(self, states, limit=None):
        """Runs in any of ``states`` (active and pending runs: bounded by the horizon)."""
        marks = ",".join("?" * len(states))
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE state IN ({marks}) ORDER BY time_schedule, run_id"
        params = list(states)
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [_row_to_run(r) for r in self._all(sql, params)]

    def query_runs(self, where="1", params=(), *, since=None, until=None, limit=50, cursor=None):
        """One page of runs matching ``where``, newest first, and the cursor of the next page.

        Keyset pagination on run_id: the cost of a page does not depend on
        how many runs are stored or how deep the page is.
        """
        clauses, values = [f"({where})"], list(params)
        if since is not None:
            clauses.append("time_schedule >= ?")
            values.append(since)
        if until is not None:
            clauses.append("time_schedule < ?")
            values.append(until)
        if cursor is not None:
            clauses.append("run_id < ?")
            values.append(cursor)
        sql = (f"SELECT {RUN_COLUMNS} FROM runs WHERE {' AND '.join(clauses)}"
               f" ORDER BY run_id DESC LIMIT ?")
        rows = self._all(sql, values + [limit + 1])
        runs = [_row_to_run(r) for r in rows[:limit]]
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

    def stats(self):
        counts = dict(self._all("SELECT state, n FROM run_counts WHERE n > 0 ORDER BY state"))
        return {"runs": sum(counts.values()), "runs_by_state": counts}

    # -- output --------------------------------------------------------------------

    def store_output(self, run_id, path, bytes_total, bytes_dropped, chunk=1 << 20):
        """Copy a run's output file into the database, a chunk at a time."""
        size = os.path.getsize(path) if os.path.exists(path) else 0
        with self.write():
            self._exec("INSERT OR REPLACE INTO outputs (run_id, data, bytes_total, bytes_dropped)"
                       " VALUES (?, zeroblob(?), ?, ?)", (run_id, size, bytes_total, bytes_dropped))
            if size:
                try:
                    blob = self.conn.blob_open("main", "outputs", "data", run_id, True)
                    try:
                        with open(path, "rb") as f:
                            while data := f.read(chunk):
                                blob.write(data)
                    finally:
                        blob.close()
                except self._storage_faults as exc:
                    raise self._fault(exc) from exc
        return size

    def store_output_bytes(self, run_id, data, bytes_total, bytes_dropped):
        """Store a run's output given in memory (an in-server program's, already bounded)."""
        with self.write():
            self._exec("INSERT OR REPLACE INTO outputs (run_id, data, bytes_total, bytes_dropped)"
                       " VALUES (?, ?, ?, ?)", (run_id, bytes(data), bytes_total, bytes_dropped))

    def output_length(self, run_id):
        row = self._one("SELECT length(data) FROM outputs WHERE run_id=?", (run_id,))
        return None if row is None else row[0]

    def read_output(self, run_id, offset=0, size=None):
        """Bytes of a finished run's stored output from ``offset``; None if none is stored."""
        with self._lock:
            row = self._exec("SELECT length(data) FROM outputs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                return None
            length = row[0]
            offset = min(max(0, offset), length)
            want = length - offset if size is None else max(0, min(size, length - offset))
            if want == 0:
                return b""
            try:
                blob = self.conn.blob_open("main", "outputs", "data", run_id, False)
                try:
                    blob.seek(offset)
                    return blob.read(want)
                finally:
                    blob.close()
            except self._storage_faults as exc:
                raise self._fault(exc) from exc

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

    # -- conditions, waiting and reruns -------------------------------------------------
    # Reads the engine makes while checking a waiting run, and the waiting
    # reason it records; each is bounded by an index on job_id or rerun_group.

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

    def run_state(self, run_id):
        """A run's state, or None if there is no such run."""
        row = self._one("SELECT state FROM runs WHERE run_id=?", (run_id,))
        return None if row is None else row[0]

    def run_key(self, run_id):
        """(job_id, args as canonical JSON) of a run, or None."""
        row = self._one("SELECT job_id, args FROM runs WHERE run_id=?", (run_id,))
        return None if row is None else (row[0], row[1])

    def set_waiting_reason(self, run_id, reason, now):
        """Make ``reason`` a waiting run's message, and log it, if it changed; True if it did."""
        with self.write():
            self._exec("UPDATE runs SET message=? WHERE run_id=? AND state='waiting' AND message IS NOT ?",
                       (reason, run_id, reason))
            if self.conn.changes() != 1:
                return False
            self._log(run_id, now, None, reason, None)
            return True

    def rerun_group(self, group_id):
        """The runs of a rerun group, the original first."""
        rows = self._all(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id=? OR rerun_group=? ORDER BY run_id",
                         (group_id, group_id))
        return [_row_to_run(r) for r in rows]

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
        return [_row_to_run(r) for r in rows]

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

    # -- pages ---------------------------------------------------------------------
    # Read-only queries for the browser pages, each bounded by the ids it is given.

    def runs_by_ids(self, run_ids) -> dict:
        """{run_id: Run} for the given ids that exist."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._all(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id IN ({marks})", ids)
        return {r.run_id: r for r in map(_row_to_run, rows)}

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
        for run in map(_row_to_run, rows):
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
                    out[job_id] = _row_to_run(row)
        return out

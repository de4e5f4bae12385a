"""The database schema, as ordered migration steps, and the runs row.

``MIGRATIONS`` is every schema change ever made, oldest first; ``PRAGMA
user_version`` records how many a database has had (see
``Transactions._migrate``). ``RUN_COLUMNS`` and ``row_to_run`` are the one
place a ``runs`` row becomes a ``Run``.
"""

import json

from apsis_lite.model.runs import Run

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
    # The host a remote run was sent to (a group's pick, or the host its
    # job names), for the run's views and the ``host:NAME`` filter term.
    """
    ALTER TABLE runs ADD COLUMN host TEXT;
    CREATE INDEX runs_host ON runs (host, state, run_id) WHERE host IS NOT NULL;
    """,
]

RUN_COLUMNS = (
    "run_id, job_id, args, state, time_schedule, time_updated, times, slot, rerun_of,"
    " rerun_group, program, conditions, actions, exit_code, signal, message, meta, host"
)

JSON_FIELDS = {"program", "conditions", "actions", "meta"}

# Automatic reruns have a slot too (``rerun|group|n``, so that each is made
# once), but are not slots of a schedule: planning and catch-up leave them be.
RERUN_SLOT_PREFIX = "rerun|"
NOT_RERUN = "slot NOT LIKE 'rerun|%'"


def row_to_run(row) -> Run:
    """The ``Run`` of a row selected as ``RUN_COLUMNS``."""
    (run_id, job_id, args, state, time_schedule, time_updated, times, slot, rerun_of,
     rerun_group, program, conditions, actions, exit_code, signal, message, meta, host) = row
    return Run(
        run_id=run_id, job_id=job_id, args=json.loads(args), state=state,
        time_schedule=time_schedule, time_updated=time_updated, times=json.loads(times),
        slot=slot, rerun_of=rerun_of, rerun_group=rerun_group,
        program=json.loads(program) if program else None,
        conditions=json.loads(conditions) if conditions else None,
        actions=json.loads(actions) if actions else None,
        exit_code=exit_code, signal=signal, message=message, meta=json.loads(meta), host=host,
    )

"""A small apsis database, made with apsis's schema (its ``sqlite.py``: tables
``clock``, ``next_run_id``, ``jobs``, ``runs``, ``run_history``, ``output``),
as apsis writes it: times as ora texts in ``times``, float epoch seconds in
``timestamp`` columns, output as a BLOB, possibly compressed."""

import json
import sqlite3
import zlib

SCHEMA = """
CREATE TABLE clock (time FLOAT NOT NULL);
CREATE TABLE next_run_id (number INTEGER NOT NULL);
CREATE TABLE jobs (job_id VARCHAR NOT NULL, job VARCHAR NOT NULL);
CREATE TABLE runs (
    rowid INTEGER NOT NULL, run_id VARCHAR NOT NULL, timestamp FLOAT NOT NULL, job_id VARCHAR NOT NULL,
    args VARCHAR NOT NULL, state VARCHAR NOT NULL, program VARCHAR, times VARCHAR NOT NULL,
    meta VARCHAR NOT NULL, message VARCHAR, run_state VARCHAR, rerun VARCHAR, expected BOOLEAN,
    conds VARCHAR, actions VARCHAR, PRIMARY KEY (rowid)
);
CREATE INDEX index_runs_job_id ON runs (job_id);
CREATE TABLE run_history (run_id VARCHAR NOT NULL, timestamp FLOAT NOT NULL, message VARCHAR NOT NULL);
CREATE INDEX idx_run_id ON run_history (run_id);
CREATE TABLE output (
    run_id VARCHAR NOT NULL, output_id VARCHAR NOT NULL, name VARCHAR NOT NULL, content_type VARCHAR NOT NULL,
    length INTEGER NOT NULL, compression VARCHAR, data BLOB NOT NULL, PRIMARY KEY (run_id, output_id)
);
"""


def ora(t: str) -> str:
    """An ora time text as apsis stores it, from ``2026-11-02T10:00:00``."""
    return t + ".00000000+00:00"


def epoch(t: str) -> float:
    from datetime import datetime, timezone
    return datetime.fromisoformat(t).replace(tzinfo=timezone.utc).timestamp()


class ApsisDB:
    """Writes runs into a new apsis database file at ``path``."""

    def __init__(self, path):
        self.path = str(path)
        self.conn = sqlite3.connect(self.path)
        self.conn.execute("PRAGMA journal_mode = WAL")  # as apsis opens it
        self.conn.executescript(SCHEMA)
        self.conn.execute("INSERT INTO clock VALUES (?)", (epoch("2026-11-03T00:00:00"),))
        self.conn.execute("INSERT INTO next_run_id VALUES (1)")
        self.next = 1

    def run(self, job_id, args, state, times, *, log=(), output=None, compression=None, meta=None,
            program=None):
        """Add run ``rN``; ``times`` as {state or 'schedule': '2026-11-02T10:00:00'}."""
        n, self.next = self.next, self.next + 1
        run_id = f"r{n}"
        last = max(epoch(t) for t in times.values())
        program = program or {"type": "apsis.program.process.ShellCommandProgram", "command": "echo hi"}
        self.conn.execute(
            "INSERT INTO runs (rowid, run_id, timestamp, job_id, args, state, program, times, meta, run_state,"
            " expected) VALUES (?,?,?,?,?,?,?,?,?,?,0)",
            (n, run_id, last, job_id, json.dumps(args), state, json.dumps(program),
             json.dumps({k: ora(v) for k, v in times.items()}), json.dumps(meta or {}), json.dumps({})))
        for t, message in log:
            self.conn.execute("INSERT INTO run_history VALUES (?,?,?)", (run_id, epoch(t), message))
        if output is not None:
            data = output
            if compression == "gzip":
                c = zlib.compressobj(wbits=31)
                data = c.compress(output) + c.flush()
            elif compression == "deflate":
                data = zlib.compress(output)
            self.conn.execute("INSERT INTO output VALUES (?, 'output', 'combined stdout & stderr',"
                              " 'application/octet-stream', ?, ?, ?)", (run_id, len(output), compression, data))
        self.conn.execute("UPDATE next_run_id SET number=?", (self.next,))
        self.conn.commit()
        return run_id

    def close(self):
        self.conn.close()

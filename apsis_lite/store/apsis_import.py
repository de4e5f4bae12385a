"""apsis's run history brought into the store: its runs, their logs and their output.

apsis keeps runs in one SQLite file: ``runs`` (a row per run: ``run_id`` as
``r123``, ``timestamp``, ``job_id``, ``args``, ``state``, ``program``,
``times`` as ora times per state, ``meta``, ``run_state``), ``run_history``
(``run_id``, ``timestamp``, ``message``: the run's log) and ``output``
(``run_id``, ``output_id``, ``data``, ``compression``). The file is opened
read-only and never changed.

Each apsis run becomes a new run here, finished, with no schedule slot (so
the scheduler never plans or catches it up), its apsis id kept in
``meta.apsis``. A run already imported (same apsis run id, job and schedule
time) is skipped, so importing again is harmless. Output is copied through a
temporary file a chunk at a time, never held whole in memory.
"""

import json
import os
import re
import tempfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime

import apsw

from apsis_lite.errors import ApsisError
from apsis_lite.model.runs import dumps

FINISHED = ("success", "failure", "error", "skipped")
NOT_STARTED = ("new", "scheduled", "waiting")
OUR_STATES = ("scheduled", "waiting", "starting", "running", "stopping", *FINISHED)
# The columns apsis's tables have always had; a file without them is not apsis's.
REQUIRED = {
    "runs": {"run_id", "timestamp", "job_id", "args", "state", "times"},
    "run_history": {"run_id", "timestamp", "message"},
}
CHUNK = 1 << 20
_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$")


class NotApsisDatabase(ApsisError):
    """The file is not an apsis database (or cannot be read as one)."""


@dataclass
class Tally:
    """What an import did, for the one line the CLI prints."""

    imported: int = 0
    already: int = 0
    unfinished: int = 0
    log_lines: int = 0
    outputs: int = 0
    output_bytes: int = 0
    problems: list = field(default_factory=list)

    def describe(self) -> str:
        words = [f"imported {self.imported} run{'s' * (self.imported != 1)}",
                 f"{self.log_lines} log lines", f"{self.outputs} outputs ({self.output_bytes} bytes)"]
        if self.already:
            words.append(f"{self.already} already imported before, left as they were")
        if self.unfinished:
            words.append(f"{self.unfinished} unfinished in apsis, recorded as error or skipped (never started again)")
        return "; ".join(words)


def parse_apsis_time(value):
    """An ora time text (``2024-12-13T12:00:00.00000000+00:00``, ``...Z``) or epoch seconds → epoch seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _TIME.match(str(value).strip()) if value is not None else None
    if not m:
        return None
    base, fraction, zone = m.groups()
    zone = "+00:00" if zone in (None, "Z") else zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
    try:
        t = datetime.fromisoformat(base + zone).timestamp()
    except ValueError:
        return None
    return t + (float("0." + fraction) if fraction else 0.0)


def open_apsis(path):
    """A read-only connection to an apsis database; NotApsisDatabase saying why not."""
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        tables = {name: {c[1] for c in conn.execute(f"PRAGMA table_info({name})")}
                  for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
    except apsw.NotADBError:
        raise NotApsisDatabase(f"{path}: not an SQLite database, so not an apsis database") from None
    except apsw.Error as exc:
        raise NotApsisDatabase(f"{path}: cannot be read: {exc}") from None
    if "run_log" in tables and "adhoc_jobs" in tables:
        conn.close()
        raise NotApsisDatabase(f"{path}: this is an apsis-lite database, not an apsis one "
                               "(to use it, start the server on its data folder, or restore it as a backup)")
    for name, columns in REQUIRED.items():
        missing = columns - tables.get(name, set())
        if missing:
            conn.close()
            what = f"no table {name!r}" if name not in tables else f"table {name!r} lacks {', '.join(sorted(missing))}"
            raise NotApsisDatabase(f"{path}: not an apsis database: {what}")
    return conn, "output" in tables


def imported_keys(store) -> set:
    """The keys of the apsis runs already imported (one pass over the runs)."""
    rows = store._exec("SELECT json_extract(meta, '$.apsis.key') FROM runs"
                       " WHERE json_extract(meta, '$.apsis.key') IS NOT NULL").fetchall()
    return {k for (k,) in rows}


def _json(text, default):
    try:
        value = json.loads(text) if text else default
    except (TypeError, ValueError):
        return default
    return value if isinstance(value, type(default)) else default


def _outcome(state, meta):
    """(our state, exit code, signal, message) of an apsis run; unfinished ones are closed."""
    status = meta.get("status") if isinstance(meta.get("status"), dict) else {}
    code = meta.get("return_code", status.get("exit_code"))
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    sig = status.get("signal")
    sig = str(sig) if sig else None
    if state in FINISHED:
        return state, code, sig, None
    if state in NOT_STARTED:
        return "skipped", None, None, f"imported from apsis, where it was {state} and had not started: never run"
    return "error", code, sig, (f"imported from apsis, where it was {state}: its outcome is unknown, "
                                "and it is not started again")


class Importer:
    """Copies runs from an apsis database connection into ``store``, a batch at a time."""

    def __init__(self, store, apsis_conn, has_output, source, now):
        self.store, self.src, self.has_output = store, apsis_conn, has_output
        self.source, self.now = source, now
        self.tally = Tally()
        self.seen = imported_keys(store)
        cols = {c[1] for c in apsis_conn.execute("PRAGMA table_info(runs)")}
        self.extra = [c for c in ("program", "meta", "message") if c in cols]

    def rows(self):
        """apsis's runs in run id order, as dicts (streamed)."""
        names = ["rowid", "run_id", "timestamp", "job_id", "args", "state", "times", *self.extra]
        for row in self.src.execute(f"SELECT {', '.join(names)} FROM runs ORDER BY rowid"):
            yield dict(zip(names, row))

    def import_batch(self, rows):
        """Import ``rows`` in one write transaction."""
        with self.store.write():
            for row in rows:
                self._import(row)

    def _import(self, row):
        times = {k: parse_apsis_time(v) for k, v in _json(row["times"], {}).items()}
        stamp = parse_apsis_time(row["timestamp"]) or self.now
        scheduled = times.get("schedule") or stamp
        key = f"{row['run_id']}|{row['job_id']}|{scheduled!r}"
        if key in self.seen:
            self.tally.already += 1
            return
        meta = _json(row.get("meta"), {})
        state, code, sig, message = _outcome(str(row["state"]), meta)
        if state != row["state"]:
            self.tally.unfinished += 1
        ours = {k: t for k, t in times.items() if k in OUR_STATES and t is not None}
        ours.setdefault(state, stamp)
        args = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in _json(row["args"], {}).items()}
        apsis = {"key": key, "run_id": row["run_id"], "state": row["state"], "source": self.source,
                 "program": _json(row.get("program"), {}) or None}
        message = message or row.get("message") or None
        meta_ours = {"apsis": apsis}
        if ours.get("running") is not None and state == row["state"] and ours.get(state) is not None:
            meta_ours["elapsed"] = max(0.0, ours[state] - ours["running"])
        run_id = self.store._exec(
            "INSERT INTO runs (job_id, args, state, time_schedule, time_updated, times, exit_code, signal,"
            " message, meta) VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING run_id",
            (row["job_id"], json.dumps(args), state, scheduled, stamp, json.dumps(ours), code, sig, message,
             dumps(meta_ours)),
        ).fetchone()[0]
        if args:
            self.store._exec_many("INSERT INTO run_args (name, value, run_id) VALUES (?, ?, ?)",
                                  [(n, v, run_id) for n, v in args.items()])
        self.store._exec("INSERT OR IGNORE INTO job_ids (job_id) VALUES (?)", (row["job_id"],))
        self._copy_log(row["run_id"], run_id, state, message)
        if self.has_output:
            self._copy_output(row["run_id"], run_id)
        self.seen.add(key)
        self.tally.imported += 1

    def _copy_log(self, apsis_id, run_id, state, message):
        lines = [(run_id, parse_apsis_time(t) or self.now, None, str(m), None)
                 for t, m in self.src.execute("SELECT timestamp, message FROM run_history WHERE run_id=?"
                                              " ORDER BY timestamp", (apsis_id,))]
        lines.append((run_id, self.now, state, f"imported from apsis run {apsis_id} ({self.source})"
                      + (f": {message}" if message else ""), None))
        self.store._exec_many("INSERT INTO run_log (run_id, time, state, message, user) VALUES (?,?,?,?,?)", lines)
        self.tally.log_lines += len(lines) - 1

    def _copy_output(self, apsis_id, run_id):
        rows = self.src.execute("SELECT rowid, compression FROM output WHERE run_id=?"
                                " ORDER BY output_id != 'output', output_id LIMIT 1", (apsis_id,)).fetchall()
        if not rows:
            return
        rowid, compression = rows[0]
        with tempfile.TemporaryFile(dir=os.path.dirname(self.store.path) or None) as tmp:
            _unpack(self.src, rowid, compression, tmp)
            size = tmp.tell()
            tmp.seek(0)
            self.store._exec("INSERT OR REPLACE INTO outputs (run_id, data, bytes_total, bytes_dropped)"
                             " VALUES (?, zeroblob(?), ?, 0)", (run_id, size, size))
            if size:
                blob = self.store.conn.blob_open("main", "outputs", "data", run_id, True)
                try:
                    while data := tmp.read(CHUNK):
                        blob.write(data)
                finally:
                    blob.close()
        self.store._exec("UPDATE runs SET meta=json_set(meta, '$.output', json(?)) WHERE run_id=?",
                         (dumps({"bytes_total": size, "bytes_kept": size, "bytes_dropped": 0}), run_id))
        self.tally.outputs += 1
        self.tally.output_bytes += size


def _chunks(conn, rowid):
    blob = conn.blob_open("main", "output", "data", rowid, False)
    try:
        while data := blob.read(CHUNK):
            yield data
    finally:
        blob.close()


def _unpack(conn, rowid, compression, out):
    """apsis's output blob, decompressed a chunk at a time, into the file ``out``."""
    if compression in (None, ""):
        for data in _chunks(conn, rowid):
            out.write(data)
        return
    if compression == "br":
        try:
            import brotli
        except ImportError:
            raise NotApsisDatabase("output compressed with brotli ('br') needs the brotli package "
                                   "(pip install brotli); nothing of this batch was imported") from None
        d = brotli.Decompressor()
        for data in _chunks(conn, rowid):
            out.write(d.process(data))
        return
    if compression not in ("gzip", "deflate"):
        raise NotApsisDatabase(f"output compressed as {compression!r}, which apsis does not write")
    d = zlib.decompressobj(wbits=31 if compression == "gzip" else 15)
    try:
        for data in _chunks(conn, rowid):
            out.write(d.decompress(data, CHUNK))
            while d.unconsumed_tail:
                out.write(d.decompress(d.unconsumed_tail, CHUNK))
        out.write(d.flush())
    except zlib.error as exc:
        raise NotApsisDatabase(f"an output ({compression}) cannot be decompressed: {exc}") from None


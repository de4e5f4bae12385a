#!/usr/bin/env python3
"""Fill a data folder's database with synthetic finished runs, fast.

    bench/fill_db.py DATA_DIR --runs 1000000 --jobs 200 [--jobs-dir JOBS]

Creates the schema by opening ``apsis_lite.store.database.Store`` (which runs the
migrations), then bulk-inserts with plain SQL in big transactions: runs of
varied job ids (``team3/job0042``) with ``{"date": "2026-01-15"}`` args,
scheduled times spread over the months before ``--end`` in run id order,
mostly success with some failure, error and skipped, the state times,
program, rusage and output metadata the engine records, two run_log rows each,
and a small stored output for one run in five. Indices are dropped during the
load and re-created with their original SQL; nothing else about the schema
changes, and no ANALYZE is run (the server never runs one either).

With ``--jobs-dir``, also writes one job file per job id (cron at a time far
from now, so a server started on the folder runs nothing).
"""

import argparse
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import apsw  # noqa: E402

from apsis_lite.store.database import Store  # noqa: E402

STATES = [("success", 0.85), ("failure", 0.10), ("error", 0.03), ("skipped", 0.02)]
DAY = 86400.0


def job_ids(n):
    return [f"team{j % 10}/job{j:04d}" for j in range(n)]


def write_jobs(jobs_dir, ids):
    hour = (time.gmtime().tm_hour + 12) % 24
    for j, job_id in enumerate(ids):
        path = os.path.join(jobs_dir, job_id + ".yaml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("params: [date]\n"
                    "program:\n  type: program\n  argv: [/bin/echo, \"{{ date }}\"]\n"
                    f"schedule:\n  type: cron\n  expr: \"{j % 60} {hour} * * *\"\n"
                    f"metadata:\n  description: Synthetic job {j}.\n  labels: [bench]\n")


def fill(data_dir, n_runs, n_jobs, end=None, days=365, batch=50_000, seed=1, quiet=False):
    """Create the database in ``data_dir`` and insert ``n_runs`` runs; returns seconds taken."""
    t_start = time.perf_counter()
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, "apsis-lite.db")
    store = Store(path)  # migrations
    store.close()
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    first_id = (conn.execute("SELECT max(run_id) FROM runs").fetchone()[0] or 0) + 1
    first_log = (conn.execute("SELECT max(id) FROM run_log").fetchone()[0] or 0) + 1
    indices = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name IN ('runs','run_log')"
        " AND sql IS NOT NULL").fetchall()
    for name, _ in indices:
        conn.execute(f"DROP INDEX {name}")

    rng = random.Random(seed)
    ids = job_ids(n_jobs)
    end = end if end is not None else time.time() - DAY
    t0 = end - days * DAY
    step = (end - t0) / max(1, n_runs)
    names = [s for s, _ in STATES]
    weights = [w for _, w in STATES]
    run_sql = ("INSERT INTO runs (run_id, job_id, args, state, time_schedule, time_updated, times, slot,"
               " rerun_of, rerun_group, program, conditions, actions, exit_code, signal, message, meta)"
               " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
    log_sql = "INSERT INTO run_log (id, run_id, time, state, message, user) VALUES (?,?,?,?,?,?)"
    out_sql = "INSERT INTO outputs (run_id, data, bytes_total, bytes_dropped) VALUES (?,?,?,?)"
    log_id = first_log
    done = 0
    while done < n_runs:
        runs, logs, outs = [], [], []
        for k in range(done, min(n_runs, done + batch)):
            rid = first_id + k
            job_id = ids[rng.randrange(n_jobs)]
            ts = t0 + k * step
            date = time.strftime("%Y-%m-%d", time.gmtime(ts))
            args = '{"date":"%s"}' % date
            state = rng.choices(names, weights)[0]
            elapsed = round(rng.uniform(0.01, 30.0), 3)
            t_run = ts + 0.003
            if state == "skipped":
                times = {"scheduled": ts - 60, "skipped": ts}
                t_end, code, msg, meta = ts, None, "skipped by hand", {}
            else:
                t_end = t_run + elapsed
                code = 0 if state == "success" else (None if state == "error" else rng.choice([1, 2, 127]))
                msg = {"success": "exit code 0", "failure": f"exit code {code}",
                       "error": "its supervisor vanished without recording a result"}[state]
                times = {"scheduled": ts - 60, "waiting": ts, "starting": ts, "running": t_run, state: t_end}
                out_len = rng.randrange(0, 400)
                meta = {"pid": rng.randrange(1000, 4_000_000), "elapsed": elapsed,
                        "rusage": {"utime": round(elapsed / 10, 3), "stime": 0.01, "maxrss_kb": 4000},
                        "output": {"bytes_total": out_len, "bytes_kept": out_len, "bytes_dropped": 0},
                        "timed_out": False, "stopped": False}
            program = {"type": "program", "argv": ["/usr/local/bin/" + job_id.split("/")[1], "--date", date],
                       "env": {}, "cwd": None, "timeout": None,
                       "stop": {"signal": "SIGTERM", "grace_period": 60.0}}
            slot = f"{round(ts * 1_000_000)}|{args}"
            runs.append((rid, job_id, args, state, ts, t_end, json.dumps(times, separators=(",", ":")), slot,
                         None, rid, json.dumps(program, separators=(",", ":")), None, None, code, None, msg,
                         json.dumps(meta, separators=(",", ":"))))
            logs.append((log_id, rid, ts - 60, "scheduled", f"created as scheduled for {date}", None))
            logs.append((log_id + 1, rid, t_end, state, msg, None))
            log_id += 2
            if state != "skipped" and k % 5 == 0:
                data = (f"processing {job_id} for {date}\n" * rng.randrange(1, 6)).encode()
                outs.append((rid, data, len(data), 0))
        with conn:
            conn.executemany(run_sql, runs)
            conn.executemany(log_sql, logs)
            conn.executemany(out_sql, outs)
        done += len(runs)
        if not quiet:
            print(f"  {done} runs, {time.perf_counter() - t_start:.1f} s", file=sys.stderr, flush=True)
    with conn:
        # The filter language's index tables, as Store.insert_run keeps them.
        conn.execute("INSERT INTO run_args (name, value, run_id) SELECT a.key, a.value, r.run_id"
                     " FROM runs AS r, json_each(r.args) AS a WHERE r.run_id >= ?", (first_id,))
        conn.execute("INSERT OR IGNORE INTO job_ids (job_id) SELECT job_id FROM runs WHERE run_id >= ?",
                     (first_id,))
    for name, sql in indices:
        conn.execute(sql)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return time.perf_counter() - t_start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir")
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--jobs-dir", help="also write a job file per job id here")
    parser.add_argument("--days", type=float, default=365, help="days of history (ending yesterday)")
    args = parser.parse_args()
    if args.jobs_dir:
        write_jobs(args.jobs_dir, job_ids(args.jobs))
    seconds = fill(args.data_dir, args.runs, args.jobs, days=args.days)
    size = os.path.getsize(os.path.join(args.data_dir, "apsis-lite.db")) / 2**20
    print(f"fill_db_time: {seconds:.1f} s ({args.runs} runs, {args.jobs} jobs)")
    print(f"fill_db_size: {size:.0f} MB")


if __name__ == "__main__":
    main()

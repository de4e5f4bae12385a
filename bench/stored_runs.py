#!/usr/bin/env python3
"""A server over a large history: N stored runs (default 1,000,000).

Fills a fresh data folder with ``fill_db.py`` (or reuses one with ``--reuse``),
starts the server on it, and measures start-up time, RSS after start-up and
after the first 200 page requests (and at the end), and the latency of the
read API: 200 sequential requests per endpoint, each on a new connection
(no keep-alive), p50/p95/p99. Each endpoint is capped at ``--cap`` seconds.

    bench/stored_runs.py                 # 1,000,000 runs, 200 jobs
    bench/stored_runs.py --small         # 100,000 runs
    bench/stored_runs.py --runs 300000 --requests 50
    bench/stored_runs.py --reuse /tmp/ab-f1 --jobs-dir /tmp/ab-f1j   # a folder fill_db.py made
"""

import datetime
import os
import random
import time
import urllib.parse

from common import forget_server, Server, cleanup, figure, note, pct, request, rss_mb, stored_runs_main, tmpdir
import fill_db

PAGE_TARGET = "p95 <= 50 ms"


def measure(url, paths, cap):
    """Latencies (ms) of GETs of ``paths`` (a list, or a function of i), until ``cap`` s."""
    lat, deadline, items = [], time.monotonic() + cap, None
    for i, path in enumerate(paths):
        t = time.perf_counter()
        status, body = request(url, "GET", path)
        lat.append((time.perf_counter() - t) * 1000)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body[:200]!r}")
        if items is None and body.startswith(b'{"items"'):
            import json
            items = len(json.loads(body)["items"])
        if time.monotonic() > deadline:
            break
    return lat, items


def query_plans(db_path, queries):
    """EXPLAIN QUERY PLAN of the SQL the server runs for each filter (for the report)."""
    import apsw
    from apsis_lite.store.runfilter import compile_filter
    from apsis_lite.store.database import RUN_COLUMNS
    conn = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READONLY)
    for label, q in queries:
        where, params = compile_filter(q)
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE ({where}) ORDER BY run_id DESC LIMIT ?"
        plan = conn.execute("EXPLAIN QUERY PLAN " + sql, params + [51]).fetchall()
        note(f"plan {label} ({q!r}): " + " | ".join(row[-1] for row in plan))
    conn.close()


def bench(n_runs, n_jobs, n_req, cap, reuse=None, jobs_dir=None):
    made = []
    if reuse:
        data_dir = reuse
        if not jobs_dir:
            jobs_dir = tmpdir("rj")
            made.append(jobs_dir)
            fill_db.write_jobs(jobs_dir, fill_db.job_ids(n_jobs))
        forget_server(data_dir)
    else:
        data_dir, jobs_dir = tmpdir("rd"), tmpdir("rj")
        made += [data_dir, jobs_dir]
    try:
        if not reuse:
            fill_db.write_jobs(jobs_dir, fill_db.job_ids(n_jobs))
            seconds = fill_db.fill(data_dir, n_runs, n_jobs, quiet=True)
            figure(f"stored_{n_runs}_fill_db", seconds, "s", "under a minute for 1M")
        db_path = os.path.join(data_dir, "apsis-lite.db")
        figure(f"stored_{n_runs}_db_size", os.path.getsize(db_path) / 2**20, "MB", fmt="{:.0f}")
        with Server(jobs_dir, data_dir) as server:
            server.start(timeout=300)
            tag = f"stored_{n_runs}"
            figure(f"{tag}_startup", server.startup_s, "s", fmt="{:.2f}")
            figure(f"{tag}_rss_after_startup", rss_mb(server.pid), "MB", "<= 150 MB")
            url = server.url
            stats = server.get("/api/v1/stats")
            total = stats["runs"]
            top = int(server.get("/api/v1/runs?limit=1")["items"][0]["run_id"][1:])
            rng = random.Random(7)
            # A date in the stored range: 2026-01-15 if there, else the middle one.
            first = server.get(f"/api/v1/runs?limit=1&cursor=r{max(2, top - total + 2)}")["items"]
            lo = first[0]["args"]["date"] if first else "2026-01-15"
            hi = server.get("/api/v1/runs?limit=1")["items"][0]["args"]["date"]
            date = "2026-01-15" if lo <= "2026-01-15" <= hi else (
                datetime.date.fromisoformat(lo) + (datetime.date.fromisoformat(hi) - datetime.date.fromisoformat(lo)) / 2
            ).isoformat()
            q = urllib.parse.quote
            endpoints = [
                ("runs_first_page", ["/api/v1/runs?limit=50"] * n_req),
                ("runs_deep_page_cursor", [f"/api/v1/runs?limit=50&cursor=r{top // 2}"] * n_req),
                ("runs_q_job_substring", [f"/api/v1/runs?limit=50&q={q('job0042')}"] * n_req),
                ("runs_q_team_substring", [f"/api/v1/runs?limit=50&q={q('team3')}"] * n_req),
                ("runs_q_state_failure", [f"/api/v1/runs?limit=50&q={q('state:failure')}"] * n_req),
                ("runs_q_date", [f"/api/v1/runs?limit=50&q={q('date=' + date)}"] * n_req),
                ("runs_q_date_no_match", [f"/api/v1/runs?limit=50&q={q('date=1999-01-01')}"] * n_req),
                ("runs_q_text_no_match", [f"/api/v1/runs?limit=50&q={q('nosuchjob')}"] * n_req),
                ("runs_q_not_success", [f"/api/v1/runs?limit=50&q={q('!state:success')}"] * n_req),
                ("runs_q_state_error_deep", [f"/api/v1/runs?limit=50&q={q('state:error')}&cursor=r{top // 2}"] * n_req),
                ("runs_q_job_and_failure", [f"/api/v1/runs?limit=50&q={q('job:team2/job0042 state:fail')}"] * n_req),
                ("run_detail", [f"/api/v1/runs/r{rng.randrange(max(1, top - total + 1), top + 1)}" for _ in range(n_req)]),
                ("run_log", [f"/api/v1/runs/r{rng.randrange(max(1, top - total + 1), top + 1)}/log" for _ in range(n_req)]),
                ("stats", ["/api/v1/stats"] * n_req),
            ]
            note(f"{tag}: {total} runs, ids up to r{top}, date filter {date}")
            for i, (name, paths) in enumerate(endpoints):
                lat, items = measure(url, paths, cap)
                target = PAGE_TARGET if name.startswith("runs_") else None
                extra = f" ({len(lat)} requests" + (f", {items} items/page" if items is not None else "") + ")"
                figure(f"{tag}_{name}_p50", pct(lat, 50), "ms")
                figure(f"{tag}_{name}_p95", pct(lat, 95), "ms" + extra, target)
                figure(f"{tag}_{name}_p99", pct(lat, 99), "ms")
                if i == 0:
                    figure(f"{tag}_rss_after_{len(lat)}_page_requests", rss_mb(server.pid), "MB", "<= 150 MB")
            figure(f"{tag}_rss_at_end", rss_mb(server.pid), "MB", "<= 150 MB")
        query_plans(db_path, [("job substring", "job0042"), ("state", "state:failure"),
                              ("date", f"date={date}"), ("not success", "!state:success"),
                              ("job and state", "job:team2/job0042 state:fail")])
    finally:
        if made:
            cleanup(*made)


if __name__ == "__main__":
    stored_runs_main(bench, __doc__, jobs=200, requests=200)

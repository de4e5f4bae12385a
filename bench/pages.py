#!/usr/bin/env python3
"""Server-side render time of the browser pages over a large history.

Fills a fresh data folder with ``fill_db.py`` (1,000,000 runs of 5,000 jobs by
default; ``--reuse DATA --jobs-dir JOBS`` takes a folder filled before), then
builds the real Flask app in this process over a read-only store and an
engine holding the 5,000 loaded jobs (not started: nothing is planned or
run), and times each page and fragment through Flask's test client: request
in, whole HTML out, no network. p50/p95 per page.

Then the calendar: the same ids as 5,000 jobs of mixed schedule types
(weekday cron, daily on a weekday calendar, hourly interval, 1-minute
interval), month / week / day pages timed cold (a fresh app: nothing
summarised yet), after the background warmer's pass, and warm (p50/p95),
with the share of jobs whose upcoming times the month covers.

    bench/pages.py                         # 1,000,000 runs, 5,000 jobs
    bench/pages.py --small                 # 100,000 runs
    bench/pages.py --reuse /tmp/d --jobs-dir /tmp/j
"""

import random
import time
import urllib.parse

import fill_db
from common import cleanup, figure, note, pct, stored_runs_main, tmpdir

from apsis_lite.config import load_config
from apsis_lite.engine.core import Engine
from apsis_lite.model.jobs import load_jobs_dir
from apsis_lite.engine.launcher import LocalLauncher
from apsis_lite.store.database import Store
from apsis_lite.web.app import create_app

TARGET = "p95 < 100 ms"
HX = {"HX-Request": "true", "HX-Target": "runs-results"}


def client_of(app):
    """A test client that signs in as the CLI on this machine does (the app's local token)."""
    client = app.test_client()
    auth = app.extensions.get("apsis_auth")
    if auth is not None:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {auth.local_token}"
    return client



def calendar_app(config, reader, engine, launcher):
    """The app, with its calendar warmer driven by this benchmark (``warm_once``) rather
    than started by the first view: in this process that would be a real thread,
    racing the measurements for the interpreter, where the server's greenlets take turns."""
    app = create_app(config, reader, engine, launcher)
    app.extensions["calendar_warmer"].start = lambda: None
    return app

def measure(client, paths, n, cap, headers=None):
    """Milliseconds per request for ``n`` requests (or ``cap`` seconds) of ``paths(i)``."""
    lat, deadline = [], time.monotonic() + cap
    for i in range(n):
        path = paths(i)
        t = time.perf_counter()
        resp = client.get(path, headers=headers or {})
        resp.get_data()
        lat.append((time.perf_counter() - t) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status_code}: {resp.get_data(as_text=True)[:300]}")
        if time.monotonic() > deadline:
            break
    return lat


MIXED = [
    'params: [date]\nschedule: {{type: cron, expr: "{m} 9 * * Mon-Fri", tz: Europe/London}}\n',
    'params: [date]\nschedule: {{type: daily, daytime: "06:{m:02d}", tz: America/New_York, calendar: Mon-Fri}}\n',
    'schedule: {{type: interval, interval: 1h, phase: {m}m}}\n',
    'schedule: {{type: interval, interval: 1m}}\n',
]


def write_mixed_jobs(jobs_dir, ids):
    """Job files of ``ids`` cycling through the MIXED schedule types."""
    import os
    for j, job_id in enumerate(ids):
        path = os.path.join(jobs_dir, job_id + ".yaml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("program: {type: no-op}\n" + MIXED[j % len(MIXED)].format(m=j % 60))


def bench_calendar(config, reader, writer, launcher, n_jobs, n_req, cap):
    """Calendar pages over ``n_jobs`` mixed jobs: cold, warmer pass, warm; and coverage."""

    jobs_dir = tmpdir("pc")
    try:
        write_mixed_jobs(jobs_dir, fill_db.job_ids(n_jobs))
        jobs, errors = load_jobs_dir(jobs_dir)
        if errors:
            raise RuntimeError(f"mixed jobs: {errors[0]}")
        engine = Engine(config, writer, launcher)
        engine.set_jobs(jobs, [])
        urls = [("month", "/calendar"), ("week", "/calendar?view=week"), ("day", "/calendar/day")]
        for name, url in urls:
            client = client_of(calendar_app(config, reader, engine, launcher))
            lat = measure(client, lambda i, u=url: u, 1, cap)
            figure(f"calendar_{name}_cold", lat[0], "ms (first view, nothing summarised)")
        app = calendar_app(config, reader, engine, launcher)
        t = time.perf_counter()
        app.extensions["calendar_warmer"].warm_once(pause=lambda: None)
        figure("calendar_warmer_pass", (time.perf_counter() - t) * 1000, "ms (background, after start or reload)")
        client = client_of(app)
        for name, url in urls:
            lat = measure(client, lambda i, u=url: u, n_req, cap)
            figure(f"calendar_{name}_warm_p50", pct(lat, 50), "ms")
            figure(f"calendar_{name}_warm_p95", pct(lat, 95), f"ms ({len(lat)} requests)", TARGET)
        lat = measure(client, lambda i: "/calendar?q=team3", n_req, cap)
        figure("calendar_month_q_team3_p95", pct(lat, 95), f"ms ({len(lat)} requests)", TARGET)
        grid = app.extensions["calendar_warmer"].grid
        month = next(w for k, w in grid.windows.items() if len(k) > 8)
        covered = sum(1 for e in month.entries.values() if e.mask)
        figure("calendar_month_coverage", covered, f"of {n_jobs} jobs have upcoming times computed")
    finally:
        cleanup(jobs_dir)


def bench(n_runs, n_jobs, n_req, cap, reuse=None, jobs_dir=None):
    made = []
    if reuse:
        data_dir = reuse
        if not jobs_dir:
            jobs_dir = tmpdir("pj")
            made.append(jobs_dir)
            fill_db.write_jobs(jobs_dir, fill_db.job_ids(n_jobs))
    else:
        data_dir, jobs_dir = tmpdir("pd"), tmpdir("pj")
        made += [data_dir, jobs_dir]
    try:
        if not reuse:
            fill_db.write_jobs(jobs_dir, fill_db.job_ids(n_jobs))
            seconds = fill_db.fill(data_dir, n_runs, n_jobs, quiet=True)
            note(f"filled {n_runs} runs of {n_jobs} jobs in {seconds:.1f} s")
        config = load_config(None, data_dir=data_dir, jobs_dir=jobs_dir)
        writer = Store(config.db_path)
        reader = Store(config.db_path, readonly=True)
        launcher = LocalLauncher(config)
        engine = Engine(config, writer, launcher)
        jobs, errors = load_jobs_dir(jobs_dir)
        engine.set_jobs(jobs, errors)
        client = client_of(create_app(config, reader, engine, launcher))

        stats = reader.stats()
        top = reader.query_runs(limit=1)[0][0].run_id
        low = top - stats["runs"] + 1
        mid_run = reader.get_run((low + top) // 2)
        date = mid_run.args.get("date", "2026-01-15")
        job = sorted(jobs)[42]
        since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(mid_run.time_schedule))
        until = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(mid_run.time_schedule + 7 * 86400))
        q = urllib.parse.quote
        rng = random.Random(3)
        note(f"{stats['runs']} runs (r{low}..r{top}), {len(jobs)} jobs, date filter {date}, job {job}")
        pages = [
            ("overview", lambda i: "/"),
            ("overview_poll", lambda i: "/", {"HX-Request": "true", "HX-Target": "overview-results"}),
            ("runs_first_page", lambda i: "/runs"),
            ("runs_fragment_poll", lambda i: "/runs", HX),
            ("runs_deep_cursor", lambda i: f"/runs?cursor=r{(low + top) // 2}"),
            ("runs_q_job_word", lambda i: "/runs?q=job0042"),
            ("runs_q_team_word", lambda i: "/runs?q=team3", HX),
            ("runs_q_job_exact", lambda i: f"/runs?q={q('job:' + job)}"),
            ("runs_q_state_failure", lambda i: f"/runs?q={q('state:failure')}"),
            ("runs_chip_error", lambda i: "/runs?state=error"),
            ("runs_q_date", lambda i: f"/runs?q={q('date=' + date)}"),
            ("runs_q_not_success", lambda i: f"/runs?q={q('!state:success')}"),
            ("runs_q_no_match", lambda i: "/runs?q=nosuchjob", HX),
            ("runs_time_range", lambda i: f"/runs?since={q(since)}&until={q(until)}"),
            ("jobs_page", lambda i: "/jobs"),
            ("jobs_search", lambda i: "/jobs?q=team3"),
            ("jobs_search_label", lambda i: "/jobs?q=bench"),
            ("job_page", lambda i: "/jobs/" + job),
            ("run_page", lambda i: f"/runs/r{rng.randrange(low, top + 1)}"),
            ("run_summary_fragment", lambda i: f"/runs/r{rng.randrange(low, top + 1)}/summary"),
            ("adhoc_page", lambda i: "/adhoc"),
        ]
        for name, paths, *headers in pages:
            measure(client, paths, 3, cap, headers[0] if headers else None)  # warm caches and templates
            lat = measure(client, paths, n_req, cap, headers[0] if headers else None)
            figure(f"page_{name}_p50", pct(lat, 50), "ms")
            figure(f"page_{name}_p95", pct(lat, 95), f"ms ({len(lat)} requests)", TARGET)
        bench_calendar(config, reader, writer, launcher, n_jobs, n_req, cap)
        launcher.close()
        reader.close()
        writer.close()
    finally:
        if made:
            cleanup(*made)


if __name__ == "__main__":
    stored_runs_main(bench, __doc__, jobs=5000, requests=100)

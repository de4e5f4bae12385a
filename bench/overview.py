#!/usr/bin/env python3
"""Server-side render time of the overview (``/``) and a job's page with its history picture,
over a large history.

Fills a fresh data folder with ``fill_db.py`` (1,000,000 runs of 5,000 jobs by
default, over the year before yesterday; ``--reuse DATA --jobs-dir JOBS``
takes a folder filled before), builds the real Flask app in this process over
a read-only store and an engine holding the 5,000 loaded jobs (not started),
and times through Flask's test client: request in, whole HTML out.

* the overview's first view (each job's next due time worked out from its
  schedule, once), then p50/p95 of the page and of its 2-second poll;
* the same with the clock set to the last stored run, so that the last 24
  hours hold a full day of runs (about 2,700 at the default size) and the
  failure lists and counts have something to find;
* a job's page (its picture of 60 runs and its day and week rates) and the
  picture's poll.

    bench/overview.py                      # 1,000,000 runs, 5,000 jobs
    bench/overview.py --small              # 100,000 runs
    bench/overview.py --reuse /tmp/d --jobs-dir /tmp/j
"""

import time

import fill_db
from common import cleanup, figure, note, pct, stored_runs_main, tmpdir
from pages import TARGET, client_of, measure

from apsis_lite.config import load_config
from apsis_lite.engine.core import Engine
from apsis_lite.engine.launcher import LocalLauncher
from apsis_lite.model.jobs import load_jobs_dir
from apsis_lite.store.database import Store
from apsis_lite.web.app import create_app

OVERVIEW_POLL = {"HX-Request": "true", "HX-Target": "overview-results"}
HISTORY_POLL = {"HX-Request": "true", "HX-Target": "job-history"}


def timed_pages(client, prefix, pages, n_req, cap):
    for name, path, headers in pages:
        measure(client, lambda i, p=path: p, 3, cap, headers)  # warm caches and templates
        lat = measure(client, lambda i, p=path: p, n_req, cap, headers)
        figure(f"{prefix}{name}_p50", pct(lat, 50), "ms")
        figure(f"{prefix}{name}_p95", pct(lat, 95), f"ms ({len(lat)} requests)", TARGET)


def bench(n_runs, n_jobs, n_req, cap, reuse=None, jobs_dir=None):
    made = []
    if reuse:
        data_dir = reuse
        if not jobs_dir:
            jobs_dir = tmpdir("oj")
            made.append(jobs_dir)
            fill_db.write_jobs(jobs_dir, fill_db.job_ids(n_jobs))
    else:
        data_dir, jobs_dir = tmpdir("od"), tmpdir("oj")
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
        jobs, errors = load_jobs_dir(jobs_dir)
        last = reader.query_runs(limit=1)[0][0]
        job = last.job_id
        note(f"{reader.stats()['runs']} runs, {len(jobs)} jobs; job page of {job}")
        pages = [("overview", "/", None), ("overview_poll", "/", OVERVIEW_POLL),
                 ("job_page", "/jobs/" + job, None), ("job_history_poll", "/jobs/" + job, HISTORY_POLL)]
        for prefix, clock in (("", time.time), ("busy_day_", lambda: last.time_schedule + 1)):
            engine = Engine(config, writer, launcher, clock=clock)
            engine.set_jobs(jobs, errors)
            client = client_of(create_app(config, reader, engine, launcher))
            t = time.perf_counter()
            resp = client.get("/")
            resp.get_data()
            figure(f"{prefix}overview_first", (time.perf_counter() - t) * 1000,
                   f"ms (every job's next due time worked out; HTTP {resp.status_code})")
            timed_pages(client, prefix, pages, n_req, cap)
        launcher.close()
        reader.close()
        writer.close()
    finally:
        if made:
            cleanup(*made)


if __name__ == "__main__":
    stored_runs_main(bench, __doc__, jobs=5000, requests=100)

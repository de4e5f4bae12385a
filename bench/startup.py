#!/usr/bin/env python3
"""Start-up with many idle jobs.

N job files (cron schedules far from now, so nothing runs during the
benchmark), in folders of 100. Measures the time from spawning
``apsis-lite serve`` to its first successful ``/api/v1/alive``, the server's
RSS right then and after 10 s idle, and the CPU it used during the first and
the second 10 s after start-up (the first includes whatever the engine does
once the web server answers, such as planning every job). Then a few reads:
``/api/v1/alive`` latency while idle, ``/api/v1/jobs`` (first page of 500),
and one job's detail.

    bench/startup.py               # 10,000 jobs
    bench/startup.py --small       # 1,000 jobs
    bench/startup.py --jobs 20000
"""

import argparse
import os
import time

from common import (Server, cleanup, cpu_seconds, figure, pct, request, rss_mb, size_args, tmpdir,
                    write_job)

JOB = """\
params: [date]
program:
  type: shell
  command: "echo {{{{ date }}}}"
schedule:
  type: cron
  expr: "{minute} {hour} * * *"
metadata:
  description: Idle benchmark job {i}.
  labels: [bench, idle]
"""


def timed(url, path, n):
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        status, _ = request(url, "GET", path)
        lat.append((time.perf_counter() - t) * 1000)
        assert status == 200, (path, status)
    return lat


def baseline():
    """The same server with no jobs: what start-up costs before any job."""
    jobs_dir, data_dir = tmpdir("sj"), tmpdir("sd")
    try:
        with Server(jobs_dir, data_dir) as server:
            server.start()
            figure("startup_0jobs_time_to_alive", server.startup_s, "s (baseline: interpreter, imports, empty database)",
                   fmt="{:.2f}")
            figure("startup_0jobs_rss", rss_mb(server.pid), "MB")
    finally:
        cleanup(jobs_dir, data_dir)


def bench(n, idle):
    jobs_dir, data_dir = tmpdir("sj"), tmpdir("sd")
    try:
        hour = (time.gmtime().tm_hour + 12) % 24
        for i in range(n):
            write_job(jobs_dir, f"idle/g{i // 100:03d}/j{i:05d}",
                      JOB.format(minute=i % 60, hour=hour, i=i))
        # On disk, as after a deployment that writes the job files and then
        # starts the server. (Files modified within a timestamp tick of the
        # start, 0.1 s here, are read a second time just after start-up.)
        os.sync()
        with Server(jobs_dir, data_dir) as server:
            server.start(timeout=300)
            rss0 = rss_mb(server.pid)
            cpu0, t0 = cpu_seconds(server.pid), time.time()
            time.sleep(idle)
            cpu1, t1 = cpu_seconds(server.pid), time.time()
            rss1 = rss_mb(server.pid)
            time.sleep(idle)
            cpu2, t2 = cpu_seconds(server.pid), time.time()
            rss2 = rss_mb(server.pid)
            alive = timed(server.url, "/api/v1/alive", 50)
            jobs = timed(server.url, "/api/v1/jobs?limit=500", 20)
            one = timed(server.url, "/api/v1/jobs/idle/g000/j00001", 20)
            stats = server.get("/api/v1/stats")
        tag = f"startup_{n}jobs"
        figure(f"{tag}_time_to_listening", server.listening_s, "s (server.url written: jobs loaded, web server up)",
               fmt="{:.2f}")
        figure(f"{tag}_time_to_alive", server.startup_s, "s", "<= 2 s" if n == 10000 else None,
               fmt="{:.2f}")
        figure(f"{tag}_rss_after_startup", rss0, "MB", "<= 100 MB" if n == 10000 else None)
        figure(f"{tag}_rss_after_{idle:.0f}s", rss1, "MB", "<= 100 MB" if n == 10000 else None)
        figure(f"{tag}_rss_after_{2 * idle:.0f}s", rss2, "MB")
        figure(f"{tag}_cpu_first_{idle:.0f}s_after_alive", cpu1 - cpu0, f"s CPU ({(cpu1 - cpu0) / (t1 - t0) * 100:.1f}% of one core)",
               fmt="{:.2f}")
        figure(f"{tag}_cpu_idle_next_{idle:.0f}s", cpu2 - cpu1, f"s CPU ({(cpu2 - cpu1) / (t2 - t1) * 100:.2f}% of one core)",
               fmt="{:.3f}")
        figure(f"{tag}_alive_p50", pct(alive, 50), "ms", fmt="{:.2f}")
        figure(f"{tag}_jobs_page500_p50", pct(jobs, 50), "ms")
        figure(f"{tag}_job_detail_p50", pct(one, 50), "ms")
        figure(f"{tag}_jobs_loaded", stats["jobs"], f"jobs ({stats['job_errors']} errors, {stats['runs']} runs)")
    finally:
        cleanup(jobs_dir, data_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size_args(parser, "1,000 jobs", "10,000 jobs (default)")
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds per idle measurement")
    args = parser.parse_args()
    baseline()
    bench(args.jobs or (1000 if args.small else 10000), args.idle)


if __name__ == "__main__":
    main()

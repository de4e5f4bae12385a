#!/usr/bin/env python3
"""The sanity check and /metrics over a large history: N stored runs (default 1,000,000), J jobs (5,000).

Fills a fresh data folder with ``fill_db.py`` (or reuses one with ``--reuse``),
starts the server on it with the background check off, and measures: a whole
sanity check asked for through ``GET /api/v1/sanity`` (its latency and the
check's own duration), a scrape of ``/metrics``, the server's RSS after
start-up and after them, and what a check costs the event loop: the latency
of ``/api/v1/alive`` polled every 20 ms while checks run back to back,
against a quiet window.

    bench/monitoring.py                  # 1,000,000 runs, 5,000 jobs
    bench/monitoring.py --small          # 100,000 runs, 1,000 jobs
    bench/monitoring.py --reuse /tmp/ab-f1 --jobs-dir /tmp/ab-f1j
"""

import argparse
import json
import threading
import time

from common import forget_server, Server, cleanup, figure, note, pct, request, rss_mb, size_args, tmpdir
import fill_db


def timed(url, path, n, cap=60.0):
    """(latencies in ms, last body) of ``n`` GETs of ``path``."""
    lat, body, deadline = [], b"", time.monotonic() + cap
    for _ in range(n):
        t = time.perf_counter()
        status, body = request(url, "GET", path)
        lat.append((time.perf_counter() - t) * 1000)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body[:200]!r}")
        if time.monotonic() > deadline:
            break
    return lat, body


def alive_latency(url, seconds, busy=None):
    """Latencies (ms) of /api/v1/alive every 20 ms for ``seconds``, while ``busy()`` runs (if given)."""
    lat, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            t = time.perf_counter()
            request(url, "GET", "/api/v1/alive")
            lat.append((time.perf_counter() - t) * 1000)
            time.sleep(0.02)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    if busy is None:
        time.sleep(seconds)
    else:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            busy()
    stop.set()
    thread.join()
    return lat


def bench(n_runs, n_jobs, n_req, reuse=None, jobs_dir=None):
    made = []
    if reuse:
        data_dir = reuse
        forget_server(data_dir)
    else:
        data_dir = tmpdir("md")
        made.append(data_dir)
    if not jobs_dir:
        jobs_dir = tmpdir("mj")
        made.append(jobs_dir)
        fill_db.write_jobs(jobs_dir, fill_db.job_ids(n_jobs))
    tag = f"monitoring_{n_runs}"
    try:
        if not reuse:
            seconds = fill_db.fill(data_dir, n_runs, n_jobs, quiet=True)
            note(f"{tag}: filled {n_runs} runs of {n_jobs} jobs in {seconds:.0f} s")
        with Server(jobs_dir, data_dir, config={"sanity_interval": 0}) as server:
            server.start(timeout=300)
            url = server.url
            figure(f"{tag}_rss_after_startup", rss_mb(server.pid), "MB", "<= 150 MB")
            lat, body = timed(url, "/api/v1/sanity", n_req)
            report = json.loads(body)
            figure(f"{tag}_sanity_check_first", lat[0], "ms (the first: every job's next due time worked out)")
            figure(f"{tag}_sanity_check_p50", pct(lat[1:], 50), "ms")
            figure(f"{tag}_sanity_check_p95", pct(lat[1:], 95), "ms", "<= 1 s")
            figure(f"{tag}_sanity_check_duration", report["duration"] * 1000, "ms (as the server measured it)")
            note(f"{tag}: findings {report['counts']}")
            lat, body = timed(url, "/metrics", n_req)
            figure(f"{tag}_metrics_scrape_p50", pct(lat, 50), "ms")
            figure(f"{tag}_metrics_scrape_p95", pct(lat, 95), "ms", "<= 100 ms")
            figure(f"{tag}_metrics_bytes", len(body) / 1024, "KiB")
            quiet = alive_latency(url, 5)
            busy = alive_latency(url, 10, lambda: request(url, "GET", "/api/v1/sanity"))
            figure(f"{tag}_alive_quiet_p99", pct(quiet, 99), "ms")
            figure(f"{tag}_alive_during_checks_p50", pct(busy, 50), "ms")
            figure(f"{tag}_alive_during_checks_p99", pct(busy, 99), "ms")
            figure(f"{tag}_alive_during_checks_max", max(busy), "ms")
            figure(f"{tag}_rss_at_end", rss_mb(server.pid), "MB", "<= 150 MB")
    finally:
        if made:
            cleanup(*made)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size_args(parser, "100,000 runs, 1,000 jobs", "1,000,000 runs, 5,000 jobs (default)")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--requests", type=int, default=20, help="checks and scrapes measured")
    parser.add_argument("--reuse", help="a data folder filled before (kept)")
    parser.add_argument("--jobs-dir", help="with --reuse: its jobs folder")
    args = parser.parse_args()
    n = args.runs or (100_000 if args.small else 1_000_000)
    jobs = args.jobs or (1_000 if args.small else 5_000)
    bench(n, jobs, args.requests, args.reuse, args.jobs_dir)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Many waiting runs cost nothing while nothing changes.

N runs of a job ``waiter`` (param ``n``) each wait for ``upstream(n=...)``
to succeed: N distinct dependencies, none of which exists. The runs are
written into a fresh database before the server starts, as scheduled runs
already due, so the server's start-up recovery checks every one and files it
under what it waits for. Measures: the time until all N are waiting with
their reason recorded, the server's CPU over the next ``--idle`` seconds
(the figure that matters: it should be that of an idle server), then how
long one ``upstream`` success takes to release its one waiter, and the CPU
that costs.

    bench/waiting_idle.py            # 10,000 waiting runs
    bench/waiting_idle.py --small    # 1,000
    bench/waiting_idle.py --runs 50000 --idle 20
"""

import argparse
import os
import time

from common import Server, cleanup, cpu_seconds, figure, get_json, post_json, rss_mb, size_args, tmpdir, write_job

from apsis_lite.store.database import Store


def fill(data_dir, n, now):
    store = Store(os.path.join(data_dir, "apsis-lite.db"))
    condition = {"type": "dependency", "job_id": "upstream", "args": {}, "states": ["success"],
                 "exist": False}
    with store.write():
        for i in range(n):
            store.insert_run("waiter", {"n": str(i)}, "scheduled", now, now,
                             program={"type": "no-op"}, conditions=[condition], actions=[])
    store.close()


def count(url, state):
    return get_json(url, "/api/v1/stats")["runs_by_state"].get(state, 0)


def write_jobs(jobs_dir):
    write_job(jobs_dir, "upstream", "params: [n]\nprogram: {type: no-op}\n")
    write_job(jobs_dir, "waiter", "params: [n]\nprogram: {type: no-op}\n"
                                  "condition: {type: dependency, job_id: upstream}\n")


def baseline(idle):
    """The same server and jobs with no runs: what idling costs anyway (the sweep, the loop)."""
    jobs_dir, data_dir = tmpdir("wj"), tmpdir("wd")
    try:
        write_jobs(jobs_dir)
        with Server(jobs_dir, data_dir) as server:
            server.start()
            time.sleep(1.0)
            cpu0, w0 = cpu_seconds(server.pid), time.time()
            time.sleep(idle)
            cpu1, w1 = cpu_seconds(server.pid), time.time()
        figure(f"waiting_idle_0runs_cpu_idle_{idle:.0f}s", cpu1 - cpu0,
               f"s CPU ({(cpu1 - cpu0) / (w1 - w0) * 100:.2f}% of one core; baseline: no runs)", fmt="{:.3f}")
    finally:
        cleanup(jobs_dir, data_dir)


def bench(n, idle):
    jobs_dir, data_dir = tmpdir("wj"), tmpdir("wd")
    try:
        write_jobs(jobs_dir)
        fill(data_dir, n, time.time())
        with Server(jobs_dir, data_dir) as server:
            server.start(timeout=300)
            t0 = time.perf_counter()
            # Waiting, with the reason recorded: the last step of checking a run.
            while True:
                probe = get_json(server.url, "/api/v1/runs?q=job:waiter&limit=1")["items"]
                last = get_json(server.url, "/api/v1/runs?q=job:waiter%20state:sched&limit=1")["items"]
                if not last and probe and (probe[0]["message"] or "").startswith("waiting for"):
                    break
                time.sleep(0.05)
            checked = time.perf_counter() - t0
            assert count(server.url, "waiting") == n, count(server.url, "waiting")
            time.sleep(1.0)  # let the last commit and log lines settle
            cpu0, w0 = cpu_seconds(server.pid), time.time()
            time.sleep(idle)
            cpu1, w1 = cpu_seconds(server.pid), time.time()
            rss = rss_mb(server.pid)

            target = str(n // 2)
            t = time.perf_counter()
            post_json(server.url, "/api/v1/runs", {"job_id": "upstream", "args": {"n": target}})
            while True:
                page = get_json(server.url, f"/api/v1/runs?q=job:waiter%20n={target}&limit=1")["items"]
                if page and page[0]["state"] == "success":
                    break
                time.sleep(0.002)
            released = time.perf_counter() - t
            cpu2 = cpu_seconds(server.pid)
            still = count(server.url, "waiting")
        tag = f"waiting_idle_{n}runs"
        figure(f"{tag}_all_waiting_after_spawn", server.startup_s + checked,
               "s (start-up and recovery: every run checked, filed and its reason recorded)", fmt="{:.2f}")
        figure(f"{tag}_cpu_idle_{idle:.0f}s", cpu1 - cpu0,
               f"s CPU ({(cpu1 - cpu0) / (w1 - w0) * 100:.2f}% of one core)", "no CPU while idle", fmt="{:.3f}")
        figure(f"{tag}_rss", rss, "MB")
        figure(f"{tag}_one_dependency_releases_its_waiter", released * 1000,
               f"ms ({(cpu2 - cpu1) * 1000:.0f} ms server CPU incl. the two HTTP requests; "
               f"{still} still waiting)")
    finally:
        cleanup(jobs_dir, data_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size_args(parser, "1,000 waiting runs", "10,000 waiting runs (default)")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    args = parser.parse_args()
    baseline(args.idle)
    bench(args.runs or (1000 if args.small else 10000), args.idle)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The reference for ``versus.py``: APScheduler 3 running the same workload.

A BackgroundScheduler with a pool of 10 threads, each job a
``subprocess.run`` of the same child as apsis-lite's runs
(``sh -c 'echo TAG $(date +%s.%N) >> OUT'``). Run by ``versus.py`` as a
process of its own, so that its CPU and memory are measured apart:

    aps_reference.py steady N FIRST_DUE W0 END OUT  # N jobs every 2 s from FIRST_DUE; CPU from W0 to END
    aps_reference.py burst N DUE OUT              # N jobs due at DUE, until all N wrote a line
    aps_reference.py idle N                       # N cron jobs far from now: prints "ready", waits for stdin

``steady`` and ``burst`` print one JSON line: the process's own CPU
(its threads; not the children) and its children's, in seconds, over the
measured span.
"""

import datetime
import json
import os
import subprocess
import sys
import time

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

INTERVAL = 2.0
THREADS = 10


def child_command(tag, out):
    return f"echo {tag} $(date +%s.%N) >> {out}"


def start(argv):
    subprocess.run(argv)


def scheduler():
    # misfire_grace_time=None: a job the pool reaches late still runs (as apsis-lite's would).
    return BackgroundScheduler(executors={"default": ThreadPoolExecutor(THREADS)},
                               job_defaults={"misfire_grace_time": None, "coalesce": True},
                               timezone=datetime.timezone.utc)


def utc(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc)


def cpu():
    t = os.times()
    return time.process_time(), t.children_user + t.children_system


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def steady(n, first_due, w0, end, out):
    sched = scheduler()
    for i in range(n):
        sched.add_job(start, "interval", seconds=INTERVAL, start_date=utc(first_due), end_date=utc(end),
                      args=[["sh", "-c", child_command(f"j{i}", out)]], id=f"j{i}")
    sched.start()
    time.sleep(max(0.0, w0 - time.time()))
    own0, kids0 = cpu()
    time.sleep(max(0.0, end - time.time()))
    own1, kids1 = cpu()
    sched.shutdown(wait=True)
    print(json.dumps({"cpu_own": own1 - own0, "cpu_children": kids1 - kids0}), flush=True)


def burst(n, due, out, timeout=120.0):
    sched = scheduler()
    for i in range(n):
        sched.add_job(start, "date", run_date=utc(due), args=[["sh", "-c", child_command(f"b{i}", out)]],
                      id=f"b{i}")
    sched.start()
    time.sleep(max(0.0, due - 0.5 - time.time()))
    own0, kids0 = cpu()
    deadline = time.monotonic() + timeout
    while count_lines(out) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    own1, kids1 = cpu()
    sched.shutdown(wait=True)
    print(json.dumps({"cpu_own": own1 - own0, "cpu_children": kids1 - kids0}), flush=True)


def idle(n):
    hour = (time.gmtime().tm_hour + 12) % 24
    sched = scheduler()
    for i in range(n):
        sched.add_job(start, "cron", minute=i % 60, hour=hour, args=[["sh", "-c", "echo"]], id=f"idle{i}")
    sched.start()
    print("ready", flush=True)
    sys.stdin.read()  # Until the parent closes it.
    sched.shutdown(wait=False)


def main(argv):
    case, args = argv[0], argv[1:]
    if case == "steady":
        steady(int(args[0]), float(args[1]), float(args[2]), float(args[3]), args[4])
    elif case == "burst":
        burst(int(args[0]), float(args[1]), args[2])
    elif case == "idle":
        idle(int(args[0]))
    else:
        sys.exit(f"unknown case {case!r}: steady, burst or idle")


if __name__ == "__main__":
    main(sys.argv[1:])

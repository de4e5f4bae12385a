#!/usr/bin/env python3
"""Start lateness: N jobs every 2 s, each program reading its own clock.

Each job is ``interval: 2s`` (phase 0, so all N are due at the same instant
every 2 s) and runs ``/bin/date +%s.%N``; its output is the program's own
clock reading when it started. Lateness = that reading minus the scheduled
time (the run's ``time`` arg). Slots due in the first ``--warmup`` seconds
after the server answers are left out (they include the agent's first
start-up); every slot due in the window of ``--duration`` seconds after that
counts, and one that never ran counts as missing.

    bench/lateness.py                 # 10 and 100 jobs, 60 s each
    bench/lateness.py --small         # 10 and 100 jobs, 20 s each
    bench/lateness.py --jobs 100 --duration 30
"""

import argparse
import datetime
import time

from common import (date_job, Server, cleanup, cpu_seconds, figure, median, note, pct, program_start_times,
                    rss_mb, size_args, tmpdir, write_job)

TARGET_P99 = {10: 20.0, 100: 140.0}
INTERVAL = 2.0

JOB = date_job("""
type: interval
interval: 2s
""")


def bench(n_jobs, duration, warmup):
    jobs_dir, data_dir = tmpdir("lj"), tmpdir("ld")
    try:
        for i in range(n_jobs):
            write_job(jobs_dir, f"late/j{i:04d}", JOB)
        with Server(jobs_dir, data_dir) as server:
            server.start()
            t_alive = time.time()
            # Measure once every job has its runs (the engine plans a bounded amount per pass).
            conn = server.db()
            while time.time() < t_alive + 20:
                if conn.execute("SELECT count(*) FROM job_horizons").fetchone()[0] >= n_jobs:
                    break
                time.sleep(0.1)
            conn.close()
            figure(f"lateness_{n_jobs}jobs_all_planned_after", time.time() - t_alive, "s after start-up",
                   fmt="{:.2f}")
            w0 = max(t_alive + warmup, time.time() + 1.0)
            w1 = w0 + duration
            time.sleep(max(0.0, w0 - time.time()))
            cpu0, c0 = cpu_seconds(server.pid), time.time()
            time.sleep(max(0.0, w1 - time.time()))
            cpu1, c1 = cpu_seconds(server.pid), time.time()
            rss = rss_mb(server.pid)
            # Let every run due in the window finish and be recorded.
            conn = server.db()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                left = conn.execute(
                    "SELECT count(*) FROM runs WHERE time_schedule >= ? AND time_schedule < ?"
                    " AND state NOT IN ('success','failure','error','skipped')", (w0, w1)).fetchone()[0]
                if not left:
                    break
                time.sleep(0.2)
            runs = program_start_times(conn, "r.time_schedule >= ? AND r.time_schedule < ?", (w0, w1))
            conn.close()
        late, first, last, sched_late, start_late, missing = [], [], [], [], [], 0
        by_slot = {}
        for rid, (ts, args, state, times, clock) in runs.items():
            t_arg = datetime.datetime.fromisoformat(args["time"]).timestamp()
            assert abs(t_arg - ts) < 1e-3, (args, ts)
            if clock is None or state != "success":
                missing += 1
                continue
            ms = (clock - t_arg) * 1000
            late.append(ms)
            by_slot.setdefault(t_arg, []).append(ms)
            if t_arg < w0 + 10:
                first.append(ms)
            if t_arg >= w1 - 10:
                last.append(ms)
            if "starting" in times:
                sched_late.append((times["starting"] - t_arg) * 1000)
            if "running" in times:
                start_late.append((times["running"] - t_arg) * 1000)
        expected = n_jobs * int(round(duration / INTERVAL))
        tag = f"lateness_{n_jobs}jobs"
        tgt = TARGET_P99.get(n_jobs)
        figure(f"{tag}_p50", pct(late, 50), "ms")
        figure(f"{tag}_p99", pct(late, 99), "ms", f"<= {tgt:g} ms" if tgt else None)
        figure(f"{tag}_max", max(late) if late else float("nan"), "ms")
        figure(f"{tag}_runs_measured", len(late), f"runs (of ~{expected} due; {missing} missing or not success)")
        f50, l50 = median(first), median(last)
        behind = missing > 0 or (l50 > f50 + max(20.0, f50))
        figure(f"{tag}_first10s_p50", f50, "ms")
        figure(f"{tag}_last10s_p50", l50, "ms")
        figure(f"{tag}_fell_behind", "yes" if behind else "no", "", "never")
        figure(f"{tag}_first_in_slot_p50", median([min(v) for v in by_slot.values()]),
               "ms (earliest program of each slot: the fixed cost before queueing)")
        figure(f"{tag}_engine_starting_p50", pct(sched_late, 50), "ms (due -> 'starting' committed)")
        figure(f"{tag}_engine_starting_p99", pct(sched_late, 99), "ms")
        figure(f"{tag}_program_forked_p99", pct(start_late, 99), "ms (due -> shepherd forked the program)")
        figure(f"{tag}_server_cpu", (cpu1 - cpu0) / (c1 - c0) * 100, "% of one core")
        figure(f"{tag}_server_rss", rss, "MB")
        worst = sorted(((clock - ts) * 1000, ts) for ts, _, state, _, clock in runs.values() if clock)[-3:]
        note(f"{tag}: worst slots (lateness ms, due at s after window start): "
             + ", ".join(f"{ms:.0f}@{ts - w0:.0f}s" for ms, ts in worst))
    finally:
        cleanup(jobs_dir, data_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size_args(parser, "20 s per size", "60 s per size (default)")
    parser.add_argument("--jobs", default="10,100", help="comma-separated job counts (default 10,100)")
    parser.add_argument("--duration", type=float, help="measured window in seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after start-up left out")
    args = parser.parse_args()
    duration = args.duration or (20.0 if args.small else 60.0)
    for n in (int(x) for x in args.jobs.split(",")):
        bench(n, duration, args.warmup)


if __name__ == "__main__":
    main()

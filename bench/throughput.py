#!/usr/bin/env python3
"""Sustained starts per second: R runs of /bin/true due every second.

R job files, each ``interval: 1s`` with phases spread evenly over the second
(job i at i/R s), so R runs fall due per second at a steady pace. Once every
job has been planned (its runs created up to the horizon) and after a short
warm-up, for ``--duration`` seconds: the rate of runs that reached running
(from the state times in the database), the rate of runs recorded finished
(from /api/v1/stats), and the backlog (runs already due, not yet running)
at each tenth of the window. A server that keeps up shows rates close to R
and a backlog near zero that does not grow. ``--noop`` repeats the load with
``no-op`` programs, which the engine finishes itself: the engine's own
capacity, without the agent, shepherds and programs.

    bench/throughput.py              # R=300, then R=150, 20 s each
    bench/throughput.py --small      # R=100 for 10 s
    bench/throughput.py --rate 500 --duration 30 --noop
"""

import argparse
import time

from common import CpuMeter, Server, cleanup, figure, median, note, pct, rss_mb, size_args, tmpdir, write_job

TARGET_RATE = 300

JOB = """\
program:
  type: program
  argv: [/bin/true]
schedule:
  type: interval
  interval: 1s
  phase: {phase}
"""

NOOP_JOB = """\
program:
  type: no-op
schedule:
  type: interval
  interval: 1s
  phase: {phase}
"""

FINISHED = ("success", "failure", "error", "skipped")


def finished(server):
    by = server.get("/api/v1/stats")["runs_by_state"]
    return sum(by.get(s, 0) for s in FINISHED)


def bench(rate, duration, warmup, noop=False, plan_wait=60.0):
    jobs_dir, data_dir = tmpdir("tj"), tmpdir("td")
    try:
        for i in range(rate):
            write_job(jobs_dir, f"tp/j{i:04d}", (NOOP_JOB if noop else JOB).replace("{phase}", f"{i / rate:.6f}"))
        tag = f"throughput_{rate}" + ("_noop" if noop else "")
        with Server(jobs_dir, data_dir) as server:
            server.start()
            t_alive = time.time()
            figure(f"{tag}_server_startup", server.startup_s, "s", fmt="{:.2f}")
            # The engine creates runs a horizon ahead, a bounded amount per pass: wait
            # until every job has its runs (its horizon is stored) before measuring.
            conn = server.db()
            planned = 0
            while time.time() < t_alive + plan_wait:
                planned = conn.execute("SELECT count(*) FROM job_horizons").fetchone()[0]
                if planned >= rate:
                    break
                time.sleep(0.2)
            t_planned = time.time()
            figure(f"{tag}_all_jobs_planned_after", t_planned - t_alive,
                   f"s after start-up ({planned} of {rate} jobs planned)", fmt="{:.1f}")
            time.sleep(warmup)
            meter = CpuMeter(server)
            w0, f0 = time.time(), finished(server)
            time.sleep(duration)
            w1, f1 = time.time(), finished(server)
            cpu = meter.stop()
            rss = rss_mb(server.pid)
            planned_end = conn.execute("SELECT count(*) FROM job_horizons").fetchone()[0]
            time.sleep(2.0)  # let 'running' notices of runs started before w1 be recorded
            rows = conn.execute(
                "SELECT time_schedule, times, state FROM runs WHERE time_schedule < ?", (w1,)).fetchall()
            conn.close()
        import json
        span = w1 - w0
        started_key = "success" if noop else "running"
        starts, late, pending = [], [], []
        due_in_window = 0
        for ts, times, state in rows:
            times = json.loads(times)
            t_start = times.get(started_key)
            if w0 <= ts < w1:
                due_in_window += 1
            if t_start is not None:
                starts.append(t_start)
                if w0 <= ts < w1:
                    late.append(((t_start - ts) * 1000, ts))
            pending.append((ts, t_start))

        def backlog(t):
            return sum(1 for ts, st in pending if ts <= t and (st is None or st > t))

        marks = [w0 + k * span / 10 for k in range(11)]
        backlogs = [backlog(t) for t in marks]
        started_rate = sum(1 for t in starts if w0 <= t < w1) / span
        first = [ms for ms, ts in late if ts < w0 + 3]
        last = [ms for ms, ts in late if ts >= w1 - 3]
        figure(f"{tag}_offered", due_in_window / span, "runs/s due in the window", fmt="{:.0f}")
        figure(f"{tag}_started_rate", started_rate,
               "runs/s reached " + ("success (no-op)" if noop else "running"),
               None if noop else f">= {TARGET_RATE} starts/s sustained")
        figure(f"{tag}_finished_rate", (f1 - f0) / span, "runs/s recorded finished (API)")
        figure(f"{tag}_backlog_start", backlogs[0], "runs due but not started")
        figure(f"{tag}_backlog_end", backlogs[-1], "runs due but not started")
        # Jobs not planned yet have no runs at all: their slots are owed, and will be
        # created (already late) once the engine gets to them.
        owed = (rate - planned_end) * (w1 - t_alive)
        figure(f"{tag}_jobs_unplanned_at_end", rate - planned_end,
               f"jobs without runs yet (about {owed:.0f} slots owed, not counted in the backlog)")
        grows = (backlogs[-1] > backlogs[0] + rate / 2 and backlogs[-1] >= backlogs[len(backlogs) // 2]) \
            or planned_end < rate
        figure(f"{tag}_falls_behind", "yes" if grows else "no", "", "no")
        figure(f"{tag}_lateness_first3s_p50", median(first), "ms (due -> started)")
        figure(f"{tag}_lateness_last3s_p50", median(last), "ms (due -> started)")
        figure(f"{tag}_lateness_p99", pct([ms for ms, _ in late], 99), "ms (due -> started, runs due in the window)")
        figure(f"{tag}_cpu_server", cpu["server"] / cpu["wall"] * 100, "% of one core")
        figure(f"{tag}_cpu_agent", cpu["agent"] / cpu["wall"] * 100, "% of one core")
        figure(f"{tag}_cpu_shepherds_and_programs", cpu["shepherds"] / cpu["wall"] * 100, "% of one core")
        done = f1 - f0
        if done:
            figure(f"{tag}_cpu_per_run", (cpu["server"] + cpu["agent"] + cpu["shepherds"]) / done * 1000,
                   "ms (server + agent + shepherds + programs, per finished run)")
        figure(f"{tag}_machine_busy", cpu["machine_busy_pct"], "% of all cores")
        figure(f"{tag}_cpu_other", cpu["other_pct_of_core"], "% of one core (kernel threads, other processes)")
        figure(f"{tag}_server_rss", rss, "MB")
        note(f"{tag}: backlog at each tenth of the window: {backlogs}")
    finally:
        cleanup(jobs_dir, data_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size_args(parser, "100 runs/s for 10 s", "300 then 150 runs/s, 20 s each (default)")
    parser.add_argument("--rate", help="runs due per second (job count); comma-separated for several")
    parser.add_argument("--plan-wait", type=float, default=20.0,
                        help="seconds at most to wait for every job to be planned (default 20)")
    parser.add_argument("--duration", type=float, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds after planning completes")
    parser.add_argument("--noop", action="store_true",
                        help="also run the same load with no-op programs (the engine alone, no agent)")
    args = parser.parse_args()
    rates = [int(r) for r in args.rate.split(",")] if args.rate else ([100] if args.small else [TARGET_RATE, 150])
    duration = args.duration or (10.0 if args.small else 20.0)
    for rate in rates:
        bench(rate, duration, args.warmup, plan_wait=args.plan_wait)
    if args.noop:
        bench(rates[0], duration, args.warmup, noop=True, plan_wait=args.plan_wait)


if __name__ == "__main__":
    main()

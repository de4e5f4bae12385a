#!/usr/bin/env python3
"""Start lateness while 1,000,000 stored runs are pruned, beside lateness with no pruning.

Each round fills a fresh database with ``--runs`` finished runs (``fill_db.py``:
direct SQL inserts, history ending two days ago) and writes 10 jobs every 2 s
running ``/bin/date +%s.%N`` (lateness = the program's clock minus the due
time, as in ``lateness.py``). Then, on the same data folder:

1. ``quiet``: the server without retention, for ``--window`` seconds;
2. ``pruning``: the server restarted with ``runs_retention: 1d`` (every stored
   run is past it, but each job's 10 latest), lateness measured from the start
   until the background task has removed them all; the pass's time and rate;
3. the file size before and after, and the free pages given back.

Several rounds (``--rounds``); each figure is printed per round and as the
median and range over the rounds, with the date.

    bench/prune.py                      # 1,000,000 runs, 3 rounds
    bench/prune.py --small              # 200,000 runs, 2 rounds
    bench/prune.py --runs 500000 --rounds 1
    bench/prune.py --small --probe /tmp/probe   # also where the event loop was held (lag_probe.py)

With ``--probe DIR`` the servers run under ``lag_probe.py``: the event loop's
lag and the CPU that held it are written to DIR/lag-N.txt, and the main
thread's stack whenever it held the loop 20 ms to DIR/stacks-N.txt.
"""

import argparse
import datetime
import os
import time

from common import (Server, cleanup, figure, median, note, pct, program_start_times, size_args, tmpdir,
                    write_job)
from fill_db import fill

TARGET_P99_MS = 20.0  # lateness.py's target for 10 jobs
JOB = """\
params: [time]
program:
  type: program
  argv: [/bin/date, "+%s.%N"]
schedule:
  type: interval
  interval: 2s
"""
DAY = 86400.0


def lateness_ms(server, t0, t1):
    """Program clock minus due time (ms) of the lateness jobs' runs due in [t0, t1); and missing."""
    conn = server.db()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = conn.execute("SELECT count(*) FROM runs WHERE job_id LIKE 'late/%' AND time_schedule >= ?"
                            " AND time_schedule < ? AND state NOT IN ('success','failure','error','skipped')",
                            (t0, t1)).fetchone()[0]
        if not left:
            break
        time.sleep(0.2)
    runs = program_start_times(conn, "r.job_id LIKE 'late/%' AND r.time_schedule >= ? AND r.time_schedule < ?",
                               (t0, t1))
    conn.close()
    late, missing = [], 0
    for ts, _args, state, _times, clock in runs.values():
        if clock is None or state != "success":
            missing += 1
        else:
            late.append((clock - ts) * 1000)
    return late, missing


def history_left(server):
    """Stored runs other than the lateness jobs' (counts kept by triggers, and an index range)."""
    conn = server.db()
    try:
        total = conn.execute("SELECT coalesce(sum(n), 0) FROM run_counts").fetchone()[0]
        late = conn.execute("SELECT count(*) FROM runs WHERE job_id >= 'late/' AND job_id < 'late0'").fetchone()[0]
        return total - late
    finally:
        conn.close()


def one_round(n_runs, window, n_jobs=10, probe=None, number=1):
    jobs_dir, data_dir = tmpdir("pj"), tmpdir("pd")
    out = {}
    try:
        fill(data_dir, n_runs, 200, end=time.time() - 2 * DAY, quiet=True)
        for i in range(n_jobs):
            write_job(jobs_dir, f"late/j{i:02d}", JOB)
        db = os.path.join(data_dir, "apsis-lite.db")
        out["size_before_mb"] = os.path.getsize(db) / 2**20
        entry = None
        if probe:
            os.makedirs(probe, exist_ok=True)
            os.environ["LAG_PROBE_FILE"] = os.path.join(probe, f"lag-{number}.txt")
            os.environ["LAG_PROBE_STACKS"] = os.path.join(probe, f"stacks-{number}.txt")
            entry = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "lag_probe.py")]
        with Server(jobs_dir, data_dir, entry=entry) as server:
            server.start()
            t0 = time.time() + 3
            time.sleep(3 + window)
            t1 = time.time()
            late, missing = lateness_ms(server, t0, t1)
        out["quiet"] = (late, missing)
        out["windows"] = {"quiet": (t0, t1)}
        with Server(jobs_dir, data_dir, config={"runs_retention": "1d", "retention_interval": "2s"},
                    entry=entry) as server:
            server.start()
            t_start = time.time()
            t0 = t_start + 3
            last, since = None, time.monotonic()
            while (left := history_left(server)) > 200 * 10:  # each job's ten latest stay
                if left != last:
                    last, since = left, time.monotonic()
                elif time.monotonic() - since > 60:
                    note(f"pruning stopped with {left} runs left")
                    break
                time.sleep(0.5)
            t_done = time.time()
            out["windows"]["pruning"] = (t0, t_done)
            late, missing = lateness_ms(server, t0, t_done)
            # The pass ends by giving the free pages back, then logs what it did.
            deadline = time.monotonic() + 600
            while "retention: removed" not in (log := open(server.log_path).read()):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        out["pruning"] = (late, missing)
        out["prune_s"] = t_done - t_start
        out["left"] = left
        out["rate"] = (n_runs - left) / out["prune_s"]
        out["size_after_mb"] = os.path.getsize(db) / 2**20
        lines = [line for line in log.splitlines() if "retention: removed" in line]
        if lines:
            note("server said: " + lines[0].split("apsis_lite.engine: ")[-1][:200])
    finally:
        cleanup(jobs_dir, data_dir)
    return out


def probe_figures(path, windows, number):
    """The event loop's lag and the CPU that held it (lag_probe.py's file) in each window."""
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                rows.append(tuple(float(p) for p in parts))
    for phase, (t0, t1) in windows.items():
        lag = [r[1] for r in rows if t0 <= r[0] < t1]
        held = [r[2] for r in rows if t0 <= r[0] < t1]
        if lag:
            figure(f"prune_round{number}_{phase}_loop_lag",
                   f"p50 {pct(lag, 50):.2f}, p99 {pct(lag, 99):.1f}, max {max(lag):.1f}; "
                   f"over 20 ms {sum(v > 20 for v in lag) / len(lag):.1%} of {len(lag)} wake-ups", "ms")
            figure(f"prune_round{number}_{phase}_loop_held",
                   f"p99 {pct(held, 99):.2f}, max {max(held):.1f}", "ms of the loop thread's CPU")


def summary(name, values, unit, target=None, fmt="{:.1f}"):
    values = [v for v in values if v == v]
    if not values:
        return
    figure(f"{name}_median", median(values), unit, target, fmt)
    figure(f"{name}_range", f"{fmt.format(min(values))}..{fmt.format(max(values))}", unit)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size_args(parser, "200,000 runs, 2 rounds", "1,000,000 runs, 3 rounds (default)")
    parser.add_argument("--runs", type=int, help="stored runs to prune per round")
    parser.add_argument("--rounds", type=int, help="rounds")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of the quiet window")
    parser.add_argument("--probe", metavar="DIR", help="run the servers under lag_probe.py, its files in DIR")
    args = parser.parse_args()
    n_runs = args.runs or (200_000 if args.small else 1_000_000)
    rounds = args.rounds or (2 if args.small else 3)
    note(f"prune.py on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
         f"{n_runs} runs, {rounds} rounds, {os.cpu_count()} cores")
    results = []
    for r in range(rounds):
        res = one_round(n_runs, args.window, probe=args.probe, number=r + 1)
        results.append(res)
        for phase in ("quiet", "pruning"):
            late, missing = res[phase]
            figure(f"prune_round{r + 1}_{phase}_lateness_p50", pct(late, 50), "ms")
            figure(f"prune_round{r + 1}_{phase}_lateness_p99", pct(late, 99), "ms")
            figure(f"prune_round{r + 1}_{phase}_lateness_max", max(late) if late else float("nan"), "ms")
            figure(f"prune_round{r + 1}_{phase}_runs", len(late), f"runs ({missing} missing or not success)")
        figure(f"prune_round{r + 1}_time", res["prune_s"], "s", fmt="{:.0f}")
        figure(f"prune_round{r + 1}_rate", res["rate"], "runs/s", fmt="{:.0f}")
        figure(f"prune_round{r + 1}_left", res["left"], "runs (each job's 10 latest)")
        figure(f"prune_round{r + 1}_file", f"{res['size_before_mb']:.0f} -> {res['size_after_mb']:.0f}", "MB")
        if args.probe:
            probe_figures(os.path.join(args.probe, f"lag-{r + 1}.txt"), res["windows"], r + 1)
    for phase in ("quiet", "pruning"):
        summary(f"prune_{phase}_lateness_p50", [pct(r[phase][0], 50) for r in results], "ms")
        summary(f"prune_{phase}_lateness_p99", [pct(r[phase][0], 99) for r in results], "ms",
                f"<= {TARGET_P99_MS:g} ms" if phase == "pruning" else None)
        summary(f"prune_{phase}_lateness_max", [max(r[phase][0]) for r in results if r[phase][0]], "ms")
        figure(f"prune_{phase}_missing", sum(r[phase][1] for r in results), "runs", "0")
    summary("prune_time", [r["prune_s"] for r in results], "s", fmt="{:.0f}")
    summary("prune_rate", [r["rate"] for r in results], "runs/s", fmt="{:.0f}")


if __name__ == "__main__":
    main()

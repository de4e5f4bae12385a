#!/usr/bin/env python3
"""Bursts: N runs due in the same instant.

N job files, each with an ``explicit`` schedule at one time T a few seconds
after the server starts, each running ``/bin/date +%s.%N`` (its output is the
program's own clock at start). Measured from T: until the last program
started (its own clock), and until the API reports all N runs finished
(polling ``/api/v1/stats`` every 50 ms).

    bench/burst.py                 # 100 and 1000 runs
    bench/burst.py --small         # 100 runs
    bench/burst.py --runs 2000
"""

import argparse
import time

import glob
import os
import sys

from common import (date_job, CpuMeter, Server, _kill_pid, cleanup, figure, note, pct, program_start_times,
                    rss_mb, size_args, tmpdir, wait_all_finished, write_job, iso)

TARGET_ALL_STARTED = {1000: "<= 1200 ms"}

JOB = date_job("""
type: explicit
times: ["{when}"]
""")


def bench(n, lead):
    jobs_dir, data_dir = tmpdir("bj"), tmpdir("bd")
    try:
        due = float(int(time.time() + lead))
        text = JOB.replace("{when}", iso(due))
        for i in range(n):
            write_job(jobs_dir, f"burst/j{i:05d}", text)
        with Server(jobs_dir, data_dir, config={"horizon": 600}) as server:
            server.start()
            # One ad hoc run first, so that the agent is up (as it is on any server
            # that has run something): the burst measures starts, not the agent's start.
            server.post("/api/v1/runs", {"program": ["/bin/true"], "time": "now"})
            wait_all_finished(server, 1, timeout=30)
            margin = due - time.time()
            if margin < 1.0:
                note(f"burst_{n}: the server answered only {margin:.2f} s before the due time; "
                     "raise --lead")
            # Wait until all runs exist as scheduled (the horizon pass has run).
            while time.time() < due - 0.3:
                st = server.get("/api/v1/stats")
                if st["runs_by_state"].get("scheduled", 0) >= n:
                    break
                time.sleep(0.1)
            time.sleep(max(0.0, due - 0.5 - time.time()))
            meter = CpuMeter(server)
            t_done = wait_all_finished(server, n + 1, timeout=120)
            cpu = meter.stop()
            rss = rss_mb(server.pid)
            conn = server.db()
            runs = program_start_times(conn, "r.job_id LIKE 'burst/%'")
            conn.close()
        clocks = sorted((c - due) * 1000 for _, _, _, _, c in runs.values() if c is not None)
        starting = sorted((t["starting"] - due) * 1000 for _, _, _, t, _ in runs.values() if "starting" in t)
        ok = sum(1 for _, _, s, _, _ in runs.values() if s == "success")
        tag = f"burst_{n}"
        figure(f"{tag}_first_program_started", clocks[0] if clocks else float("nan"), "ms after due")
        figure(f"{tag}_median_program_started", pct(clocks, 50), "ms after due")
        figure(f"{tag}_last_program_started", clocks[-1] if clocks else float("nan"), "ms after due",
               TARGET_ALL_STARTED.get(n))
        figure(f"{tag}_all_starting_committed", starting[-1] if starting else float("nan"),
               "ms after due (engine's 'starting' transition)")
        figure(f"{tag}_all_finished_in_api", (t_done - due) * 1000 if t_done else float("nan"),
               "ms after due" + ("" if t_done else " (TIMED OUT after 120 s)"))
        figure(f"{tag}_runs_success", ok, f"of {n}")
        figure(f"{tag}_cpu_server", cpu["server"], "s", fmt="{:.2f}")
        figure(f"{tag}_cpu_agent", cpu["agent"], "s", fmt="{:.2f}")
        figure(f"{tag}_cpu_shepherds_and_programs", cpu["shepherds"], "s", fmt="{:.2f}")
        figure(f"{tag}_cpu_per_run", (cpu["server"] + cpu["agent"] + cpu["shepherds"]) / n * 1000,
               "ms (server + agent + shepherds + programs)")
        figure(f"{tag}_machine_busy", cpu["machine_busy_pct"], f"% of all cores over {cpu['wall']:.1f} s")
        figure(f"{tag}_cpu_other", cpu["other_pct_of_core"], "% of one core (kernel threads, other processes)")
        figure(f"{tag}_server_rss_after", rss, "MB")
    finally:
        cleanup(jobs_dir, data_dir)


def bench_agent_only(n):
    """The agent alone, without the server: N prepared specs, then N start requests,
    one round trip each (the server itself pipelines them with start_many)."""
    from apsis_lite import agent
    state = tmpdir("aa")
    from common import ROOT
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    client = agent.AgentClient(os.path.join(state, "agent"), [sys.executable, "-m", "apsis_lite.agent"], env=env)
    try:
        client.ping()
        env = dict(os.environ)
        t0 = time.perf_counter()
        dirs = []
        for i in range(n):
            d = os.path.join(state, "runs", f"r{i}")
            agent.write_spec(d, {"run_id": f"r{i}", "argv": ["/bin/date", "+%s.%N"], "env": env})
            dirs.append(d)
        prepare = time.perf_counter() - t0
        t_start = time.time()
        for d in dirs:
            client.start(d)
        requests = time.time() - t_start
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(glob.glob(os.path.join(state, "runs", "*", "result.json"))) >= n:
                break
            time.sleep(0.05)
        t_all = time.time()
        clocks = []
        for d in dirs:
            try:
                with open(os.path.join(d, "output")) as f:
                    clocks.append((float(f.read().strip()) - t_start) * 1000)
            except (OSError, ValueError):
                pass
        clocks.sort()
        tag = f"agent_only_{n}"
        figure(f"{tag}_prepare_specs", prepare * 1000, "ms (write_spec x N, before the clock starts)")
        figure(f"{tag}_start_requests", requests * 1000, "ms (N start requests, one at a time)")
        figure(f"{tag}_last_program_started", clocks[-1] if clocks else float("nan"),
               f"ms after the first request ({len(clocks)} of {n} ran)")
        figure(f"{tag}_all_results_written", (t_all - t_start) * 1000, "ms after the first request")
    finally:
        client.close()
        try:
            with open(os.path.join(state, "agent", "agent.pid")) as f:
                _kill_pid(int(f.read()))
        except (OSError, ValueError):
            pass
        cleanup(state)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size_args(parser, "100 runs", "100 and 1000 runs (default)")
    parser.add_argument("--runs", help="comma-separated burst sizes")
    parser.add_argument("--lead", type=float, help="seconds from launch to the due time (default 5 + N/200)")
    parser.add_argument("--agent-only", action="store_true",
                        help="also time the agent alone (no server) for the largest size")
    args = parser.parse_args()
    sizes = [int(x) for x in args.runs.split(",")] if args.runs else ([100] if args.small else [100, 1000])
    for n in sizes:
        bench(n, args.lead or 5 + n / 200)
    if args.agent_only:
        bench_agent_only(max(sizes))


if __name__ == "__main__":
    main()

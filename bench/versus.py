#!/usr/bin/env python3
"""apsis-lite beside APScheduler 3, on the same workload, in the same invocation.

Every case runs once per round on each system, one at a time, the order
swapped from one round to the next; each figure is printed as apsis-lite's
median [range], APScheduler's median [range] and the ratio of the medians
(apsis-lite / APScheduler: below 1 is better), with the per-round ratios'
range. The reference is ``aps_reference.py`` (BackgroundScheduler, 10
threads, ``subprocess.run``); both start the same child,
``sh -c 'echo TAG $(date +%s.%N) >> OUT'``, and lateness is the child's
clock minus the due time.

    steady N   N jobs every 2 s (all due at the same even second): p50 / p99
               start lateness over the window; CPU of the server (for
               APScheduler, its process without the children) per start
    burst N    N runs due at one instant: the first and the last start
    idle N     N idle cron jobs: spawn to the first answer (apsis-lite's
               /api/v1/alive; the reference's "ready" after
               ``scheduler.start()``), RSS then

    bench/versus.py --rounds 3               # the whole table (about 3 minutes a round)
    bench/versus.py --quick                  # one short round of everything
    bench/versus.py --only burst --rounds 5
    bench/versus.py --baseline /tmp/old      # also apsis-lite from another checkout (A/B)

Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time

from common import (ROOT, CpuMeter, Server, cleanup, median, note, pct, rss_mb, tmpdir,
                    wait_all_finished, write_job, iso)

INTERVAL = 2.0
REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "aps_reference.py")


def child_argv(tag, out):
    return ["sh", "-c", f"echo {tag} $(date +%s.%N) >> {out}"]


def program_job(argv, schedule):
    return ("program:\n  type: program\n  argv: " + json.dumps(argv) + "\n"
            "schedule:\n" + "".join(f"  {line}\n" for line in schedule.strip().splitlines()))


def read_clocks(path):
    """[(tag, clock)] of the lines the children appended."""
    found = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    found.append((parts[0], float(parts[1])))
    except FileNotFoundError:
        pass
    return found


def wait_lines(path, n, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(read_clocks(path)) >= n:
            return True
        time.sleep(0.05)
    return False


def next_slot(t):
    return math.ceil(t / INTERVAL) * INTERVAL


def steady_figures(out, n, w0, w1):
    """Lateness of the starts due in [w0, w1): each start's due time is its
    slot on the 2 s grid (lateness stays well under 2 s)."""
    late = []
    for _, clock in read_clocks(out):
        due = math.floor(clock / INTERVAL) * INTERVAL
        if w0 <= due < w1:
            late.append((clock - due) * 1000)
    expected = n * int(round((w1 - w0) / INTERVAL))
    return {"p50": pct(late, 50), "p99": pct(late, 99), "starts": len(late), "missing": expected - len(late)}


# -- apsis-lite --------------------------------------------------------------------------

def apsis_steady(n, duration, warmup, source):
    jobs_dir, data_dir = tmpdir("vj"), tmpdir("vd")
    out = os.path.join(data_dir, "clocks")
    try:
        for i in range(n):
            write_job(jobs_dir, f"steady/j{i:04d}", program_job(child_argv(f"j{i}", out), "type: interval\ninterval: 2s"))
        with Server(jobs_dir, data_dir, source=source) as server:
            server.start()
            t_alive = time.time()
            conn = server.db()
            while time.time() < t_alive + 20:
                if conn.execute("SELECT count(*) FROM job_horizons").fetchone()[0] >= n:
                    break
                time.sleep(0.1)
            conn.close()
            w0 = next_slot(max(t_alive + warmup, time.time() + 1.0)) - 0.5
            w1 = w0 + duration
            time.sleep(max(0.0, w0 - time.time()))
            meter = CpuMeter(server)
            time.sleep(max(0.0, w1 - time.time()))
            cpu = meter.stop()
            time.sleep(1.5)  # The last slot's children write their lines.
        figures = steady_figures(out, n, w0, w1)
        starts = max(1, figures["starts"])
        figures["server_cpu_ms"] = cpu["server"] / starts * 1000
        figures["all_cpu_ms"] = (cpu["server"] + cpu["agent"] + cpu["shepherds"]) / starts * 1000
        return figures
    finally:
        cleanup(jobs_dir, data_dir)


def apsis_burst(n, source):
    jobs_dir, data_dir = tmpdir("vj"), tmpdir("vd")
    out = os.path.join(data_dir, "clocks")
    try:
        due = float(int(time.time() + 5 + n / 200))
        for i in range(n):
            write_job(jobs_dir, f"burst/j{i:05d}",
                      program_job(child_argv(f"b{i}", out), f"type: explicit\ntimes: [\"{iso(due)}\"]"))
        with Server(jobs_dir, data_dir, config={"horizon": 600}, source=source) as server:
            server.start()
            # The agent is up, as on any server that has run something.
            server.post("/api/v1/runs", {"program": ["/bin/true"], "time": "now"})
            wait_all_finished(server, 1, timeout=30)
            if due - time.time() < 1.0:
                note(f"apsis-lite burst {n}: the server answered only {due - time.time():.2f} s before the due time")
            wait_lines(out, n, timeout=max(0.0, due - time.time()) + 120)
        clocks = sorted((c - due) * 1000 for _, c in read_clocks(out))
        return {"first": clocks[0] if clocks else float("nan"), "last": clocks[-1] if clocks else float("nan"),
                "started": len(clocks)}
    finally:
        cleanup(jobs_dir, data_dir)


IDLE_JOB = """\
program:
  type: shell
  command: "echo"
schedule:
  type: cron
  expr: "{minute} {hour} * * *"
"""


def idle_jobs(n):
    """A jobs folder of ``n`` idle cron jobs (kept for every round)."""
    jobs_dir = tmpdir("vi")
    hour = (time.gmtime().tm_hour + 12) % 24
    for i in range(n):
        write_job(jobs_dir, f"idle/g{i // 100:03d}/j{i:05d}", IDLE_JOB.format(minute=i % 60, hour=hour))
    os.sync()
    return jobs_dir


def apsis_idle(jobs_dir, source):
    data_dir = tmpdir("vd")
    try:
        with Server(jobs_dir, data_dir, source=source) as server:
            server.start(timeout=300)
            return {"startup_s": server.startup_s, "rss_mb": rss_mb(server.pid)}
    finally:
        cleanup(data_dir)


# -- APScheduler -----------------------------------------------------------------------

def reference(*args):
    proc = subprocess.run([sys.executable, REFERENCE, *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"aps_reference.py {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def aps_steady(n, duration, warmup):
    work = tmpdir("va")
    out = os.path.join(work, "clocks")
    try:
        first_due = next_slot(time.time() + 2.0)
        w0 = next_slot(first_due + warmup) - 0.5
        w1 = w0 + duration
        cpu = reference("steady", n, first_due, w0, w1 + 1.0, out)
        figures = steady_figures(out, n, w0, w1)
        starts = max(1, figures["starts"])
        figures["server_cpu_ms"] = cpu["cpu_own"] / starts * 1000
        figures["all_cpu_ms"] = (cpu["cpu_own"] + cpu["cpu_children"]) / starts * 1000
        return figures
    finally:
        cleanup(work)


def aps_burst(n):
    work = tmpdir("va")
    out = os.path.join(work, "clocks")
    try:
        due = float(int(time.time() + 3 + n / 1000))
        reference("burst", n, due, out)
        clocks = sorted((c - due) * 1000 for _, c in read_clocks(out))
        return {"first": clocks[0] if clocks else float("nan"), "last": clocks[-1] if clocks else float("nan"),
                "started": len(clocks)}
    finally:
        cleanup(work)


def aps_idle(n):
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, REFERENCE, "idle", str(n)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        startup = time.perf_counter() - t0
        if line.strip() != "ready":
            raise RuntimeError(f"aps_reference.py idle said {line!r}")
        return {"startup_s": startup, "rss_mb": rss_mb(proc.pid)}
    finally:
        proc.stdin.close()
        proc.wait(30)


# -- the table -----------------------------------------------------------------------------

def lines_of(case, size):
    """(label, result key, unit) of each table line a case gives."""
    if case == "steady":
        each = f"{size} jobs every 2 s"
        rows = [(f"{each}: p50 lateness", "p50", "ms"), (f"{each}: p99 lateness", "p99", "ms")]
        if size == max(ARGS.steady):
            rows += [("server CPU per start", "server_cpu_ms", "ms"),
                     ("CPU per start, all processes (children too)", "all_cpu_ms", "ms")]
        return rows
    if case == "burst":
        return [(f"{size:,} due at once: first start", "first", "ms"),
                (f"{size:,} due at once: last start", "last", "ms")]
    return [(f"{size:,} idle jobs: start-up", "startup_s", "s"), (f"{size:,} idle jobs: RSS", "rss_mb", "MB")]


def fmt(values):
    if not values:
        return "-"
    m = median(values)
    digits = 3 if m < 10 else 1 if m < 1000 else 0
    one = lambda v: f"{v:.{digits}f}"
    return one(m) if len(values) == 1 else f"{one(m)} [{one(min(values))}–{one(max(values))}]"


def print_table(results, systems):
    print()
    print(f"## apsis-lite beside APScheduler {aps_version()}, {datetime.date.today().isoformat()}, "
          f"{ARGS.rounds} round(s), median [range]")
    head = ["case", *(name for name, _ in systems), "ratio (medians)", "ratio per round"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for (case, size), rounds in results.items():
        for label, key, unit in lines_of(case, size):
            cells = [f"{label} ({unit})"]
            values = {name: [r[name][key] for r in rounds if name in r] for name, _ in systems}
            cells += [fmt(values[name]) for name, _ in systems]
            ours, ref = values["apsis-lite"], values["APScheduler"]
            ratio = median(ours) / median(ref) if ours and ref and median(ref) else float("nan")
            per_round = [r["apsis-lite"][key] / r["APScheduler"][key] for r in rounds
                         if "apsis-lite" in r and "APScheduler" in r and r["APScheduler"][key]]
            cells += [f"{ratio:.2f}", fmt(per_round) if len(per_round) > 1 else "-"]
            print("| " + " | ".join(cells) + " |")
    for (case, size), rounds in results.items():
        if case in ("steady", "burst"):
            for r in rounds:
                for name, res in r.items():
                    if res.get("missing", 0) > 0 or ("started" in res and res["started"] < size):
                        note(f"{name} {case} {size}: {res}")


def aps_version():
    import importlib.metadata
    return importlib.metadata.version("apscheduler")


def run_case(case, size, name, source, state):
    if name == "APScheduler":
        if case == "steady":
            return aps_steady(size, ARGS.duration, ARGS.warmup)
        if case == "burst":
            return aps_burst(size)
        return aps_idle(size)
    if case == "steady":
        return apsis_steady(size, ARGS.duration, ARGS.warmup, source)
    if case == "burst":
        return apsis_burst(size, source)
    if size not in state:
        state[size] = idle_jobs(size)
    return apsis_idle(state[size], source)


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="one round; 8 s windows; bursts of 100 and 1,000; 2,000 idle jobs")
    parser.add_argument("--only", default="steady,burst,idle", help="cases to run (default all)")
    parser.add_argument("--steady", default="10,100", help="job counts of the steady case")
    parser.add_argument("--burst", default="100,1000", help="sizes of the burst case")
    parser.add_argument("--idle", type=int, default=10_000, help="idle jobs")
    parser.add_argument("--duration", type=float, default=20.0, help="steady window, seconds")
    parser.add_argument("--warmup", type=float, default=4.0, help="steady: seconds left out at first")
    parser.add_argument("--baseline", help="also run apsis-lite from this checkout (an A/B of a change)")
    parser.add_argument("--json", help="write every round's figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.idle = 1, 8.0, 2000
    args.steady = [int(x) for x in args.steady.split(",")]
    args.burst = [int(x) for x in args.burst.split(",")]
    ARGS = args
    try:
        aps_version()
    except Exception:
        sys.exit("APScheduler is not installed: pip install -e '.[bench]'")
    systems = [("apsis-lite", ROOT), ("APScheduler", None)]
    if args.baseline:
        systems.insert(1, ("baseline", os.path.abspath(args.baseline)))
    cases = []
    for case in args.only.split(","):
        sizes = {"steady": args.steady, "burst": args.burst, "idle": [args.idle]}.get(case)
        if sizes is None:
            sys.exit(f"--only: unknown case {case!r} (steady, burst, idle)")
        cases += [(case, size) for size in sizes]
    results = {c: [] for c in cases}
    state = {}
    try:
        for r in range(args.rounds):
            order = systems if r % 2 == 0 else systems[::-1]
            for case, size in cases:
                got = {}
                for name, source in order:
                    got[name] = run_case(case, size, name, source, state)
                    note(f"round {r + 1} {case} {size} {name}: "
                         + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in got[name].items()))
                results[(case, size)].append(got)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump([{"case": c, "size": s, "rounds": v} for (c, s), v in results.items()], f, indent=1)
    finally:
        for jobs_dir in state.values():
            cleanup(jobs_dir)
    print_table(results, systems)


if __name__ == "__main__":
    main()

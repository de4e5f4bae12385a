#!/usr/bin/env python3
"""Run every benchmark and print all figures (``make bench``).

    bench/run_all.py               # full size (about 9-10 minutes on 2 cores)
    bench/run_all.py --small       # quick sizes (about 3-4 minutes)
    bench/run_all.py --only burst,startup

Each benchmark runs as its own process (``bench/NAME.py``), starts and stops
its own server on 127.0.0.1, and prints one ``name: value unit`` line per
figure, with the target beside it where there is one. The figures are
printed as they come and again, all together, at the end. Set
BENCH_PROFILE=DIR (and BENCH_PYSPY=path/to/py-spy) to record py-spy profiles;
BENCH_KEEP=1 keeps the data folders.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# (name, extra args at full size, extra args at small size, time limit in s)
BENCHES = [
    ("lateness", [], ["--small"], 400),
    ("burst", ["--agent-only"], ["--small"], 300),
    ("throughput", ["--noop"], ["--small"], 300),
    ("startup", [], ["--small"], 300),
    ("stored_runs", [], ["--small"], 600),
    ("monitoring", [], ["--small"], 600),
    ("waiting_idle", [], ["--small"], 300),
    ("login_flood", [], ["--small"], 300),
    ("pages", [], ["--small"], 900),
    ("executable", [], ["--starts", "3"], 300),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="quick sizes")
    parser.add_argument("--only", help="comma-separated benchmark names: " + ", ".join(b[0] for b in BENCHES))
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    figures = []
    t_all = time.monotonic()
    root = os.path.dirname(HERE)
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "apsis_lite"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        print(f"# code: commit {head or '?'}" + (" with uncommitted changes in apsis_lite/" if dirty else ""))
    except OSError:
        pass
    print(f"# machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start", flush=True)
    # Each benchmark's folders are deleted after the last one (see common.cleanup).
    trash = os.environ.get("BENCH_TRASH") or tempfile.mkdtemp(prefix="ab-trash-", dir="/tmp")
    try:
        failed = run(args, only, figures, trash)
    finally:
        if not os.environ.get("BENCH_TRASH"):
            shutil.rmtree(trash, ignore_errors=True)
    print(f"\n==== all figures ({time.monotonic() - t_all:.0f} s) ====")
    for line in figures:
        print(line)
    if failed:
        print(f"failed: {', '.join(failed)}")
        sys.exit(1)


def run(args, only, figures, trash):
    """Run the chosen benchmarks one after the other; returns the names of those that failed."""
    failed = []
    for name, full, small, limit in BENCHES:
        if only and name not in only:
            continue
        cmd = [sys.executable, os.path.join(HERE, f"{name}.py")] + (small if args.small else full)
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(HERE),
                                env=dict(os.environ, BENCH_LABEL=name, BENCH_TRASH=trash))
        # Past its time limit a benchmark gets SIGINT (its cleanup stops its server
        # and agent), and SIGKILL 30 s later.
        timers = [threading.Timer(limit, proc.send_signal, (signal.SIGINT,)),
                  threading.Timer(limit + 30, proc.kill)]
        for t in timers:
            t.daemon = True
            t.start()
        for line in proc.stdout:
            print(line, end="", flush=True)
            if not line.startswith("#") and ": " in line:
                figures.append(line.rstrip("\n"))
        proc.wait()
        for t in timers:
            t.cancel()
        if time.monotonic() - t0 >= limit:
            print(f"!! {name}: stopped after its {limit} s limit", flush=True)
        if proc.returncode:
            failed.append(name)
            print(f"!! {name}: exit status {proc.returncode}", flush=True)
        print(f"== {name}: {time.monotonic() - t0:.0f} s", flush=True)
    return failed


if __name__ == "__main__":
    main()

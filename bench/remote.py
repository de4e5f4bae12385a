#!/usr/bin/env python3
"""Remote runs over ssh, against local runs in the same session as the reference.

A real sshd on 127.0.0.1 (run as root: it starts sshd and logs in as the test
user ``apsis-remote``, as the tests do), so the 'remote' host is this
machine and the figures show what the ssh path itself costs. Each program is
``/bin/date +%s.%N``: its output is its own clock at start.

- burst: N runs due at one instant T on the host; time from T until the last
  program started (aim <= 2 s for 100), and the same for N local runs.
- lateness: 10 jobs every 2 s on the host; p99 of program start minus due
  time (aim <= 50 ms), and the same for 10 local jobs.

Each is repeated (``--repeat``, default 3) on a fresh server; medians and
ranges are printed with the date.

    .venv/bin/python bench/remote.py                  # burst 100, lateness 20 s, 3 times each
    .venv/bin/python bench/remote.py --runs 100 --duration 20 --repeat 5
"""

import argparse
import datetime
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import Server, cleanup, pct, program_start_times, tmpdir, wait_all_finished, write_job, iso  # noqa: E402
from sshd import LOGIN_USER, start_sshd  # noqa: E402

BURST_JOB = """\
params: [time]
program:
  type: program
  argv: [/bin/date, "+%s.%N"]
{host}schedule:
  type: explicit
  times: ["{when}"]
"""
LATE_JOB = """\
params: [time]
program:
  type: program
  argv: [/bin/date, "+%s.%N"]
{host}schedule:
  type: interval
  interval: 2s
"""
WARM_JOB = """\
program:
  type: program
  argv: [/bin/true]
{host}"""


def _config(sshd):
    return {"hosts": {"box": {
        "hostname": "127.0.0.1", "user": LOGIN_USER, "port": sshd.port, "identity_file": str(sshd.client_key),
        "ssh_options": ["IdentitiesOnly=yes", f"UserKnownHostsFile={sshd.known_hosts}"]}}, "horizon": 600}


def _warm(server, n_done):
    """One run first: the agent up (and, for the host, installed, with a master connection)."""
    server.post("/api/v1/runs", {"job_id": "warm"})
    wait_all_finished(server, n_done, timeout=60)


def burst(sshd, n, remote, lead=6.0):
    """Seconds from the due time until the last of ``n`` programs started."""
    jobs_dir, data_dir = tmpdir("rbj"), tmpdir("rbd")
    host = "  host: box\n" if remote else ""
    try:
        due = float(int(time.time() + lead))
        for i in range(n):
            write_job(jobs_dir, f"burst/j{i:04d}", BURST_JOB.format(host=host, when=iso(due)))
        write_job(jobs_dir, "warm", WARM_JOB.format(host=host))
        with Server(jobs_dir, data_dir, config=_config(sshd)) as server:
            server.start()
            _warm(server, 1)
            if due - time.time() < 1.0:
                print(f"  note: the server was ready only {due - time.time():.2f} s before the due time")
            wait_all_finished(server, n + 1, timeout=120)
            conn = server.db()
            runs = program_start_times(conn, "r.job_id LIKE 'burst/%'")
            conn.close()
        clocks = [c - due for _, _, _, _, c in runs.values() if c is not None]
        ok = sum(1 for _, _, s, _, _ in runs.values() if s == "success")
        if ok != n:
            print(f"  note: {ok} of {n} runs succeeded")
        return max(clocks) if clocks else float("nan")
    finally:
        cleanup(jobs_dir, data_dir)


def lateness(sshd, n_jobs, duration, remote, warmup=4.0):
    """p99 and p50 (s) of program start minus due time, for ``n_jobs`` jobs every 2 s."""
    jobs_dir, data_dir = tmpdir("rlj"), tmpdir("rld")
    host = "  host: box\n" if remote else ""
    try:
        for i in range(n_jobs):
            write_job(jobs_dir, f"late/j{i:03d}", LATE_JOB.format(host=host))
        write_job(jobs_dir, "warm", WARM_JOB.format(host=host))
        with Server(jobs_dir, data_dir, config=_config(sshd)) as server:
            server.start()
            w0 = time.time() + warmup
            w1 = w0 + duration
            time.sleep(max(0.0, w1 + 3.0 - time.time()))
            conn = server.db()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                left = conn.execute("SELECT count(*) FROM runs WHERE time_schedule >= ? AND time_schedule < ?"
                                    " AND state NOT IN ('success','failure','error','skipped')",
                                    (w0, w1)).fetchone()[0]
                if not left:
                    break
                time.sleep(0.2)
            runs = program_start_times(conn, "r.time_schedule >= ? AND r.time_schedule < ?", (w0, w1))
            why = conn.execute("SELECT message, count(*) FROM runs WHERE time_schedule >= ? AND time_schedule < ?"
                               " AND state != 'success' GROUP BY message", (w0, w1)).fetchall()
            conn.close()
        for message, count in why:
            print(f"  note: {count} runs: {message}")
        late = [c - ts for ts, _, state, _, c in runs.values() if c is not None and state == "success"]
        missing = len(runs) - len(late)
        if missing:
            print(f"  note: {missing} of {len(runs)} runs did not succeed")
        return pct(late, 99), pct(late, 50)
    finally:
        cleanup(jobs_dir, data_dir)


def _summary(values, unit_scale=1000.0, unit="ms"):
    vals = [v * unit_scale for v in values]
    return f"median {statistics.median(vals):.1f} {unit}, range {min(vals):.1f}–{max(vals):.1f} {unit} ({len(vals)} runs)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="runs in the burst (default 100)")
    parser.add_argument("--jobs", type=int, default=10, help="jobs every 2 s for lateness (default 10)")
    parser.add_argument("--duration", type=float, default=20.0, help="lateness window, s (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="times each is measured (default 3)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="apsis-remote-bench-"))
    sshd = start_sshd(folder / "sshd")
    print(f"bench/remote.py {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"the host is this machine through sshd on 127.0.0.1")
    try:
        for remote in (True, False):
            where = "remote (ssh)" if remote else "local (reference)"
            lasts = [burst(sshd, args.runs, remote) for _ in range(args.repeat)]
            print(f"burst of {args.runs}, {where}: last program started after due: {_summary(lasts)}"
                  + ("   [aim <= 2000 ms]" if remote else ""))
            p99s, p50s = zip(*(lateness(sshd, args.jobs, args.duration, remote) for _ in range(args.repeat)))
            print(f"lateness, {args.jobs} jobs every 2 s, {where}: p99 {_summary(p99s)}; p50 {_summary(p50s)}"
                  + ("   [aim p99 <= 50 ms]" if remote else ""), flush=True)
    finally:
        sshd.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

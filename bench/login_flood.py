#!/usr/bin/env python3
"""Start lateness of an interval job while clients flood the login form.

One job, ``interval: 2s``, runs ``/bin/date +%s.%N``: its output is its own
clock reading when it started, and lateness is that minus the due time (as
in ``lateness.py``). The server has one user; each flooding client logs in
again and again as a random user name (so the login throttle never steps
in and every attempt costs a full argon2id check), one attempt at a time.

The same server alternates quiet windows and flood windows, ``--rounds``
of each, ``--window`` seconds long, so both are measured under the same
conditions; a slot due in the first second of a window is left out (the
clients are starting or stopping). Prints median / p99 / max of each
window, of all quiet and all flood slots, and flood / quiet for each.

    bench/login_flood.py                       # 3 rounds of 20 s windows, 2 clients
    bench/login_flood.py --small               # 2 rounds of 10 s
    bench/login_flood.py --server waitress --clients 4
"""

import argparse
import datetime
import http.client
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse

from common import (date_job, ROOT, Server, cleanup, cpu_seconds, figure, median, note, pct, program_start_times,
                    size_args, tmpdir, write_job)

JOB = date_job("""
type: interval
interval: 2s
""")
PASSWORD = "bench password"


class Flooder(threading.Thread):
    """One client posting logins as random user names, one at a time, until stopped."""

    def __init__(self, url):
        super().__init__(daemon=True)
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.running = threading.Event()
        self.done = False
        self.attempts = 0
        self.statuses = {}
        self.seconds = []

    def run(self):
        conn, cookie, csrf = None, None, None
        while not self.done:
            if not self.running.wait(0.1):
                continue
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                    conn.request("GET", "/login")
                    resp = conn.getresponse()
                    page = resp.read().decode()
                    cookie = resp.getheader("Set-Cookie").split(";", 1)[0]
                    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
                form = urllib.parse.urlencode({"csrf_token": csrf, "name": "u" + secrets.token_hex(6),
                                               "password": secrets.token_hex(8)})
                t0 = time.perf_counter()
                conn.request("POST", "/login", body=form, headers={
                    "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
                resp = conn.getresponse()
                resp.read()
                self.seconds.append(time.perf_counter() - t0)
                self.attempts += 1
                self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, AttributeError):
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)


def add_user(data_dir):
    subprocess.run([sys.executable, "-m", "apsis_lite", "user", "add", "bench", "--role", "viewer",
                    "--password-stdin", "--data", data_dir], input=PASSWORD + "\n", text=True, check=True,
                   cwd=ROOT, capture_output=True)


def summary(values):
    return median(values), pct(values, 99), max(values) if values else float("nan")


def bench(rounds, window, clients, server_kind):
    jobs_dir, data_dir = tmpdir("fj"), tmpdir("fd")
    try:
        write_job(jobs_dir, "tick", JOB)
        os.makedirs(data_dir, exist_ok=True)
        add_user(data_dir)
        extra = ["--server", server_kind] if server_kind != "gevent" else []
        with Server(jobs_dir, data_dir, extra_args=extra) as server:
            server.start()
            flooders = [Flooder(server.url) for _ in range(clients)]
            for f in flooders:
                f.start()
            time.sleep(3.0)  # the agent's first start, the first runs
            windows = []  # (kind, start, end, cpu seconds)
            t = time.time()
            for _ in range(rounds):
                for kind in ("quiet", "flood"):
                    for f in flooders:
                        (f.running.set if kind == "flood" else f.running.clear)()
                    cpu0 = cpu_seconds(server.pid)
                    start = time.time()
                    time.sleep(max(0.0, start + window - time.time()))
                    windows.append((kind, start, time.time(), cpu_seconds(server.pid) - cpu0))
            for f in flooders:
                f.running.clear()
                f.done = True
            time.sleep(3.0)  # the last slots run and are recorded
            conn = server.db()
            runs = program_start_times(conn, "r.time_schedule >= ?", (t,))
            conn.close()
        by_kind = {"quiet": [], "flood": []}
        missing = {"quiet": 0, "flood": 0}
        for kind, start, end, cpu in windows:
            late = []
            for ts, args, state, _times, clock in runs.values():
                if not start + 1.0 <= ts < end:
                    continue
                if clock is None or state != "success":
                    missing[kind] += 1
                    continue
                t_arg = datetime.datetime.fromisoformat(args["time"]).timestamp()
                late.append((clock - t_arg) * 1000)
            by_kind[kind] += late
            p50, p99, mx = summary(late)
            note(f"{kind} window at +{start - t:.0f}s: {len(late)} slots, lateness p50 {p50:.1f} ms, "
                 f"max {mx:.1f} ms; server {cpu / (end - start) * 100:.0f}% of a core")
        attempts = sum(f.attempts for f in flooders)
        statuses = {}
        for f in flooders:
            for k, v in f.statuses.items():
                statuses[k] = statuses.get(k, 0) + v
        flood_s = sum(end - start for kind, start, end, _ in windows if kind == "flood")
        tag = f"login_flood_{server_kind}"
        figure(f"{tag}_logins", attempts / flood_s, f"attempts/s from {clients} clients during floods "
               f"(statuses {dict(sorted(statuses.items()))})")
        figure(f"{tag}_login_p50", median([s * 1000 for f in flooders for s in f.seconds]),
               "ms per attempt (a client's wait, pool queue included)")
        for kind in ("quiet", "flood"):
            p50, p99, mx = summary(by_kind[kind])
            figure(f"{tag}_{kind}_lateness", f"p50 {p50:.1f} / p99 {p99:.1f} / max {mx:.1f}",
                   f"ms over {len(by_kind[kind])} slots ({missing[kind]} missing)")
        q, fl = summary(by_kind["quiet"]), summary(by_kind["flood"])
        figure(f"{tag}_ratio", f"p50 {fl[0] / q[0]:.2f} / p99 {fl[1] / q[1]:.2f} / max {fl[2] / q[2]:.2f}",
               "flood / quiet")
    finally:
        cleanup(jobs_dir, data_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size_args(parser, "2 rounds of 10 s windows", "3 rounds of 20 s windows (default)")
    parser.add_argument("--rounds", type=int, help="quiet + flood windows")
    parser.add_argument("--window", type=float, help="seconds per window")
    parser.add_argument("--clients", type=int, default=2, help="flooding clients (default 2)")
    parser.add_argument("--server", default="gevent", choices=("gevent", "waitress"))
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.small else 3)
    window = args.window or (10.0 if args.small else 20.0)
    bench(rounds, window, args.clients, args.server)


if __name__ == "__main__":
    main()

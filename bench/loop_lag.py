#!/usr/bin/env python3
"""The event loop's lag while the heaviest pages are opened, on 5,000 jobs of every schedule kind.

A real server (``lag_probe.py``: ``apsis-lite serve`` with a probe greenlet
that sleeps 5 ms again and again and records how late it woke) holds 5,000
jobs: 1,666 on cron ``*/30 * * * *``, 1,667 hourly (interval 1h), 1,417 daily
at 06:MM on weekdays in New York, and 50 each of cron on weekdays in London,
daily-interval in Tokyo, explicit times and interval 6h, all no-op programs;
and a job every second running ``date +%s.%N``, whose start lateness (its
clock minus its due time) says whether starts kept time. ``--distinct`` gives
the ``*/30`` crons 400 different zones, so that few jobs share a schedule.

Each round starts a fresh server (nothing computed yet), then opens one
page or request at a time, a second apart: the calendar's month, week and
day (their first views, then warm), the runs list, the jobs list, job pages,
and a reload of every job file (each rewritten first). Meanwhile a client
asks ``/api/v1/alive`` every 20 ms. Per phase: the response time and the
server's CPU meanwhile, the most CPU the loop's thread spent between two
wake-ups of the probe (``loop_held``), the probe's largest lag, the slowest
``/alive``, the latest start; against an idle window of the same server. Bursts of the bulk jobs (at :00 and :30) are
waited out. Medians and ranges over ``--rounds``.

    bench/loop_lag.py                 # 3 rounds
    bench/loop_lag.py --rounds 1 --distinct
"""

import argparse
import http.client as httpclient
import os
import threading
import time
import urllib.parse
import zoneinfo

from common import (TOKENS, Server, cleanup, cpu_seconds, date_job, figure, median, note, pct, program_start_times,
                    request, tmpdir, write_job)

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lag_probe.py")
TARGET_LAG = "max ≤ 20 ms"


def bulk_jobs(n, distinct=False):
    """{job_id: job file text} of ``n`` no-op jobs of every schedule kind (see the module doc)."""
    zones = sorted(z for z in zoneinfo.available_timezones() if "/" in z and not z.startswith("Etc/"))[:400]
    others = [
        'schedule: {{type: cron, expr: "{m} 9 * * Mon-Fri", tz: Europe/London}}\n',
        'schedule: {{type: daily-interval, start: "09:00", stop: "17:00", interval: 15m, tz: Asia/Tokyo}}\n',
        'schedule: {{type: explicit, times: ["2027-01-{d:02d}T10:00:00Z", "2027-02-{d:02d}T10:00:00Z"]}}\n',
        'schedule: {{type: interval, interval: 6h, phase: 2h{m}m}}\n',
    ]
    n_other = min(200, n // 25)
    n_main = n - n_other
    out = {}
    for j in range(n):
        m = j % 60
        if j >= n_main:
            text = others[j % len(others)].format(m=m, d=j % 28 + 1)
        elif j % 3 == 0:
            tz = zones[j % len(zones)] if distinct else "UTC"
            text = f'schedule: {{type: cron, expr: "*/30 * * * *", tz: {tz}}}\n'
        elif j % 3 == 1:
            text = "schedule: {type: interval, interval: 1h}\n"
        else:
            text = f'schedule: {{type: daily, daytime: "06:{m:02d}", tz: America/New_York, calendar: Mon-Fri}}\n'
        out[f"bulk/j{j:05d}"] = "program: {type: no-op}\n" + text
    return out


def write_jobs(jobs_dir, n, distinct, salt=""):
    for job_id, text in bulk_jobs(n, distinct).items():
        write_job(jobs_dir, job_id, text + (f"# {salt}\n" if salt else ""))
    write_job(jobs_dir, "tick", date_job("type: interval\ninterval: 1s"))


class AlivePoller(threading.Thread):
    """Asks /api/v1/alive every ``every`` s on one kept-alive connection: (sent at, seconds) each."""

    def __init__(self, url, every=0.02):
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.samples, self.stopped = [], threading.Event()

    def run(self):
        u = urllib.parse.urlsplit(self.url)
        conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=60)
        headers = {"Authorization": f"Bearer {TOKENS[self.url]}"}
        while not self.stopped.is_set():
            sent, began = time.time(), time.perf_counter()
            try:
                conn.request("GET", "/api/v1/alive", headers=headers)
                conn.getresponse().read()
            except (OSError, httpclient.HTTPException):
                conn.close()
                conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=60)
                continue
            self.samples.append((sent, time.perf_counter() - began))
            self.stopped.wait(self.every)


def clear_of_bursts(margin_before, margin_after=25.0):
    """Wait until no :00 or :30 (when the bulk jobs are due) is within the next
    ``margin_before`` s nor passed less than ``margin_after`` s ago."""
    while True:
        into = time.time() % 1800
        if margin_after <= into <= 1800 - margin_before:
            return
        time.sleep(1800 - into + margin_after if into > margin_after else margin_after - into)


def read_lags(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    out.append(tuple(float(p) for p in parts))
    return out


def one_round(n, distinct, rounds_dir):
    jobs_dir, data_dir = tmpdir("lj"), tmpdir("ld")
    rounds_dir += [jobs_dir, data_dir]
    write_jobs(jobs_dir, n, distinct)
    lag_file = os.path.join(data_dir, "lag.txt")
    os.environ["LAG_PROBE_FILE"] = lag_file
    clear_of_bursts(120)
    phases = []  # (name, began, ended, response seconds or None)
    cpus = {}  # name: the server's CPU (ms) while each request of it was answered
    with Server(jobs_dir, data_dir, entry=[PROBE]) as server:
        server.start()
        note(f"server answered after {server.startup_s:.2f} s")
        poller = AlivePoller(server.url)
        poller.start()
        time.sleep(3.0)  # start-up's planning of 5,000 jobs

        def phase(name, method, path, body=None, settle=1.0):
            began, cpu = time.time(), cpu_seconds(server.pid)
            status, data = request(server.url, method, path, body, timeout=300)
            ended, cpu = time.time(), cpu_seconds(server.pid) - cpu
            if status != 200:
                raise RuntimeError(f"{method} {path}: HTTP {status}: {data[:300]!r}")
            phases.append((name, began, ended, ended - began))
            cpus.setdefault(name, []).append(cpu * 1000)
            time.sleep(settle)

        t = time.time()
        time.sleep(5.0)
        phases.append(("idle", t, time.time(), None))
        phase("calendar_month_first", "GET", "/calendar")
        phase("calendar_week_first", "GET", "/calendar?view=week")
        phase("calendar_day_first", "GET", "/calendar/day")
        phase("calendar_next_month", "GET", "/calendar?date=" + time.strftime("%Y-%m-01", time.gmtime(t + 32 * 86400)))
        for k in range(3):
            phase("calendar_month_warm", "GET", "/calendar", settle=0.3)
            phase("calendar_day_warm", "GET", "/calendar/day", settle=0.3)
        phase("calendar_month_args_filter", "GET", "/calendar?q=" + urllib.parse.quote("date=2027-01-04"))
        phase("runs_list", "GET", "/")
        phase("jobs_list", "GET", "/jobs")
        phase("jobs_search", "GET", "/jobs?q=j01")
        for k in range(3):
            phase("job_page", "GET", f"/jobs/bulk/j{k * 3 + 1:05d}", settle=0.3)
        clear_of_bursts(40)
        write_jobs(jobs_dir, n, distinct, salt=f"changed {time.time()}")
        phase("reload_all", "POST", "/api/v1/jobs/reload", body={}, settle=3.0)
        t = time.time()
        time.sleep(5.0)
        phases.append(("idle_after", t, time.time(), None))
        poller.stopped.set()
        time.sleep(2.0)
        conn = server.db()
        ticks = program_start_times(conn, "r.job_id = 'tick'")
        conn.close()
    lags = read_lags(lag_file)
    starts = [(ts, clock - ts) for ts, _a, _s, _t, clock in ticks.values() if clock is not None]
    out = {}
    for name, began, ended, took in phases:
        # A reload's planning and a page's aftermath count with it: up to the next phase.
        lag = [v for t, v, _c in lags if began <= t <= ended + 0.5]
        held = [c for t, _v, c in lags if began <= t <= ended + 0.5]
        alive = [s for t, s in poller.samples if began <= t <= ended + 0.5]
        late = [v for ts, v in starts if began <= ts <= ended + 0.5]
        row = out.setdefault(name, {"took": [], "cpu": cpus.get(name, []), "lag": [], "held": [], "alive": [],
                                    "late": [], "starts": 0})
        if took is not None:
            row["took"].append(took * 1000)
        row["lag"] += lag
        row["held"] += held
        row["alive"] += [a * 1000 for a in alive]
        row["late"] += [v * 1000 for v in late]
        row["starts"] += len(late)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--distinct", action="store_true", help="the */30 crons in 400 zones: few shared schedules")
    args = parser.parse_args()
    note(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()) + f", load {os.getloadavg()[0]:.1f}, "
         f"{args.jobs} jobs{' (distinct crons)' if args.distinct else ''}, {args.rounds} rounds")
    folders, rounds = [], []
    try:
        for r in range(args.rounds):
            rounds.append(one_round(args.jobs, args.distinct, folders))
    finally:
        cleanup(*folders)
    names = list(rounds[0])
    for name in names:
        per = [r[name] for r in rounds if name in r]

        def spread(values, unit="ms"):
            values = [v for v in values if v == v]
            if not values:
                return "n/a"
            return f"{median(values):.1f} {unit} ({min(values):.1f}–{max(values):.1f})"

        took = [median(p["took"]) for p in per if p["took"]]
        if took:
            figure(f"{name}_response", spread(took), "median (range) over rounds")
            figure(f"{name}_server_cpu", spread([median(p["cpu"]) for p in per if p["cpu"]]),
                   "while answering (with the calendar warmer's, once started)")
        figure(f"{name}_loop_held_max", spread([max(p["held"], default=float("nan")) for p in per]),
               f"of the main thread's CPU between two probe wake-ups ({sum(len(p['lag']) for p in per)})",
               TARGET_LAG)
        figure(f"{name}_loop_lag_max", spread([max(p["lag"], default=float("nan")) for p in per]),
               "wall clock: also the waits for a core")
        figure(f"{name}_alive_max", spread([max(p["alive"], default=float("nan")) for p in per]))
        figure(f"{name}_start_late_max", spread([max(p["late"], default=float("nan")) for p in per]),
               f"{sum(p['starts'] for p in per)} starts")
    for key, what in (("held", "loop_held"), ("lag", "loop_lag")):
        busy = [v for r in rounds for name, p in r.items() if not name.startswith("idle") for v in p[key]]
        idle = [v for r in rounds for name, p in r.items() if name.startswith("idle") for v in p[key]]
        for label, vs in (("busy", busy), ("idle", idle)):
            figure(f"{what}_{label}", f"p50 {pct(vs, 50):.2f} ms, p99 {pct(vs, 99):.2f} ms, max {max(vs):.1f} ms")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Soak: interval jobs while the server, the agent and shepherds are killed with SIGKILL.

A real server runs J interval jobs (every 1 or 2 s, alternately), whose
program appends ``job slot-time run-id pid`` to a ledger file and then sleeps
a little (so that shepherds are caught in the middle of runs). For the given
duration, at random moments (exponentially distributed gaps), this script
sends SIGKILL to

* the server, and starts it again on the same data folder after a random
  downtime of up to ``--max-down`` seconds;
* the agent (``DATA/agent/agent.pid``, checked against its command line);
* one to three shepherds of runs in flight (``DATA/runs/r*/shepherd.json``,
  checked against the process start time recorded there).

Then it lets everything settle, stops the server and checks, for every slot
of every job from its first run to the end of the chaos:

* doubled: a slot whose program started more than once (ledger), or a slot
  with more than one run in the database;
* holes: a slot with no run in the database (or a ledger line no run explains);
* lost: a slot whose run neither ran once (success, one ledger line) nor is
  recorded as error or skipped with a reason; a skipped run whose program ran;
  a failure (the program cannot fail);
* stuck: a run still scheduled, waiting, starting, running or stopping
  ``--stuck-after`` seconds after its due time;
* ``PRAGMA integrity_check`` of the database.

Acceptable outcomes besides success: a run whose shepherd was killed goes to
``error`` (its program may well have run: the ledger says); a run caught
between ``starting`` and ``running`` by a server kill goes to ``error`` ("may
have started") unless its spec was provably never claimed, in which case it
starts again; slots missed while the server was down run late (younger than
``max_age``) or are ``skipped`` with the reason.

    bench/soak.py                        # 5 minutes
    bench/soak.py --minutes 10 --seed 7
    bench/soak.py --minutes 1 --server-every 10

Prints one ``name: value`` line per count and exits 1 if any check failed.
"""

import argparse
import collections
import contextlib
import glob
import json
import os
import random
import signal
import sys
import threading
import time

from common import Server, cleanup, figure, note, pct, tmpdir, write_job

ACTIVE = ("scheduled", "waiting", "starting", "running", "stopping")

JOB = """\
params: [time]
program:
  type: shell
  command: 'echo "$APSIS_JOB_ID $APSIS_ARG_time $APSIS_RUN_ID $$" >> "{ledger}"; sleep {sleep}'
schedule:
  type: interval
  interval: {interval}s
"""


def proc_start_time(pid):
    """Field 22 of /proc/PID/stat, or None: with the pid, it names one process for good."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class Chaos:
    """Sends SIGKILL to the server, the agent and shepherds of one data folder, and counts."""

    def __init__(self, server, rng, max_down, early):
        self.server = server
        self.early = early
        # What was killed when, for a look at the server's and agent's logs.
        self.log = open(os.path.join(server.data_dir, "soak-kills.log"), "a")
        self.rng = rng
        self.max_down = max_down
        self.kills = collections.Counter()
        self.downtime = 0.0
        self.killed_runs = set()  # Run ids whose shepherd we killed.

    def _record(self, what, pid, detail=""):
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
        self.log.write(f"{stamp} SIGKILL {what} {pid} {detail}\n")
        self.log.flush()

    def kill_server(self):
        self.server.proc.send_signal(signal.SIGKILL)
        self.server.proc.wait()
        self.kills["server"] += 1
        down = self.rng.uniform(0, self.max_down)
        self._record("server", self.server.proc.pid, f"down {down:.2f} s")
        t0 = time.monotonic()
        time.sleep(down)
        while self.rng.random() < self.early:
            self.kill_while_starting()
        self.restart_server()
        self.downtime += time.monotonic() - t0

    def kill_while_starting(self):
        """Start the server and kill it again within its first second: during
        its recovery, or just after it first answers."""
        delay = self.rng.uniform(0, 1.0)
        holder = {}

        def killer():
            t0 = time.monotonic()
            while time.monotonic() - t0 < 30:
                proc = self.server.proc
                if proc is not None:
                    time.sleep(max(0.0, delay - (time.monotonic() - t0)))
                    holder["pid"] = proc.pid
                    proc.send_signal(signal.SIGKILL)
                    return
                time.sleep(0.001)

        thread = threading.Thread(target=killer)
        self.server.proc = None
        thread.start()
        with contextlib.suppress(RuntimeError):  # It died before it answered.
            self.restart_server()
        thread.join()
        if self.server.proc is not None:
            self.server.proc.wait()
        self.kills["server"] += 1
        self.kills["server_starting"] += 1
        self._record("server", holder.get("pid"), f"{delay:.2f} s after it was started")

    def restart_server(self):
        with contextlib.suppress(Exception):
            self.server._log.close()
        self.server.proc = None
        self.server.url = None
        self.server.start()

    def kill_agent(self):
        state_dir = os.path.join(self.server.data_dir, "agent")
        try:
            with open(os.path.join(state_dir, "agent.pid")) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except (OSError, ValueError):
            return  # No agent right now (it starts on demand).
        # Only the agent of this data folder: its state folder is its last argument.
        if b"apsis_lite.agent" not in cmdline or os.fsencode(state_dir) not in cmdline:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            self.kills["agent"] += 1
            self._record("agent", pid)

    def kill_shepherds(self):
        live = []
        for path in glob.glob(os.path.join(self.server.data_dir, "runs", "r*", "shepherd.json")):
            try:
                with open(path) as f:
                    info = json.load(f)
                pid, start = int(info["pid"]), info["start_time"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if start is not None and proc_start_time(pid) == start:
                live.append((pid, os.path.basename(os.path.dirname(path))))
        for pid, run_id in self.rng.sample(live, min(len(live), self.rng.randint(1, 3))):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                self.kills["shepherd"] += 1
                self.killed_runs.add(run_id)
                self._record("shepherd", pid, run_id)

    def run(self, seconds, server_every, agent_every, shepherd_every):
        end = time.monotonic() + seconds
        every = {"server": server_every, "agent": agent_every, "shepherd": shepherd_every}
        act = {"server": self.kill_server, "agent": self.kill_agent, "shepherd": self.kill_shepherds}
        due = {k: time.monotonic() + self.rng.expovariate(1 / v) for k, v in every.items() if v > 0}
        last_report = time.monotonic()
        while due:
            what = min(due, key=due.get)
            if due[what] >= end:
                break
            time.sleep(max(0.0, due[what] - time.monotonic()))
            act[what]()
            due[what] = time.monotonic() + self.rng.expovariate(1 / every[what])
            if time.monotonic() - last_report >= 60:
                last_report = time.monotonic()
                note(f"{seconds - (end - last_report):.0f} s: kills so far {dict(self.kills)}")
        time.sleep(max(0.0, end - time.monotonic()))


def read_ledger(path):
    """[(job_id, slot time arg, run id, pid)] from the ledger, and lines that do not parse."""
    lines, bad = [], 0
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4:
                    lines.append(tuple(parts))
                else:
                    bad += 1
    except FileNotFoundError:
        pass
    return lines, bad


def check(db_path, ledger_path, intervals, chaos_end, stopped_at, stuck_after, killed_runs):
    """Compare the database with the ledger; returns (counts, problems, details)."""
    import apsw

    conn = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(10_000)
    integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    rows = conn.execute(
        "SELECT run_id, job_id, args, state, time_schedule, times, message, rerun_of FROM runs").fetchall()
    conn.close()

    ledger, unparsable = read_ledger(ledger_path)
    by_slot = collections.defaultdict(list)  # (job, time arg) -> ledger lines
    by_run = collections.Counter()
    for job_id, t, run_id, pid in ledger:
        by_slot[(job_id, t)].append(run_id)
        by_run[run_id] += 1

    counts = collections.Counter()
    problems = collections.defaultdict(list)
    reasons = collections.Counter()
    lateness = []
    runs_by_slot = collections.defaultdict(list)
    for run_id, job_id, args, state, ts, times, message, rerun_of in rows:
        rid = f"r{run_id}"
        counts["runs"] += 1
        if state in ACTIVE and ts < stopped_at - stuck_after:
            problems["stuck"].append(f"{rid} {job_id} due {ts:.0f} still {state}")
        if rerun_of is None and job_id in intervals:
            runs_by_slot[(job_id, round(ts * 1e6))].append((rid, json.loads(args), state, message,
                                                            json.loads(times), ts))
    for rid, n in by_run.items():
        if n > 1:
            problems["doubled"].append(f"{rid} appears {n} times in the ledger")

    for job_id, interval in intervals.items():
        slots = sorted(k[1] for k in runs_by_slot if k[0] == job_id)
        if not slots:
            problems["holes"].append(f"{job_id}: no run at all")
            continue
        step = round(interval * 1e6)
        last = int(chaos_end * 1e6) // step * step
        for slot in range(slots[0], last + 1, step):
            runs = runs_by_slot.get((job_id, slot), [])
            counts["slots"] += 1
            if not runs:
                problems["holes"].append(f"{job_id} slot {slot / 1e6:.0f}: no run")
                continue
            if len(runs) > 1:
                problems["doubled"].append(f"{job_id} slot {slot / 1e6:.0f}: {len(runs)} runs")
            rid, args, state, message, times, ts = runs[0]
            ran = by_slot.get((job_id, args.get("time")), [])
            counts[state] += 1
            if len(ran) > 1:
                problems["doubled"].append(f"{job_id} slot {args.get('time')}: started {len(ran)} times ({ran})")
            if ran and ran[0] != rid:
                problems["holes"].append(f"{job_id} slot {args.get('time')}: ran as {ran[0]}, recorded as {rid}")
            if "running" in times:
                lateness.append(times["running"] - ts)
            if state in ACTIVE:
                continue  # Counted as stuck above.
            if state == "success":
                if not ran:
                    problems["lost"].append(f"{rid} {job_id} success without a ledger line")
            elif state in ("error", "skipped"):
                if not message:
                    problems["lost"].append(f"{rid} {job_id} {state} without a reason")
                if state == "skipped" and ran:
                    problems["lost"].append(f"{rid} {job_id} skipped but its program ran")
                if state == "error":
                    counts["error_ran" if ran else "error_not_ran"] += 1
                    if rid in killed_runs:
                        counts["error_shepherd_killed"] += 1
                reasons[f"{state}: {_reason(message)}"] += 1
            else:
                problems["lost"].append(f"{rid} {job_id} {state}: {message}")
    # A ledger line that no run of the checked window explains.
    known = {(job_id, a["time"]) for (job_id, _), runs in runs_by_slot.items() for _, a, *_ in runs}
    for (job_id, t), run_ids in by_slot.items():
        if (job_id, t) not in known:
            problems["holes"].append(f"{job_id} {t}: in the ledger ({run_ids}) but no run in the database")
    if unparsable:
        problems["lost"].append(f"{unparsable} ledger lines do not parse")
    counts["ledger_lines"] = len(ledger)
    return counts, problems, reasons, lateness, integrity


def log_complaints(data_dir):
    """Counter of the WARNING and ERROR lines (timestamps and numbers blanked)
    in the server's and the agent's logs: not failures by themselves, but
    worth a look."""
    found = collections.Counter()
    for name in ("bench-server.log", os.path.join("agent", "agent.log")):
        with contextlib.suppress(OSError), open(os.path.join(data_dir, name), errors="replace") as f:
            for line in f:
                if " WARNING " in line or " ERROR " in line or line.startswith("Traceback"):
                    text = line.split(" ", 2)[-1] if line[:2].isdigit() else line
                    found[" ".join("N" if any(c.isdigit() for c in w) else w for w in text.split())[:140]] += 1
    return found


def _reason(message):
    """A message without its run-specific details, to count reasons."""
    text = (message or "").split(":")[0] if message and message.startswith("missed") else (message or "")
    return " ".join(w for w in text.split() if not any(c.isdigit() for c in w))[:90]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to cause chaos (default 5)")
    parser.add_argument("--jobs", type=int, default=10, help="interval jobs, every 1 or 2 s (default 10)")
    parser.add_argument("--server-every", type=float, default=30.0,
                        help="mean seconds between server kills (0: never; default 30)")
    parser.add_argument("--agent-every", type=float, default=20.0,
                        help="mean seconds between agent kills (0: never; default 20)")
    parser.add_argument("--shepherd-every", type=float, default=3.0,
                        help="mean seconds between shepherd kills (0: never; default 3)")
    parser.add_argument("--max-down", type=float, default=3.0,
                        help="the server stays down a random time up to this (default 3 s)")
    parser.add_argument("--max-age", type=float,
                        help="the server's max_age: missed slots older than this are skipped (default 3600)")
    parser.add_argument("--early", type=float, default=0.25,
                        help="after a server kill, the chance that the restarted server is killed again "
                             "within its first second (repeatedly; default 0.25)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds left undisturbed after the chaos before checking (default 30)")
    parser.add_argument("--stuck-after", type=float, default=20.0,
                        help="a run still in flight this long after its due time is stuck (default 20)")
    parser.add_argument("--seed", type=int, help="random seed (default: from the clock; printed)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    every = ", ".join(f"{what} {f'every ~{mean:g} s' if mean > 0 else 'never'}" for what, mean in (
        ("server", args.server_every), ("agent", args.agent_every), ("shepherds", args.shepherd_every)))
    note(f"seed {seed}; {args.jobs} jobs; {args.minutes:g} min; kills: {every}")

    jobs_dir, data_dir = tmpdir("sj"), tmpdir("sd")
    ledger = os.path.join(data_dir, "ledger")
    intervals = {}
    for i in range(args.jobs):
        job_id = f"soak/j{i:02d}"
        intervals[job_id] = 1 + i % 2
        write_job(jobs_dir, job_id, JOB.format(ledger=ledger, interval=intervals[job_id],
                                               sleep=f"0.{2 * (i % 5) + 1}"))
    server = Server(jobs_dir, data_dir, config={"max_age": args.max_age} if args.max_age else None)
    ok = False
    try:
        server.start()
        chaos = Chaos(server, rng, args.max_down, args.early)
        chaos.run(args.minutes * 60, args.server_every, args.agent_every, args.shepherd_every)
        chaos_end = time.time()
        note(f"chaos over; {args.settle:g} s to settle")
        time.sleep(args.settle)
        stopped_at = time.time()
        server.stop()  # SIGTERM, then the agent.
        time.sleep(2)  # Programs of killed shepherds finish their sleep.
        counts, problems, reasons, lateness, integrity = check(
            os.path.join(data_dir, "apsis-lite.db"), ledger, intervals, chaos_end, stopped_at,
            args.stuck_after, chaos.killed_runs)

        figure("soak_minutes", args.minutes, "min of chaos", fmt="{:g}")
        figure("soak_server_kills", chaos.kills["server"],
               f"({chaos.kills['server_starting']} in its first second; down {chaos.downtime:.1f} s in all)")
        figure("soak_agent_kills", chaos.kills["agent"])
        figure("soak_shepherd_kills", chaos.kills["shepherd"])
        figure("soak_runs", counts["runs"], "in the database (with those planned ahead)")
        figure("soak_slots_checked", counts["slots"], f"(ledger: {counts['ledger_lines']} starts)")
        figure("soak_success", counts["success"])
        figure("soak_error", counts["error"],
               f"({counts['error_shepherd_killed']} of them had their shepherd killed; program ran in "
               f"{counts['error_ran']}, not in {counts['error_not_ran']})")
        figure("soak_skipped", counts["skipped"])
        for reason, n in reasons.most_common():
            note(f"{n} x {reason}")
        if lateness:
            figure("soak_start_lateness", pct(lateness, 50) * 1000,
                   f"ms p50; p99 {pct(lateness, 99) * 1000:.0f} ms; max {max(lateness):.1f} s")
        for name in ("doubled", "lost", "holes", "stuck"):
            figure(f"soak_{name}", len(problems[name]))
            for line in problems[name][:20]:
                note(f"{name}: {line}")
        figure("soak_integrity_check", " ".join(integrity))
        complaints = log_complaints(data_dir)
        figure("soak_log_warnings_and_errors", sum(complaints.values()), "(server and agent logs; not checked)")
        for text, n in complaints.most_common(10):
            note(f"{n} x {text}")
        ok = not any(problems.values()) and integrity == ["ok"]
        figure("soak_result", "PASS" if ok else "FAIL")
    finally:
        server.stop()
        if ok:
            cleanup(jobs_dir, data_dir)
        else:
            note(f"kept {jobs_dir} {data_dir} for a look")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The sanity checks, one function or class per kind of finding; ``engine.sanity`` runs them.

Each reads what it needs with bounded queries (an index and a LIMIT, or the
runs not yet finished, which the horizon bounds) and returns ``Finding``s,
at most ``limit`` of a kind, naming the run or job and the reason:

``behind``     a run still scheduled (or starting) well after its due time: the engine is behind or stuck
``unplanned``  a job with schedules and no run planned: its calendar ran out, its planning broke, or nothing planned it
``lost``       a run recorded as running whose shepherd or program is gone, without a result
``orphan``     a process of a run that has finished: it outlived its shepherd
``late``       a run that started more than ``sanity_late`` after its due time
``failing``    a job whose last ``sanity_failures`` runs all failed
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from apsis_lite import agent
from apsis_lite.agent.processes import process_status, processes_with_env
from apsis_lite.model.runs import FINISHED, format_run_id, parse_run_id
from apsis_lite.timeutil import format_duration, to_epoch, to_iso

KINDS = ("behind", "unplanned", "lost", "orphan", "late", "failing")
# What each kind is, in words (the page and the docs).
KIND_WORDS = {
    "behind": "past due, not started",
    "unplanned": "no run planned",
    "lost": "running, process gone",
    "orphan": "process outlived its run",
    "late": "started late",
    "failing": "keeps failing",
}
# Runs in flight looked at per check.
ACTIVE_LIMIT = 5000
# Runs due within sanity_window looked at for late starts, newest first.
RECENT_LIMIT = 5000


@dataclass(frozen=True)
class Finding:
    """One thing a person should know: its kind, the run or job it is about, and why."""

    kind: str
    reason: str
    job_id: str | None = None
    run_id: int | None = None
    since: float | None = None  # when it was first found (set by the checker)
    details: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """Its identity across checks: the same key is the same finding, reported once."""
        return f"{self.kind}:{format_run_id(self.run_id) if self.run_id is not None else self.job_id}"

    @property
    def subject(self) -> str:
        if self.run_id is None:
            return f"job {self.job_id}"
        return f"run {format_run_id(self.run_id)}" + (f" of job {self.job_id}" if self.job_id else "")

    def to_jso(self) -> dict:
        return {"kind": self.kind, "run_id": format_run_id(self.run_id) if self.run_id is not None else None,
                "job_id": self.job_id, "reason": self.reason, "subject": self.subject,
                "since": to_iso(self.since) if self.since is not None else None, "details": self.details}


def start_lateness(run):
    """Seconds from a run's due time to its start, not counting the time it waited for its
    conditions, resources or a pause; None if it has not started, or started before its
    due time (by hand).

    The start is the program's (``running``), else the engine's (``starting``:
    no-ops and in-server programs). A run waits between ``waiting`` and
    ``starting``: both are the same instant when nothing holds it.
    """
    times = run.times
    started = times.get("running", times.get("starting"))
    if started is None:
        return None
    held = 0.0
    if "waiting" in times and "starting" in times:
        held = max(0.0, times["starting"] - max(times["waiting"], run.time_schedule))
    late = started - run.time_schedule - held
    return late if late >= 0 else None


# -- runs and jobs, from the database ---------------------------------------------------


def behind(store, now, threshold, limit) -> list:
    """Runs still scheduled ``threshold`` after their due time, or starting for that long."""
    out = []
    for run in store.overdue_runs(now - threshold, limit):
        out.append(Finding("behind", f"due at {to_iso(run.time_schedule)} and still scheduled "
                                     f"{format_duration(now - run.time_schedule)} later: the engine is "
                                     "behind or stuck", run.job_id, run.run_id))
    for run in store.runs_in_states(["starting"], limit=ACTIVE_LIMIT):
        since = run.times.get("starting", run.time_updated)
        if len(out) < limit and now - since >= threshold:
            out.append(Finding("behind", f"starting since {to_iso(since)} ({format_duration(now - since)}): "
                                         "no shepherd has reported it running", run.job_id, run.run_id))
    return out


def late(store, now, threshold, window, limit) -> list:
    """Runs due within ``window`` that started more than ``threshold`` after their due time."""
    out = []
    for run in store.runs_due_between(now - window, now, RECENT_LIMIT):
        lateness = start_lateness(run)
        if lateness is None or lateness <= threshold:
            continue
        started = run.times.get("running", run.times.get("starting"))
        held = lateness < started - run.time_schedule - 0.0005
        out.append(Finding("late", f"started {format_duration(lateness)} after its due time "
                                   f"{to_iso(run.time_schedule)}"
                                   + (" (not counting the time it waited for its conditions)" if held else "")
                                   + f", more than sanity_late ({format_duration(threshold)})",
                           run.job_id, run.run_id, details={"lateness": round(lateness, 3)}))
        if len(out) >= limit:
            break
    return out


def failing(store, job_ids, count, limit, pause=lambda: None) -> list:
    """Jobs whose last ``count`` runs (skipped ones aside) all failed."""
    out = []
    if count <= 0:
        return out
    for i, job_id in enumerate(job_ids):
        if i % 20 == 19:  # a query is some 50 us, more when its pages are not cached
            pause()
        outcomes = store.latest_outcomes(job_id, count)
        if len(outcomes) < count or any(state == "success" for _, state, _, _ in outcomes):
            continue
        rid, state, t, message = outcomes[0]
        out.append(Finding("failing", f"its last {count} runs failed; the latest, {format_run_id(rid)}, "
                                      f"ended {state} at {to_iso(t)}" + (f": {message}" if message else ""),
                           job_id, details={"runs": [format_run_id(r) for r, _, _, _ in outcomes]}))
        if len(out) >= limit:
            break
    return out


class Planning:
    """Jobs with schedules and no run planned. Remembers each job's next due time,
    so that a job is looked at again only when that time comes within the horizon."""

    def __init__(self, horizon):
        self.horizon = horizon
        self._next = {}  # job_id -> (the Job it was computed for, next due epoch or None)

    def check(self, engine, store, now, limit, pause=lambda: None) -> list:
        out = []
        jobs = engine.jobs
        self._next = {j: v for j, v in self._next.items() if j in jobs}
        # Runs are planned at least half a horizon ahead; this leaves the planner time to get there.
        ahead = now + max(self.horizon / 2 - min(10.0, self.horizon / 4), 0.0)
        for i, (job_id, job) in enumerate(sorted(jobs.items())):
            if i % 50 == 49:
                pause()
            if len(out) >= limit:
                break
            if not any(s.enabled for s in job.schedules):
                continue
            why = engine.broken(job_id)
            if why:
                out.append(Finding("unplanned", f"cannot be scheduled: {why}; no runs are planned "
                                                "until its file changes", job_id))
                continue
            known = self._next.get(job_id)
            if known is not None and known[0] is job and (known[1] is None or known[1] > ahead):
                nxt = known[1]
            else:
                times = engine.next_times(job, 1, after=now)
                nxt = to_epoch(times[0][0]) if times else None
                self._next[job_id] = (job, nxt)
            if nxt is None:
                out.append(Finding("unplanned", "its schedules have no due time after now (a calendar or a "
                                                "list of times ran out): no run will be planned", job_id))
            elif nxt <= ahead and not store.has_pending_run(job_id):
                out.append(Finding("unplanned", f"due at {to_iso(nxt)}, but no run is planned for it", job_id))
        return out


# -- runs in flight and processes, from the run folders and /proc -------------------------


def _program_alive(info) -> bool:
    """Whether the program pid.json names is that very process, still running."""
    try:
        status = process_status(int(info["pid"]))
    except (KeyError, TypeError, ValueError):
        return False
    return status is not None and info.get("start_time") is not None and status[2] == info["start_time"]


def lost(store, launcher, limit) -> list:
    """Runs recorded as running or stopping whose shepherd or program is gone, with no result.

    Their reason is given now; the checker reports them only once the state
    has lasted longer than the sweep takes to notice a shepherd that vanished.
    """
    out = []
    for run in store.runs_in_states(["running", "stopping"], limit=ACTIVE_LIMIT):
        rid = run.run_id
        if (run.meta or {}).get("in_server") or launcher.result(rid) is not None:
            continue  # in this process; or over, and about to be recorded
        run_dir = launcher.run_dir(rid)
        shepherd = agent.read_json(run_dir, agent.SHEPHERD) or {}
        info = launcher.pid_info(rid)
        program = f"its program (pid {info.get('pid')})" if info else "its program"
        if not launcher.is_alive(rid):
            why = (f"recorded as {run.state}, but its shepherd is gone and left no result; "
                   + (f"{program} still runs" if info and _program_alive(info) else f"{program} is gone too"))
        elif info is not None and not _program_alive(info):
            status = process_status(int(shepherd["pid"])) if shepherd.get("pid") else None
            stopped = " is stopped (SIGSTOP) and" if status is not None and status[0] == "T" else ""
            why = (f"recorded as {run.state}, but {program} is gone and its shepherd"
                   f" (pid {shepherd.get('pid', '?')}){stopped} has not recorded a result")
        else:
            continue
        out.append(Finding("lost", why, run.job_id, rid))
        if len(out) >= limit:
            break
    return out


def _boot_time() -> float:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0.0


def _command_line(pid) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            words = f.read(400).rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    text = " ".join(w.decode("utf-8", "replace") for w in words)
    return text if len(text) <= 60 else text[:57] + "..."


def orphans(store, limit, pause=lambda: None) -> list:
    """Processes of runs that have finished: found by the ``APSIS_RUN_ID`` in their
    environment, and proved to be the run's own by their session (the program's
    pid, recorded when it started) and their start time (after the run's start)."""
    # Command actions set APSIS_EVENT: theirs are not a run's processes.
    found = processes_with_env("APSIS_RUN_ID", without="APSIS_EVENT", pause=pause)
    by_run = {}
    for text, pids in found.items():
        try:
            by_run[parse_run_id(text)] = pids
        except Exception:
            continue
    ids = sorted(by_run)[-ACTIVE_LIMIT:]
    runs = store.runs_by_ids(ids) if ids else {}
    boot, tick = _boot_time(), os.sysconf("SC_CLK_TCK")
    out = []
    for rid in ids:
        run = runs.get(rid)
        if run is None or run.state not in FINISHED or not (run.meta or {}).get("pid"):
            continue
        session = int(run.meta["pid"])
        began = min(run.times.get("starting", math.inf), run.times.get("running", math.inf))
        mine = []
        for pid in by_run[rid]:
            status = process_status(pid)
            if status is None or status[1] != session:
                continue
            if boot and boot + status[2] / tick < began - 2.0:
                continue  # older than the run: not its process (a pid reused for a session)
            mine.append(pid)
        if not mine:
            continue
        listed = ", ".join(f"pid {p}: {_command_line(p)}" for p in mine[:5]) + (", ..." if len(mine) > 5 else "")
        ended = run.times.get(run.state, run.time_updated)
        out.append(Finding("orphan", f"{len(mine)} process{'es' if len(mine) != 1 else ''} of this run still "
                                     f"run{'s' if len(mine) == 1 else ''} ({listed}), though it ended {run.state} "
                                     f"at {to_iso(ended)}; 'kill -- -{session}' ends its process group",
                           run.job_id, rid, details={"pids": mine}))
        if len(out) >= limit:
            break
    return out

"""What waiting runs wait for: the index of wake-ups, resource slots, the
context conditions read through, and checking a run's conditions.

Nothing here scans: a waiting run is filed under the keys its blocking
condition names (``conditions.Verdict.keys``), and is checked again only
when the engine hears that something under one of those keys changed.
"""

import dataclasses
import logging
import threading
import time
from collections import defaultdict

from apsis_lite.errors import StoreUnavailable
from apsis_lite.model.conditions import OK, Verdict, describe_runs, parse_condition
from apsis_lite.model.runs import format_run_id
from apsis_lite.timeutil import format_duration, to_iso

log = logging.getLogger("apsis_lite.engine")

# A condition that does not hold, names nothing to watch and sets no poll
# interval is still checked again this often: no run waits unseen forever.
DEFAULT_RECHECK = 60.0

# A check slower than this is logged: checks run in the engine's loop.
SLOW_CHECK = 0.5


class WaitIndex:
    """Which waiting runs to check again when a key changes; safe across threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_key = defaultdict(set)
        self._keys_of = {}

    def __len__(self):
        return len(self._keys_of)

    def add(self, run_id, keys):
        """File ``run_id`` under ``keys`` (replacing what it was filed under)."""
        with self._lock:
            self._remove(run_id)
            if keys:
                self._keys_of[run_id] = tuple(keys)
                for key in keys:
                    self._by_key[key].add(run_id)

    def remove(self, run_id):
        with self._lock:
            self._remove(run_id)

    def _remove(self, run_id):
        for key in self._keys_of.pop(run_id, ()):
            ids = self._by_key.get(key)
            if ids is not None:
                ids.discard(run_id)
                if not ids:
                    del self._by_key[key]

    def pop(self, key) -> set:
        """The runs filed under ``key``, taken out of the index entirely."""
        with self._lock:
            ids = self._by_key.pop(key, set())
            for rid in ids:
                self._remove(rid)
            return ids

    def keys_of(self, run_id):
        return self._keys_of.get(run_id, ())


def resource_wants(conditions) -> dict:
    """``{name: slots}`` a run's bound conditions ask for."""
    wants = {}
    for c in conditions or ():
        if c.get("type") == "resource":
            wants[c["name"]] = wants.get(c["name"], 0) + int(c.get("slots", 1))
    return wants


class Resources:
    """Slots of named resources held by active runs (in memory; rebuilt at recovery)."""

    def __init__(self, capacities):
        self._lock = threading.Lock()
        self.capacities = dict(capacities or {})
        self.used = defaultdict(int)
        self.held = {}  # run_id -> {name: slots}

    def capacity(self, name) -> int:
        return self.capacities.get(name, 1)

    def holders(self, name) -> list:
        return sorted(rid for rid, w in self.held.items() if name in w)

    def check(self, run_id, wants) -> Verdict:
        """Whether ``wants`` fit now; does not take them."""
        for name, slots in sorted(wants.items()):
            cap = self.capacity(name)
            if slots > cap:
                return Verdict(False, f"needs {slots} slots of resource {name}, which has {cap}",
                               finish="error")
        busy = [(name, slots) for name, slots in sorted(wants.items())
                if self.used[name] - self.held.get(run_id, {}).get(name, 0) + slots > self.capacity(name)]
        if not busy:
            return OK
        parts = []
        for name, slots in busy:
            holders = ", ".join(format_run_id(r) for r in self.holders(name) if r != run_id)
            parts.append(f"resource {name} (needs {slots}; {self.used[name]} of {self.capacity(name)} "
                         f"held by {holders or 'runs started by hand'})")
        return Verdict(False, "waiting for " + " and ".join(parts),
                       keys=tuple(("resource", name) for name, _ in busy))

    def take(self, run_id, wants):
        """Hold ``wants`` for ``run_id``, even beyond capacity (a run started by hand)."""
        if not wants:
            return
        with self._lock:
            self._release(run_id)
            self.held[run_id] = dict(wants)
            for name, slots in wants.items():
                self.used[name] += slots

    def release(self, run_id) -> list:
        """Free what ``run_id`` holds; the names freed."""
        with self._lock:
            return self._release(run_id)

    def _release(self, run_id):
        wants = self.held.pop(run_id, None) or {}
        for name, slots in wants.items():
            self.used[name] -= slots
        return list(wants)


class StoreContext:
    """What conditions may ask about other runs and jobs, read from the store."""

    def __init__(self, store, find_job):
        self._store = store
        self._find_job = find_job

    def runs_of(self, job_id, args, states, exclude=None, limit=None):
        return self._store.runs_of(job_id, args, states, exclude=exclude, limit=limit)

    def rerun_group(self, group_id):
        return self._store.rerun_group(group_id)

    def params_of(self, job_id):
        """The params of a loaded job, or None if there is no such job."""
        job = self._find_job(job_id)
        return None if job is None else job.params


def check_conditions(run, ctx, resources, all_of=False):
    """Check a run's conditions in order, then its resources.

    Returns the first verdict that does not hold, or OK. With ``all_of``,
    returns every (condition jso, verdict) instead (for explanations); a
    condition after one that fails is still checked there.
    """
    results = []
    for jso in run.conditions or ():
        if jso.get("type") == "resource":
            continue
        verdict = check_condition(jso, run, ctx)
        if not all_of and not verdict.ok:
            return verdict
        results.append((jso, verdict))
    wants = resource_wants(run.conditions)
    if wants:
        verdict = resources.check(run.run_id, wants)
        if not all_of:
            return verdict
        results.append(({"type": "resource", "resources": wants}, verdict))
    return results if all_of else OK


def check_condition(jso, run, ctx) -> Verdict:
    """One bound condition's verdict; whatever the condition does, a Verdict.

    One that raises or returns something else sends the run to error, but
    a StoreUnavailable from the store it reads goes on: that is no fault of
    the condition nor of the run. One that does not hold and names nothing
    to watch is checked again after its poll interval (or DEFAULT_RECHECK).
    """
    kind = jso.get("type")
    started = time.monotonic()
    try:
        condition = parse_condition(jso)
        verdict = condition.check(run, ctx)
    except StoreUnavailable:  # the database failed, not the condition: the engine waits it out
        raise
    except Exception as exc:  # a bound condition that no longer parses or checks
        log.warning("condition %r of run %s raised", kind, format_run_id(run.run_id), exc_info=True)
        return Verdict(False, f"condition {kind!r} cannot be checked: {type(exc).__name__}: {exc}",
                       finish="error")
    took = time.monotonic() - started
    if took > SLOW_CHECK:
        log.warning("condition %r took %.1f s to check (checks run in the engine's loop: keep them quick)",
                    kind, took)
    if not isinstance(verdict, Verdict):
        return Verdict(False, f"condition {kind!r} cannot be checked: its check returned "
                              f"{type(verdict).__name__}, not a Verdict", finish="error")
    if not verdict.ok and not verdict.keys and verdict.finish is None and verdict.recheck is None:
        verdict = dataclasses.replace(verdict, recheck=condition.poll_interval or DEFAULT_RECHECK)
    return verdict


def describe_condition(jso) -> str:
    """A condition as a short phrase for explanations."""
    kind = jso.get("type")
    if kind == "max_running":
        return f"max_running {jso.get('count')}"
    if kind == "dependency":
        return f"dependency on {describe_runs(jso.get('job_id'), jso.get('args') or {})}"
    if kind == "skip_duplicate":
        return "skip_duplicate"
    if kind == "resource":
        return "resources " + ", ".join(f"{n} ({s})" for n, s in jso.get("resources", {}).items())
    return str(kind)



def _ago(seconds) -> str:
    return format_duration(abs(seconds))


def explain_run(run, ctx, resources, now, *, max_time=None, reruns=None) -> dict:
    """Why ``run`` is in its state, as ``{"run_id", "state", "summary", "lines", ...}``.

    ``summary`` is one sentence; ``lines`` add detail (each condition of a
    waiting run, checked now; the rerun group of a finished one).
    """
    state, times, lines = run.state, run.times, []
    extra = {}
    if state == "scheduled":
        t = run.time_schedule
        when = f"in {_ago(t - now)}" if t > now else f"due {_ago(now - t)} ago"
        summary = f"scheduled for {to_iso(t)} ({when})"
        if run.conditions:
            lines.append("then it checks its conditions: "
                         + "; ".join(describe_condition(c) for c in _grouped(run.conditions)))
    elif state == "waiting":
        since = times.get("waiting", run.time_schedule)
        results = check_conditions(run, ctx, resources, all_of=True)
        blocking = next((v for _, v in results if not v.ok), None)
        summary = (blocking.reason if blocking else "its conditions hold; it starts on the engine's next pass")
        lines.append(f"waiting since {to_iso(since)} ({_ago(now - since)})")
        for i, (jso, verdict) in enumerate(results, 1):
            lines.append(f"{i}. {describe_condition(jso)}: "
                         + ("holds" if verdict.ok else verdict.reason))
        extra["conditions"] = [{"condition": jso, "holds": v.ok, "reason": v.reason or None}
                               for jso, v in results]
        if max_time:
            lines.append(f"goes to error at {to_iso(since + max_time)} if still waiting "
                         f"(waiting max_time {format_duration(max_time)})")
    elif state in ("starting", "running", "stopping"):
        since = times.get(state, run.time_updated or now)
        summary = f"{state} since {to_iso(since)} ({_ago(now - since)})"
        if run.meta.get("pid"):
            summary += f", pid {run.meta['pid']}"
        held = resources.held.get(run.run_id)
        if held:
            lines.append("holds " + ", ".join(f"{s} slot{'s' if s > 1 else ''} of {n}" for n, s in held.items()))
    else:
        at = times.get(state, run.time_updated or now)
        summary = f"{state} at {to_iso(at)}" + (f": {run.message}" if run.message else "")
    if run.host:
        lines.append(f"sent to remote host {run.host}")
    rerun = run.meta.get("rerun")
    if rerun:
        lines.append(f"automatic rerun {rerun['try']} of {rerun['count']}")
    group = ctx.rerun_group(run.rerun_group or run.run_id)
    if len(group) > 1:
        place = next(i for i, r in enumerate(group, 1) if r.run_id == run.run_id)
        latest = group[-1]
        lines.append(f"try {place} of {len(group)} in rerun group {format_run_id(group[0].run_id)}; "
                     f"the latest, {format_run_id(latest.run_id)}, is {latest.state}")
    if reruns and state in reruns.states:
        lines.append(f"the job reruns {', '.join(reruns.states)} up to {reruns.count} times")
    return {"run_id": format_run_id(run.run_id), "state": state, "summary": summary,
            "lines": lines, **extra}


def _grouped(conditions):
    """Conditions for display, a run's resources folded into one entry."""
    out = [c for c in conditions if c.get("type") != "resource"]
    wants = resource_wants(conditions)
    if wants:
        out.append({"type": "resource", "resources": wants})
    return out

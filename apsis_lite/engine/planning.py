"""Planning: the runs of schedule slots, created up to the horizon, and catch-up after downtime.

Each job's horizon (stored, so that it outlives a restart) says up to when
its slots have runs; a heap says when each job next needs planning. A slot's
identity is its job, nominal time and args, so a slot gets exactly one run.
"""

import functools
import heapq
import itertools
import logging
import math
import time

from apsis_lite.engine.faults import raise_if_fault
from apsis_lite.errors import BadRequest
from apsis_lite.model import jobs as jobs_mod
from apsis_lite.model.runs import dumps
from apsis_lite.model.schedules import jitter_offset
from apsis_lite.timeutil import format_duration, from_epoch, to_iso

# The engine's log lines keep the logger name they had when it was one module.
log = logging.getLogger("apsis_lite.engine")

# How far one planning step extends one job's slots.
PLAN_STEP = 10.0

# Seconds of planning per pass before due runs get their turn again.
PLAN_BUDGET = 0.02


def slot_key(t: float, args: dict) -> str:
    """The identity of a scheduled slot within its job: instant and args."""
    return f"{round(t * 1_000_000)}|{dumps(args)}"


class Planner:
    """Owns the planning heap and each job's horizon.

    A planned run is filed as due with ``starter``, its stop time with
    ``stopper``, its deadline with ``alarms``; ``folders`` retires the folder
    of a run unplanned.
    """

    def __init__(self, config, store, catalog, starter, stopper, alarms, folders):
        self.config = config
        self.store = store
        self._catalog = catalog
        self._starter = starter
        self._stopper = stopper
        self._alarms = alarms
        self._folders = folders
        self._plan = []         # heap of (when the job next needs planning, seq, job_id)
        self._seq = itertools.count()
        self._horizons = {}     # job_id -> epoch up to which slots exist in the store

    def reset(self):
        self._plan, self._horizons = [], {}

    def load(self, horizons, now):
        """Take the stored ``horizons`` and queue every job for planning from its own."""
        self._horizons = horizons
        for job_id in self._catalog.jobs:
            if not self._catalog.is_broken(job_id):
                self._queue(job_id, self._horizons.get(job_id, now))

    def next_wake(self):
        return self._plan[0][0] if self._plan else math.inf

    def _queue(self, job_id, start):
        """Plan a job from ``start``; ``_plan`` is keyed by when a job next needs planning."""
        self._horizons.setdefault(job_id, start)
        heapq.heappush(self._plan, (start - self.config.horizon, next(self._seq), job_id))

    def replan(self, added, changed, touched, now):
        """Queue the added and changed jobs again, and drop the ``touched`` jobs' old entries.

        Each job keeps exactly one entry, before the engine has started too:
        start-up plans every job, but a reload may come while it is under way
        (it yields when it starts runs), after it has queued the jobs it found.
        """
        self._plan = [e for e in self._plan if e[2] not in touched]
        heapq.heapify(self._plan)
        for job_id in added:
            # A job new to this server starts from now, or from where an
            # earlier server left its slots (their runs exist already).
            start = max(self._horizons.get(job_id, now), now)
            self._horizons[job_id] = start
            self._queue(job_id, start)
        for job_id in changed:
            self._queue(job_id, self._horizons.get(job_id, now))

    def unplan(self, job_id, now, why):
        """Skip a job's runs scheduled for slots from now on and move its horizon back to now.

        The skipped runs give up their slot (kept in their meta), so that
        planning again creates each slot exactly once, with the new binding;
        in one transaction with the horizon, so that a restart sees either
        the old runs and horizon or neither.
        """
        start = min(self._horizons.get(job_id, now), now)
        count = 0
        for run in self.store.scheduled_slot_runs(job_id, start):
            if self.store.transition(run.run_id, "scheduled", "skipped", now, why,
                                     slot=None, meta={"slot": run.slot}):
                self._folders.discard(run.run_id)
                count += 1
        self._horizons[job_id] = start
        self.store.set_horizon(job_id, start)
        return count

    def plan_due(self, now, budget=PLAN_BUDGET):
        """Create runs for the slots of jobs whose next slot is less than half a horizon ahead.

        Each job is extended PLAN_STEP at a time, earliest slots first, up to
        ``now + horizon``: after a start-up with many frequent jobs, every
        job gets its next slots before any job gets distant ones. Returns
        False if it stopped after ``budget`` seconds with work left: planning
        happens half a horizon ahead, so it can wait for the next pass, while
        a run due now cannot wait behind it. Each pass is one transaction: a
        commit per job would cost an fsync each.
        """
        target = now + self.config.horizon
        deadline = time.monotonic() + budget
        with self.store.write():
            while self._plan and self._plan[0][0] <= now:
                _, _, job_id = heapq.heappop(self._plan)
                job = self._catalog.jobs.get(job_id)
                if job is not None and not self._catalog.is_broken(job_id):
                    start = self._horizons.get(job_id, now)
                    end = min(target, max(start, now) + PLAN_STEP)
                    nxt = self._plan_job_confined(job, start, end, now, target)
                    if nxt is not None:
                        # Short of the target: again in this pass, after the
                        # jobs planned less far. Otherwise: when its next slot
                        # is half a horizon away.
                        planned = self._horizons[job_id]
                        key = (planned - self.config.horizon if planned < target
                               else nxt - self.config.horizon / 2)
                        heapq.heappush(self._plan, (key, next(self._seq), job_id))
                if time.monotonic() > deadline:
                    return not (self._plan and self._plan[0][0] <= now)
        return True

    def _plan_job_confined(self, job, start, end, now, limit):
        """``_plan_job`` in a savepoint: a job whose planning raises is marked
        broken (its changes undone) and the other jobs go on; returns None for it."""
        try:
            with self.store.atomic():
                return self._plan_job(job, start, end, now, limit)
        except Exception as exc:
            raise_if_fault(exc)
            log.debug("planning %s failed", job.job_id, exc_info=True)
            self._catalog.break_job(job.job_id, f"planning its runs failed: {type(exc).__name__}: {exc}")
            return None

    def _plan_job(self, job, start, end, now, limit):
        """Insert runs for the job's slots in [start, end); returns its next slot time after that.

        The job's horizon moves to ``end``, or on to its next slot (at most
        ``limit``) when nothing lies between: a daily job is planned in one
        step, not in PLAN_STEP pieces of empty time.
        """
        slots, nxt = [], None
        for sched in job.schedules:
            if not sched.enabled:
                continue
            for t, sargs in sched.times(from_epoch(start)):
                te = t.timestamp()
                if te >= end:
                    nxt = te if nxt is None else min(nxt, te)
                    break
                slots.append((te, t, sargs, sched))
        slots.sort(key=lambda s: s[0])
        horizon = end if nxt is None else max(end, min(nxt, limit))
        with self.store.write():
            for te, t, sargs, sched in slots:
                self._create_slot_run(job, te, sargs, now, nominal=t, sched=sched)
            self.store.set_horizon(job.job_id, horizon)
        self._horizons[job.job_id] = horizon
        return nxt

    def _create_slot_run(self, job, te, sargs, now, nominal=None, sched=None):
        """Insert the run of one slot at nominal time ``te``.

        The slot's identity is its nominal time; the run is due after its
        schedule's jitter, and carries its stop time when the schedule has one.
        """
        meta = {}
        if sched is not None and nominal is not None:
            if sched.jitter:
                offset = jitter_offset(job.job_id, nominal, sched.jitter)
                meta["jitter"] = round(offset, 6)
            if sched.stop is not None:
                meta["stop_at"] = sched.stop.stop_time(nominal).timestamp()
        try:
            args = jobs_mod.args_from_schedule(job, sargs)
        except BadRequest as exc:
            # Loading already checks that each schedule fills every param;
            # should one not, the slot still gets its run, in error.
            self.store.insert_run(job.job_id, {}, "error", te, now, slot=slot_key(te, {}), message=str(exc))
            return
        slot = slot_key(te, args)
        if job.catch_up is None and te < now - self.config.max_age:
            self.store.insert_run(
                job.job_id, args, "skipped", te, now, slot=slot,
                message=(f"missed: due at {to_iso(te)} while the server was down, older than "
                         f"max_age ({format_duration(self.config.max_age)})"))
            return
        try:
            bound = jobs_mod.bind(job, args)
        except BadRequest as exc:
            self.store.insert_run(job.job_id, args, "error", te, now, slot=slot, message=str(exc))
            return
        due = te + meta.get("jitter", 0.0)
        run = self.store.insert_run(job.job_id, args, "scheduled", due, now, slot=slot, meta=meta, **bound)
        if run is not None:
            self.store.after_commit(functools.partial(self._starter.push_due, due, run.run_id))
            self.store.after_commit(functools.partial(self._stopper.push_stop, run))
            self._alarms.arm_deadline(job, run, now)

    def catch_up(self, now, when="while the server was down"):
        """Apply each job's ``catch_up`` to the slots it missed (``when``: while what).

        Plans every missed slot (so each is recorded), then keeps the
        latest ones the job asks for due now and skips the rest, saying why.
        Jobs without ``catch_up`` follow the global max_age rule instead.
        """
        for job_id, job in self._catalog.jobs.items():
            policy = job.catch_up
            horizon = self._horizons.get(job_id)
            if policy is None or horizon is None or self._catalog.is_broken(job_id):
                continue
            if horizon < now:
                self._plan_job_confined(job, horizon, now, now, now)
                if self._catalog.is_broken(job_id):
                    continue
            missed = self.store.missed_slot_runs(job_id, now)
            if not missed:
                continue
            keep = {"none": 0, "latest": 1}.get(policy["missed"], policy.get("max") or len(missed))
            skip = missed[:len(missed) - keep]
            rule = {"none": "catch_up: missed: none runs none of them",
                    "latest": "catch_up: missed: latest runs only the latest",
                    }.get(policy["missed"], f"catch_up: missed: all runs at most the latest {keep}")
            for run in skip:
                self.store.transition(
                    run.run_id, "scheduled", "skipped", now,
                    f"missed: due at {to_iso(run.time_schedule)} {when}; {rule}")
            for run in missed[len(skip):]:
                self.store.log(run.run_id, now, f"missed {when}; running it now ({rule})")

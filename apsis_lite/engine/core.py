"""The scheduler engine: plans slots, starts due runs, collects finished ones.

``Engine.tick(now)`` does one pass and returns the time it next wants to be
woken; the loop in ``serve_forever`` only calls it and waits on an event, so
tests drive the engine with explicit times. Operations from the API, pages
and CLI (``submit``, ``start``, ``skip``, ``stop``, ``signal``, ``rerun``,
``mark``) are methods here too: every state change goes through the same
compare-and-set store transition, committed before it is acted on.
"""

import contextlib
import errno
import functools
import heapq
import itertools
import logging
import os
import secrets
import threading
import time
from collections import deque

from apsis_lite.model import jobs as jobs_mod
from apsis_lite.agent import dropped_marker
from apsis_lite.errors import ApsisError, BadRequest, JobFileError, NotFound, StoreUnavailable, TransitionError
from apsis_lite.engine.health import Backoff, Health
from apsis_lite.model.pauses import GLOBAL, Pause, pausable, pause_of
from apsis_lite.model.programs import parse_program
from apsis_lite.model.runs import ACTIVE, FINISHED, dumps, format_run_id, parse_state
from apsis_lite.model.schedules import jitter_offset
from apsis_lite.timeutil import format_duration, from_epoch, to_iso
from apsis_lite.engine.waiting import Resources, StoreContext, WaitIndex, check_conditions, explain_run, resource_wants

log = logging.getLogger(__name__)

# A spec not claimed by a shepherd after this long is asked for again (the
# claim rename makes a second request harmless).
RELAUNCH_AFTER = 5.0

# How far one planning step extends one job's slots.
PLAN_STEP = 10.0

# Seconds of planning per pass before due runs get their turn again.
PLAN_BUDGET = 0.02

# How early the engine's timer fires before a due time, and how it waits
# the rest; see _sleep_until.
WAKE_EARLY = 0.005
FINE_STEP = 0.0005

# Meta key: run ids below it had finished and been reacted to at the last checkpoint.
LOW_WATER_KEY = "reacted_low_water"

# Meta key: the machine's boot id when the server last started (see _reconcile).
BOOT_KEY = "boot_id"

# How long before its due time a run's folder and spec are written. A folder
# made new (no spare to recycle) costs six file creations, up to a few ms on a
# slow file system: enough lead for a thousand runs due together.
PREPARE_AHEAD = 3.0

# Runs handed to the agent at a time: the first program of a big batch
# starts after this many specs are written, not after all of them.
LAUNCH_CHUNK = 16


# Errors of the data folder's disk: like a failed commit, they say nothing
# about the run at hand, so the engine waits and tries again.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def disk_fault(exc):
    """StoreUnavailable for an OSError of the disk itself (full, read-only, failing); else None."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return StoreUnavailable(f"the data folder cannot be written: {exc.strerror}"
                                + (f" ({exc.filename})" if exc.filename else ""))
    return None


def raise_if_fault(exc):
    """Re-raise ``exc`` (as StoreUnavailable) if the database or its disk failed.

    Such a failure says nothing about the run or job at hand: it fails the
    whole pass, which is tried again. Any other error is that item's own.
    """
    if isinstance(exc, StoreUnavailable):
        raise exc
    fault = disk_fault(exc)
    if fault is not None:
        raise fault from exc


def slot_key(t: float, args: dict) -> str:
    """The identity of a scheduled slot within its job: instant and args."""
    return f"{round(t * 1_000_000)}|{dumps(args)}"


class Engine:
    """Owns scheduling and every run state change."""

    def __init__(self, config, store, launcher, clock=time.time, since_now=False):
        self.config = config
        self.store = store
        self.launcher = launcher
        self.clock = clock
        self.since_now = since_now
        self.jobs = {}
        self._load_errors = []  # job files that failed to load
        self._broken = {}       # job_id -> why its planning failed; not planned until its file changes
        self.calendars = None  # the calendar library job files were loaded with (for ad hoc jobs)
        self._job_errors_by_id = {}
        self._due = []          # heap of (time_schedule, run_id) for runs in 'scheduled'
        self._unprepared = []   # the same runs, until their run folder is written ahead of time
        self._prepared = set()  # run ids whose spec is already on disk
        self._plan = []         # heap of (when the job next needs planning, seq, job_id)
        self._seq = itertools.count()
        self._horizons = {}     # job_id -> epoch up to which slots exist in the store
        self._notices = deque()  # ("running"|"done", run_id) from shepherds
        self._wake = threading.Event()
        self._next_sweep = 0.0
        self._next_checkpoint = 0.0
        self.started = False
        # How a pass that left work for the next (planning, folders to write)
        # yields; the service makes it "until the event loop is idle", so that a
        # web request is answered whole between two passes, not a step per pass.
        self.yield_busy = lambda: time.sleep(0)
        self._rebooted = False  # since the server last started (set by recover)
        # Waiting runs (see the "waiting" section): what each waits for, the
        # resource slots held, state changes to react to, give-up times.
        self._waits = WaitIndex()
        self._resources = Resources(config.resources)
        self._changes = deque()
        self._wait_deadlines = []   # heap of (time, run_id): waiting.max_time
        self._has_deadline = set()
        self._stops = []            # heap of (time, run_id): stop schedules
        self._in_tick = False
        # Pauses and alarms (see the "pauses, deadlines" section).
        self._pauses = {}           # scope ('' global, else job id) -> Pause
        self._pause_changes = deque()  # scopes set or lifted since the last pass
        self._alarms = []           # heap of (time, kind, run_id): deadlines, max_duration
        self._alarm_listeners = []
        self._alarmed = set()       # run ids whose max_duration alarm was reported; dropped when they finish
        self._any_max_duration = False
        # Health, and what a failed transaction left to do: memory may be
        # ahead of the database until it is read again (see _resync).
        # The engine passes at least every sweep_interval, even when idle.
        self.health = Health(max_pass_age=max(30.0, 3 * config.sweep_interval))
        self._backoff = Backoff()
        self._resync_pending = False
        self._faults_seen = store.faults
        self._boot = None
        # In-server programs (extensions' ServerProgram types): the runner,
        # made when first needed, and results not yet recorded.
        self._inserver = None
        self._inserver_results = {}
        self._rechecks = []         # heap of (time, run_id): polled conditions to check again
        self._load_pauses()
        store.add_listener(self._on_change)

    # -- jobs ------------------------------------------------------------------

    def set_jobs(self, jobs, errors):
        """Install the loaded jobs (and their load errors); once started, re-plan what changed.

        A changed job's runs still scheduled for its future slots are skipped
        (their slots released) and its slots planned again from its new
        schedules; a removed job's are skipped and it plans no more; an added
        job is planned from now. Runs already waiting or beyond keep what
        they were bound with. Returns ``{"added", "changed", "removed"}``
        (job ids) and ``"skipped_runs"`` (how many were cancelled).
        """
        old, new = self.jobs, dict(jobs)
        added = sorted(j for j in new if j not in old)
        removed = sorted(j for j in old if j not in new)
        changed = sorted(j for j in new if j in old and new[j] is not old[j]
                         and _planning_form(new[j]) != _planning_form(old[j]))
        summary = {"added": added, "changed": changed, "removed": removed, "skipped_runs": 0}
        now = self.clock()
        if self.started and (changed or removed):
            # On disk first: if this fails (a full disk), the engine keeps the
            # jobs it had, and the next reload finds the same changes to make.
            with self.store.write():
                for job_id in changed + removed:
                    why = "job file changed; re-planned" if job_id in new else "job file deleted"
                    summary["skipped_runs"] += self._unplan(job_id, now, why)
        self.jobs = new
        self._any_max_duration = any(j.max_duration for j in self.jobs.values())
        self._load_errors = list(errors)
        self._job_errors_by_id = {}
        for err in self._load_errors:
            self._job_errors_by_id.setdefault(self._job_id_of(err.path), []).append(err)
        for job_id in (*added, *removed, *changed):
            self._broken.pop(job_id, None)  # a new file gets a new chance
        touched = set(added) | set(changed) | set(removed)
        if not touched:
            return summary
        # Drop the touched jobs' planning entries: each job keeps exactly one.
        # Before the engine has started too: recover() plans every job, but
        # this may come while it is under way (it yields when it starts runs),
        # when it has queued the jobs it found and must keep them.
        self._plan = [e for e in self._plan if e[2] not in touched]
        heapq.heapify(self._plan)
        for job_id in added:
            # A job new to this server starts from now, or from where an
            # earlier server left its slots (their runs exist already).
            start = max(self._horizons.get(job_id, now), now)
            self._horizons[job_id] = start
            self._queue_plan(job_id, start)
        for job_id in changed:
            self._queue_plan(job_id, self._horizons.get(job_id, now))
        self.wake()
        return summary

    def _unplan(self, job_id, now, why):
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
                self._discard_prepared(run.run_id)
                count += 1
        self._horizons[job_id] = start
        self.store.set_horizon(job_id, start)
        return count

    @property
    def job_errors(self) -> list:
        """Job files that failed to load, then jobs whose planning failed (broken until their file changes)."""
        broken = [JobFileError(self.jobs[j].path or j, "schedule",
                               f"cannot be scheduled: {why}; no runs are planned until the file changes")
                  for j, why in sorted(self._broken.items()) if j in self.jobs]
        return self._load_errors + broken

    def broken(self, job_id):
        """Why a job cannot be scheduled (its planning failed), or None."""
        return self._broken.get(job_id)

    def _break_job(self, job_id, why):
        """Stop planning a job whose planning raised; the rest of the jobs go on."""
        self._broken[job_id] = why
        log.error("job %s cannot be scheduled: %s; no runs are planned until its file changes", job_id, why)

    def _job_id_of(self, path):
        rel = os.path.relpath(path, self.config.jobs_dir)
        return os.path.splitext(rel)[0].replace(os.sep, "/")

    def get_job(self, job_id):
        """A job from the jobs folder, or an ad hoc job stored in the database."""
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        stored = self.store.get_adhoc_job(job_id)
        if stored is None:
            errors = self._job_errors_by_id.get(job_id)
            if errors:
                raise NotFound(f"job {job_id!r} failed to load: " + "; ".join(str(e) for e in errors))
            raise NotFound(f"no job {job_id!r}")
        return jobs_mod.job_from_jso(stored["job"], job_id, adhoc=stored["literal"], calendars=self.calendars,
                                     min_interval=None)

    def next_times(self, job, count=10, after=None):
        """The next ``count`` due times of a job, with the args each run will get (computed, not stored)."""
        if job.job_id in self._broken and self.jobs.get(job.job_id) is job:
            return []
        start = from_epoch(after if after is not None else self.clock())
        merged = heapq.merge(*(s.times(start) for s in job.schedules if s.enabled),
                             key=lambda ta: ta[0])
        try:
            return [(t, jobs_mod.args_from_schedule(job, a)) for t, a in itertools.islice(merged, count)]
        except Exception as exc:  # a schedule that raises: the job cannot be planned either
            if self.jobs.get(job.job_id) is job:
                self._break_job(job.job_id, f"computing its due times failed: {type(exc).__name__}: {exc}")
            return []

    # -- the loop ----------------------------------------------------------------

    def wake(self):
        self._wake.set()

    def notice(self, kind, run_id):
        """A shepherd said a run is running or done (called from the notify server)."""
        self._notices.append((kind, run_id))
        self.wake()

    def serve_forever(self, stop_event):
        """Recover, then pass until ``stop_event`` is set.

        A pass that fails is tried again after a delay that doubles up to a
        cap, never in a tight loop; one that fails because the database
        cannot be written (a full disk) first reads the engine's state back
        from the database, since the failed transaction was rolled back.
        """
        self.health.engine_started()
        reason = "the server is stopping"
        try:
            while not stop_event.is_set():
                self._sleep_until(self._guarded_pass())
        except BaseException as exc:
            reason = f"it failed: {type(exc).__name__}: {exc}"
            raise
        finally:
            self.health.engine_stopped(reason)

    def _guarded_pass(self):
        """Recover or resync if needed, then one pass; returns when to wake next."""
        now = self.clock()
        try:
            if not self.started:
                self.recover()
            elif self._resync_pending or self.store.faults != self._faults_seen:
                self._resync()
            wake_at = self.tick(self.clock())
        except StoreUnavailable as exc:
            self._resync_pending = True
            delay = self._backoff.next()
            self.health.storage_failed(str(exc))
            return now + delay
        except Exception as exc:  # a fault confined to nothing smaller: the whole pass
            delay = self._backoff.next()
            log.exception("engine pass failed; trying again in %s", format_duration(delay))
            self.health.pass_failed(f"{type(exc).__name__}: {exc}")
            return now + delay
        self._backoff.reset()
        self.health.pass_done()
        return wake_at

    def _sleep_until(self, wake_at):
        """Wait until ``wake_at`` or a wake-up, to well under a millisecond.

        Event loop timers fire a few ms late (their clock is cached and
        rounded to milliseconds), so the wait ends WAKE_EARLY ahead; the rest
        is spent in short sleeps of FINE_STEP, then, for the last fraction of a
        millisecond, yielding to other greenlets until the time comes. (Only
        yielding, for all of WAKE_EARLY, cost up to 5 ms of CPU per due
        instant: half a core with 100 distinct instants a second.)
        """
        delay = wake_at - self.clock()
        if delay > WAKE_EARLY:
            self._wake.wait(min(delay - WAKE_EARLY, 60.0))
        elif delay <= 0:
            # A busy pass (planning with its budget used up) lets the web
            # server and notices in before the next one.
            self.yield_busy()
        while not self._wake.is_set() and (left := wake_at - self.clock()) > 0:
            # Under gevent both let web requests and notices in.
            time.sleep(FINE_STEP if left > 2 * FINE_STEP else 0)
        self._wake.clear()

    def tick(self, now):
        """One pass: notices, due runs, planning, the sweep; returns when to wake next."""
        self._in_tick = True
        try:
            return self._tick(now)
        finally:
            self._in_tick = False
            if self._changes:  # made by another thread after this pass looked
                self.wake()

    def _tick(self, now):
        self._handle_notices()
        self._record_inserver(now)
        self._recheck_polled(now)
        self._process_changes(now)
        self._release_paused(now)
        self._expire_waiting(now)
        self._fire_alarms(now)
        self._stop_due(now)  # first: a run whose stop time has passed must not start
        self._start_due(now)
        planned_all = self._plan_due(now)
        self._start_due(now)
        prepared_all = self._prepare_soon(now)
        if now >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = now + self.config.sweep_interval
        save_low_water = now >= self._next_checkpoint
        if save_low_water:
            if self._next_checkpoint:
                try:
                    self.store.checkpoint()
                except StoreUnavailable as exc:  # the WAL grows meanwhile; commits still work
                    log.warning("%s; trying again in %s", exc, format_duration(self.config.checkpoint_interval))
            self._next_checkpoint = now + self.config.checkpoint_interval
        # What this pass changed (a finished run frees its resources, ...).
        self._process_changes(now)
        if save_low_water:
            self._save_low_water()
        if not planned_all or not prepared_all or self._changes or self._pause_changes:
            return now
        wake_at = min(self._next_sweep, self._next_checkpoint)
        if self._due:
            wake_at = min(wake_at, self._due[0][0])
        if self._unprepared:
            wake_at = min(wake_at, self._unprepared[0][0] - PREPARE_AHEAD)
        if self._plan:
            wake_at = min(wake_at, self._plan[0][0])
        if self._wait_deadlines:
            wake_at = min(wake_at, self._wait_deadlines[0][0])
        if self._stops:
            wake_at = min(wake_at, self._stops[0][0])
        if self._alarms:
            wake_at = min(wake_at, self._alarms[0][0])
        if self._rechecks:
            wake_at = min(wake_at, self._rechecks[0][0])
        return wake_at

    # -- start-up ------------------------------------------------------------------

    def recover(self):
        """Re-attach to the world as the database and run folders describe it (at start-up).

        Tried again until it succeeds if the database cannot be written.
        """
        if self._boot is None:
            # Read once: a retry must not see the boot id its first try saved.
            self._boot = self.launcher.boot_id() or ""
            self._rebooted = not self._boot or self.store.get_meta(BOOT_KEY) != self._boot
        # Faults met by earlier tries are undone by this one: no resync after it.
        self._faults_seen = self.store.faults
        self._reset_memory()
        self._load(self.clock(), "restart")
        self.store.set_meta(BOOT_KEY, self._boot)
        self._boot = None  # saved: a later recover() compares with it
        self.started = True
        self._resync_pending = False

    def _resync(self):
        """Read the engine's state back from the database after a failed transaction.

        A transaction that failed (a full disk, an I/O error) was rolled
        back, but what the engine did in memory meanwhile was not: a due run
        popped from its heap, a horizon moved on, a resource taken. So all of
        it is read again, as at start-up, and runs in flight are re-attached.
        A small write comes first: until it commits, nothing else would.
        """
        self._faults_seen = self.store.faults
        self.store.set_meta("engine_resync", to_iso(self.clock()))
        log.info("reading the engine's state back from the database")
        self._reset_memory()
        self._load(self.clock(), "resync")
        self._resync_pending = False

    def _reset_memory(self):
        """Forget what is kept in memory of runs and planning; ``_load`` reads it again."""
        self._due, self._unprepared, self._prepared = [], [], set()
        self._plan, self._horizons = [], {}
        self._waits = WaitIndex()
        self._resources = Resources(self.config.resources)
        self._wait_deadlines, self._has_deadline = [], set()
        self._stops, self._alarms, self._rechecks = [], [], []
        self._load_pauses()

    def _load(self, now, after):
        """Fill the engine's memory from the database and run folders.

        ``after``: ``restart`` (the server started) or ``resync`` (the
        database failed a write). Missed slots are caught up after either.
        """
        fresh = self.since_now and after == "restart"
        self._horizons = {} if fresh else self.store.get_horizons()
        for job_id in self.jobs:
            if job_id not in self._broken:
                self._queue_plan(job_id, self._horizons.get(job_id, now))
        with self.store.write():
            for run in self.store.runs_in_states(["scheduled"]):
                if fresh and run.slot is not None and run.time_schedule < now:
                    self.store.transition(
                        run.run_id, "scheduled", "skipped", now,
                        f"missed: due at {to_iso(run.time_schedule)} while the server was down; "
                        "the server started with --since now")
                    continue
                self._push_due(run.time_schedule, run.run_id)
                self._push_stop(run)
            if not fresh:
                self._catch_up(now, "while the server was down" if after == "restart"
                               else "while the database could not be written")
        for run in self.store.runs_in_states(["waiting"]):
            self._push_due(run.time_schedule, run.run_id)
            self._push_stop(run)
        for rid, t, _ in self.store.get_deadlines():
            heapq.heappush(self._alarms, (t, "deadline", rid))
        for run in self.store.runs_in_states(sorted(ACTIVE)):
            self._push_stop(run)
            self._arm_max_duration(run)
            self._resources.take(run.run_id, resource_wants(run.conditions))
            with self._item(now, run.run_id, "re-attaching to it"):
                self._reconcile(run, now, after=after)
        self._retire_idle_folders()
        with self.store.write():
            self._recover_reruns(now)
            self._save_low_water()

    def _retire_idle_folders(self):
        """Retire the run folders of runs not in flight.

        They are folders written ahead for runs that were not yet due when
        the server stopped (a run skipped on restart would never retire its
        folder otherwise), or the folders of runs whose result was recorded
        just before a crash. None of them was ever handed to the agent, or
        all that its shepherd wrote is in the database.
        """
        for rid in self.launcher.folder_run_ids():
            state = self.store.run_state(rid)
            if state not in ACTIVE and not self.launcher.is_alive(rid):
                self.launcher.remove(rid)

    def _recover_reruns(self, now):
        """Create the automatic reruns lost when the server stopped between a failure and its rerun.

        Only runs that finished after the low-water mark saved at the last
        checkpoint are looked at (the (state, run_id) index; see
        ``_save_low_water``), not the whole history. A run that already has
        a rerun, or was marked by hand, is left alone; rerun n's unique slot
        keeps this from ever making one twice.
        """
        low = self.store.get_meta(LOW_WATER_KEY)
        states = sorted({st for job in self.jobs.values() if job.reruns and job.reruns.count
                         for st in job.reruns.states})
        if low is None or not states:
            return
        for run in self.store.finished_since(int(low), states):
            if sum(1 for st in run.times if st in FINISHED) > 1:
                continue  # marked by hand: marking never reruns
            if self.store.has_rerun_of(run.rerun_group or run.run_id, run.run_id):
                continue
            try:
                with self.store.atomic():
                    self._maybe_rerun(run.run_id, run.job_id, run.state, now,
                                      finished=run.times.get(run.state, run.time_updated), quiet=True)
            except Exception as exc:  # a bad job must not stop the others' reruns
                raise_if_fault(exc)
                log.exception("recovering the rerun of run %s failed", run.run_id)

    def _save_low_water(self):
        """Record below which run ids every finished run has been reacted to (for ``_recover_reruns``)."""
        low = self.store.unfinished_low_water()
        pending = [rid for rid, _, _ in self._changes]  # finished, not reacted to yet
        self.store.set_meta(LOW_WATER_KEY, min([low, *pending]))

    def _reconcile(self, run, now, after=None):
        """Bring a run in starting, running or stopping in line with its run folder.

        Used after a restart or a resync (``after``), by the periodic sweep
        (for a lost notice), and when a stop finds no shepherd to ask.
        """
        restarted = after == "restart"
        rid = run.run_id
        if (run.meta or {}).get("in_server"):
            if rid in self._inserver_results or (self._inserver is not None and rid in self._inserver):
                return  # in flight here, or its result is about to be recorded
            self.store.transition(rid, run.state, "error", now, "the server stopped while it ran "
                                  "(a program that runs in the server does not outlive it)")
            return
        # Liveness before the result: a shepherd writes its result, then
        # releases its lock, so "not alive and no result" is never a race.
        alive = self.launcher.is_alive(rid)
        if self.launcher.result(rid) is not None:
            self._collect(rid)
        elif alive:
            if run.state == "starting":
                self._mark_running(rid)
            elif run.state == "stopping" and not self.launcher.stop_requested(rid):
                # Its stop was committed but could not be written (a full disk): again.
                self._deliver_stop(run)
            if restarted:
                self.store.log(rid, now, "re-attached after restart")
        elif run.state == "starting" and restarted and self._rebooted:
            # Claims are not fsynced (see agent.py): after a restart of the
            # machine an unclaimed spec proves nothing.
            self.store.transition(rid, "starting", "error", now,
                                  "may have started: the machine restarted while it was starting")
            self.launcher.remove(rid)
        elif run.state == "starting" and not self.launcher.claimed(rid):
            # No shepherd has claimed it: the request was lost (a restart, an
            # agent that died) or the agent has not got to it yet.
            pending = self.launcher.spec_pending_since(rid)
            if (after or pending is None or now - pending > RELAUNCH_AFTER) and self.launcher.revoke(rid):
                self.store.log(rid, now, "had provably not started (no shepherd claimed it); starting it now")
                self._launch([self.store.get_run(rid)])
        else:
            info = self.launcher.pid_info(rid) if run.state == "starting" else None
            if info is not None:
                why = (f"started as pid {info.get('pid')}, but its supervisor vanished "
                       "without recording a result")
            elif run.state == "starting":
                why = "may have started: its supervisor vanished while it was starting"
            elif restarted and self._rebooted:
                # Results not yet recorded are not fsynced (see agent.py).
                why = "the machine restarted while it ran, or before its result was recorded"
            else:
                why = "its supervisor vanished without recording a result"
            self.store.transition(rid, run.state, "error", now, why)
            self.launcher.remove(rid)

    # -- fault containment --------------------------------------------------------------

    @contextlib.contextmanager
    def _item(self, now, run_id, what):
        """One run's share of a pass: if it raises, the run goes to error with
        the message, and the rest of the pass goes on.

        What it wrote before it raised stays, and is true: the run's log shows
        how far it got, and the error follows. (A savepoint per run would undo
        it, at a tenth of the CPU of a burst of starts.) A failure of the
        database or its disk says nothing about the run: it fails the whole
        pass, which rolls back and is tried again (see serve_forever).
        """
        try:
            yield
        except Exception as exc:
            raise_if_fault(exc)
            if isinstance(exc, NotFound) and self.store.run_state(run_id) is None:
                return  # the run is gone: nothing to do for it
            log.exception("run %s: %s failed", format_run_id(run_id), what)
            self._fail_run(run_id, now, f"{what} failed: {type(exc).__name__}: {exc}")

    def _fail_run(self, rid, now, message):
        """Send an unfinished run to error with ``message``."""
        self._waits.remove(rid)
        try:
            with self.store.atomic():
                state = self.store.run_state(rid)
                if state is not None and state not in FINISHED and \
                        self.store.transition(rid, state, "error", now, message):
                    self._discard_prepared(rid)
        except Exception as exc:  # nothing more can be done for it in this pass
            raise_if_fault(exc)
            log.exception("run %s: could not record its error", format_run_id(rid))

    def _on_commit(self, fn, *args):
        """Change the engine's memory only once the change it follows is on disk."""
        self.store.after_commit(functools.partial(fn, *args))

    # -- planning --------------------------------------------------------------------

    def _queue_plan(self, job_id, start):
        """Plan a job from ``start``; ``_plan`` is keyed by when a job next needs planning."""
        self._horizons.setdefault(job_id, start)
        heapq.heappush(self._plan, (start - self.config.horizon, next(self._seq), job_id))

    def _plan_due(self, now, budget=PLAN_BUDGET):
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
                job = self.jobs.get(job_id)
                if job is not None and job_id not in self._broken:
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
            self._break_job(job.job_id, f"planning its runs failed: {type(exc).__name__}: {exc}")
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
            self._on_commit(self._push_due, due, run.run_id)
            self._on_commit(self._push_stop, run)
            self._arm_deadline(job, run, now)

    # -- starting ------------------------------------------------------------------------

    def _push_due(self, t, run_id):
        heapq.heappush(self._due, (t, run_id))
        heapq.heappush(self._unprepared, (t, run_id))

    def _prepare_soon(self, now, budget=PLAN_BUDGET):
        """Write the run folders of runs due within PREPARE_AHEAD.

        Creating a folder and a file is slow on some file systems (a
        millisecond on a busy VM disk), so it is done before the due time
        rather than on the way from due to started. A spec on disk starts
        nothing by itself: only a request to the agent does, and that is
        sent after 'starting' is committed. Returns False if it stopped
        after ``budget`` seconds with folders left to write, so that due runs
        and requests are served in between.
        """
        deadline = time.monotonic() + budget
        while self._unprepared and self._unprepared[0][0] <= now + PREPARE_AHEAD:
            if time.monotonic() > deadline:
                return False
            _, rid = heapq.heappop(self._unprepared)
            if rid in self._prepared:
                continue
            try:
                run = self.store.get_run(rid)
                if run.state != "scheduled":
                    continue
                program = parse_program(run.program)
                if program.is_noop or program.host or not program.runs_process:
                    continue
                self.launcher.prepare(run, program, ahead=True)
            except StoreUnavailable:
                raise
            except Exception as exc:  # it will be prepared again when due, and fail there
                if disk_fault(exc) is not None:
                    break  # a full disk: not ahead of time, then
                log.warning("could not prepare run %s ahead of time: %s", rid, exc)
                continue
            self._prepared.add(rid)
        return True

    def _start_due(self, now):
        due = []
        while self._due and self._due[0][0] <= now:
            due.append(heapq.heappop(self._due)[1])
        if due:
            self._try_start(due, now, "starting", due=True)

    def _try_start(self, run_ids, now, why, due=False):
        """Start those of ``run_ids`` that are waiting and may start now; with
        ``due``, those still scheduled become waiting first."""
        starting = []
        with self.store.write():
            for rid in run_ids:
                with self._item(now, rid, "starting it"):
                    run = self.store.get_run(rid)
                    if run.state == "scheduled" and due:
                        # A stale entry (its run's time moved) must not start it early.
                        if run.time_schedule > now or not self._make_waiting(run, now):
                            continue
                    elif run.state != "waiting":
                        continue
                    if self._may_start(run, now) and self._start_waiting(run, now, why):
                        starting.append(run)  # read before its transitions; _launch needs none of them
        self._launch(starting)

    def _make_waiting(self, run, now):
        """A scheduled run's time has come: scheduled -> waiting, unless it is
        too old (max_age) or paused; False if it is not waiting now."""
        rid = run.run_id
        # max_age applies to schedule slots; an ad hoc run always starts.
        if (run.slot is not None and run.time_schedule < now - self.config.max_age
                and self._catch_up_of(run.job_id) is None):
            self.store.transition(
                rid, "scheduled", "skipped", now,
                f"missed: due at {to_iso(run.time_schedule)} while the server was down, "
                f"older than max_age ({format_duration(self.config.max_age)})")
            self._discard_prepared(rid)
            return False
        if self._pauses and self._skip_if_paused(run, now):
            return False
        return self.store.transition(rid, "scheduled", "waiting", now, "due")

    def _launch(self, runs):
        """Hand runs in 'starting' to their programs; no-ops finish at once.

        In chunks: each chunk's transitions and run folders are written in one
        transaction, and the agent is asked only after it commits, outside it,
        because talking to the agent yields to other greenlets. A chunk holds
        up to LAUNCH_CHUNK runs whose folder is still to be written, and any
        number written ahead of time: those cost the agent one request each,
        all sent together, while a round trip per small chunk would leave the
        starts of a big batch waiting for this process to be scheduled again,
        on a machine the batch's own programs keep busy.
        """
        chunk, unprepared = [], 0
        for run in runs:
            chunk.append(run)
            if run.run_id not in self._prepared:
                unprepared += 1
                if unprepared == LAUNCH_CHUNK:
                    self._launch_chunk(chunk)
                    chunk, unprepared = [], 0
        if chunk:
            self._launch_chunk(chunk)

    def _launch_chunk(self, runs):
        local = []
        with self.store.write():
            for run in runs:
                now = self.clock()
                with self._item(now, run.run_id, "starting it"):
                    if self._hand_over(run, now):
                        local.append(run.run_id)
        if not local:
            return
        try:
            failures = self.launcher.start(local)
        except Exception as exc:
            # Nothing was claimed that the sweep will not find: it asks again
            # for specs left unclaimed (RELAUNCH_AFTER), or records them.
            log.error("could not hand %d runs to the agent: %s; asking again shortly", len(local), exc)
            return
        if not failures:
            return
        with self.store.write():
            for rid, message in failures.items():
                # Only a run that provably never started may be called failed to start.
                if self.launcher.revoke(rid):
                    self.store.transition(rid, "starting", "error", self.clock(), f"could not start: {message}")
                    self.launcher.remove(rid)

    def _hand_over(self, run, now):
        """Start one run in 'starting': a no-op finishes, a local program gets its
        folder written; True if the agent is to be asked for it."""
        try:
            program = parse_program(run.program)
        except Exception as exc:
            self.store.transition(run.run_id, "starting", "error", now, f"bad program: {exc}")
            return False
        if program.is_noop:
            if getattr(program, "success", True):
                self.store.transition(run.run_id, "starting", "success", now, "no-op: nothing to run")
            else:
                self.store.transition(run.run_id, "starting", "failure", now, "no-op with success: false")
            return False
        if not program.runs_process:
            self.store.transition(run.run_id, "starting", "running", now,
                                  f"running in the server ({program.type_name}; time limit "
                                  f"{format_duration(program.time_limit)})", meta={"in_server": True})
            if self._any_max_duration:  # as _mark_running does for a process
                self._arm_max_duration(self.store.get_run(run.run_id))
            self._on_commit(self.inserver.start, run, program)
            return False
        if program.host:
            self.store.transition(run.run_id, "starting", "error", now,
                                  f"remote hosts are not supported yet (host: {program.host})")
            return False
        try:
            if run.run_id not in self._prepared:
                self.launcher.prepare(run, program)
            self._prepared.discard(run.run_id)
        except OSError as exc:
            if disk_fault(exc) is not None:
                raise
            self.store.transition(run.run_id, "starting", "error", now,
                                  f"could not prepare the run folder: {exc}")
            return False
        return True

    # -- running and finishing ----------------------------------------------------------------

    @property
    def inserver(self):
        """The runner of in-server programs (see inserver.py), made when first needed."""
        if self._inserver is None:
            from apsis_lite.engine.inserver import InServerRunner
            self._inserver = InServerRunner(self.config.data_dir, self._inserver_finished)
        return self._inserver

    def _inserver_finished(self, rid, state, message, output):
        """An in-server program ended (called in the event loop): recorded in the next pass."""
        self._inserver_results[rid] = (state, message, output)
        self.wake()

    def _record_inserver(self, now):
        """Record the results of in-server programs: state, message and bounded output.

        A result is forgotten only once it is on disk: memory holds its only copy.
        """
        if not self._inserver_results:
            return
        with self.store.write():
            for rid, (state, message, output) in list(self._inserver_results.items()):
                with self._item(now, rid, "recording its result"):
                    current = self.store.run_state(rid)
                    if current in ACTIVE:
                        data, dropped = _bounded_output(output, self.config.output_head, self.config.output_tail)
                        self.store.store_output_bytes(rid, data, len(output), dropped)
                        out = {"bytes_total": len(output), "bytes_kept": len(output) - dropped,
                               "bytes_dropped": dropped}
                        self.store.transition(rid, current, state, self.clock(), message, meta={"output": out})
                # Recorded, or the run ended otherwise meanwhile (a stop).
                self._on_commit(self._inserver_results.pop, rid, None)

    def _handle_notices(self):
        # One transaction for all pending notices: a burst of runs starting
        # or ending together costs one commit, not one fsync each.
        with self.store.write():
            self._handle_notices_in_tx()

    def _handle_notices_in_tx(self):
        while self._notices:
            kind, rid = self._notices.popleft()
            with self._item(self.clock(), rid, f"recording that it is {kind}"):
                if kind == "running":
                    self._mark_running(rid)
                elif kind == "done":
                    self._collect(rid)

    def _mark_running(self, rid):
        info = self.launcher.pid_info(rid)
        if info is None:
            return False
        started = info.get("time") or self.clock()
        moved = self.store.transition(rid, "starting", "running", started,
                                      f"running as pid {info.get('pid')}",
                                      meta={"pid": info.get("pid")})
        if moved and self._any_max_duration:
            self._arm_max_duration(self.store.get_run(rid))
        return moved

    def _collect(self, rid):
        """Record a finished run's result and output; False if it has none yet."""
        run = self.store.get_run(rid)
        if run.state not in ACTIVE:
            return False
        res = self.launcher.result(rid)
        if res is None:
            return False
        state, message = outcome(res)
        out = res.get("output") or {}
        meta = {"elapsed": res.get("elapsed"), "rusage": res.get("rusage"), "output": out,
                "timed_out": bool(res.get("timed_out")), "stopped": bool(res.get("stopped"))}
        end = res.get("end") or self.clock()
        with self.store.write():
            if run.state == "starting" and self._mark_running(rid):
                run = self.store.get_run(rid)
            self.store.store_output(rid, self.launcher.output_path(rid),
                                    out.get("bytes_total", 0), out.get("bytes_dropped", 0))
            self.store.transition(rid, run.state, state, end, message,
                                  exit_code=res.get("exit_code"), signal=res.get("signal"), meta=meta)
            # The run folder holds the only copy of the result until this commits.
            self.store.after_commit(lambda: self.launcher.remove(rid))
        return True

    def _sweep(self, now):
        """Catch completions whose notice was lost, and specs nobody claimed."""
        for run in self.store.runs_in_states(sorted(ACTIVE)):
            with self._item(now, run.run_id, "checking on it"):
                self._reconcile(run, now)

    # -- catch-up and stop schedules -------------------------------------------------------------

    def _catch_up_of(self, job_id):
        job = self.jobs.get(job_id)
        return job.catch_up if job is not None else None

    def _catch_up(self, now, when="while the server was down"):
        """Apply each job's ``catch_up`` to the slots it missed (``when``: while what).

        Plans every missed slot (so each is recorded), then keeps the
        latest ones the job asks for due now and skips the rest, saying why.
        Jobs without ``catch_up`` follow the global max_age rule instead.
        """
        for job_id, job in self.jobs.items():
            policy = job.catch_up
            horizon = self._horizons.get(job_id)
            if policy is None or horizon is None or job_id in self._broken:
                continue
            if horizon < now:
                self._plan_job_confined(job, horizon, now, now, now)
                if job_id in self._broken:
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

    def _push_stop(self, run):
        stop_at = (run.meta or {}).get("stop_at")
        if stop_at is not None:
            heapq.heappush(self._stops, (stop_at, run.run_id))

    def _stop_due(self, now):
        """Stop runs whose stop schedule has come, through the normal stop operation.

        A run not started by then is skipped: its window has closed. One
        still starting is looked at again shortly.
        """
        while self._stops and self._stops[0][0] <= now:
            stop_at, rid = heapq.heappop(self._stops)
            try:
                run = self.store.get_run(rid)
                if run.state == "running":
                    self.stop(rid, why=f"stop schedule: due to stop at {to_iso(stop_at)}")
                elif run.state in ("scheduled", "waiting"):
                    self.store.transition(rid, run.state, "skipped", now,
                                          f"its stop time {to_iso(stop_at)} came before it started")
                    self._discard_prepared(rid)
                elif run.state == "starting":
                    heapq.heappush(self._stops, (now + 0.5, rid))
            except (NotFound, TransitionError):
                continue
            except Exception as exc:
                raise_if_fault(exc)
                log.exception("stopping run %s on its stop schedule failed", rid)

    # -- operations (API, pages, CLI) ----------------------------------------------------------

    def submit(self, job_id, args=None, when=None, user=None, why="submitted"):
        """An ad hoc run of an existing job with ``args``, now or at ``when`` (epoch).

        ``why`` starts its log (a schedule action says which run asked for it).
        """
        job = self.get_job(job_id)
        args = jobs_mod.check_args(job, args or {})
        return self._create_adhoc_run(job, args, when, user, why)

    def submit_program(self, program, when=None, user=None):
        """An ad hoc run of an inline program, stored as a transient job.

        Its text is taken literally: it was typed, not written as a template.
        """
        job_id = self._adhoc_job_id()
        job = jobs_mod.adhoc_job(program, job_id)
        self.store.put_adhoc_job(job_id, {"literal": True, "job": job.to_jso()}, self.clock())
        return self._create_adhoc_run(job, {}, when, user, "submitted inline")

    def submit_job(self, definition, args=None, when=None, user=None):
        """An ad hoc run of an inline job definition (job-file form, templates and all)."""
        job_id = self._adhoc_job_id()
        job = jobs_mod.job_from_jso(definition, job_id, calendars=self.calendars,
                                    min_interval=self.config.min_interval)
        args = jobs_mod.check_args(job, args or {})
        self.store.put_adhoc_job(job_id, {"literal": False, "job": definition}, self.clock())
        return self._create_adhoc_run(job, args, when, user, "submitted inline")

    def _adhoc_job_id(self):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self.clock()))
        return f"adhoc/{stamp}-{secrets.token_hex(3)}"

    def _create_adhoc_run(self, job, args, when, user, why, rerun_of=None, rerun_group=None):
        now = self.clock()
        when = now if when is None else when
        bound = jobs_mod.bind(job, args)
        run = self.store.insert_run(
            job.job_id, args, "scheduled", when, now, rerun_of=rerun_of, rerun_group=rerun_group,
            meta={"adhoc": True}, message=f"{why} for {to_iso(when)}", user=user, **bound)
        self._push_due(when, run.run_id)
        self._arm_deadline(job, run, now)
        self.wake()
        return run

    def start(self, run_id, user=None):
        """Start a scheduled or waiting run now, skipping its wait for time and conditions."""
        run = self.store.get_run(run_id)
        if run.state not in ("scheduled", "waiting"):
            raise TransitionError(f"run {format_run_id(run_id)} is {run.state}; only a scheduled or waiting run can be started")
        why = "started by hand, skipping the wait for its time and conditions"
        if run.state == "waiting":
            why = "started by hand, skipping its remaining conditions" + (
                f" (it was {run.message})" if run.message and run.message.startswith(("waiting", "held"))
                else "")
        if not self.store.transition(run_id, run.state, "starting", self.clock(), why, user=user):
            raise TransitionError(f"run {format_run_id(run_id)} changed state meanwhile; try again")
        self._waits.remove(run_id)
        # It holds its resources like any active run, over capacity if need be.
        self._resources.take(run_id, resource_wants(run.conditions))
        self._launch([self.store.get_run(run_id)])
        return self.store.get_run(run_id)

    def skip(self, run_id, user=None):
        run = self.store.get_run(run_id)
        if run.state not in ("scheduled", "waiting"):
            raise TransitionError(f"run {format_run_id(run_id)} is {run.state}; only a scheduled or waiting run can be skipped")
        if not self.store.transition(run_id, run.state, "skipped", self.clock(), "skipped by hand", user=user):
            raise TransitionError(f"run {format_run_id(run_id)} changed state meanwhile; try again")
        self._discard_prepared(run_id)
        return self.store.get_run(run_id)

    def _discard_prepared(self, run_id):
        """Remove the folder written ahead of time for a run that will not start."""
        if run_id in self._prepared:
            self._prepared.discard(run_id)
            self.store.after_commit(lambda: self.launcher.remove(run_id))

    def stop(self, run_id, user=None, why="stop requested"):
        """Stop a running run: its stop signal, then SIGKILL after the grace period."""
        run = self.store.get_run(run_id)
        if run.state != "running":
            hint = "; skip it instead" if run.state in ("scheduled", "waiting") else ""
            raise TransitionError(f"run {format_run_id(run_id)} is {run.state}; only a running run can be stopped{hint}")
        program = parse_program(run.program)
        if not program.runs_process:
            return self._stop_inserver(run_id, user, why)
        sig, grace = program.stop["signal"], program.stop["grace_period"]
        if not self.store.transition(run_id, "running", "stopping", self.clock(),
                                     f"{why}: {sig}, then SIGKILL after {format_duration(grace)}",
                                     user=user):
            raise TransitionError(f"run {format_run_id(run_id)} changed state meanwhile; try again")
        self._deliver_stop(self.store.get_run(run_id))
        return self.store.get_run(run_id)

    def _deliver_stop(self, run):
        """Hand a run in 'stopping' its stop request; on a full disk the sweep tries again."""
        program = parse_program(run.program)
        try:
            delivered = self.launcher.request_stop(run.run_id, program.stop["signal"],
                                                   program.stop["grace_period"])
        except OSError as exc:
            if disk_fault(exc) is None:
                raise
            log.warning("run %s: the stop request cannot be written (%s); trying again at the next sweep",
                        format_run_id(run.run_id), exc.strerror)
            return
        if not delivered:
            self._reconcile(self.store.get_run(run.run_id), self.clock())

    def _stop_inserver(self, run_id, user, why):
        """An in-server program cannot be killed: its run ends now, as stopped, and the
        call is told to stop (``context.stopping``); whatever it returns is ignored."""
        with self.store.write():
            if not self.store.transition(run_id, "running", "stopping", self.clock(), why, user=user):
                raise TransitionError(f"run {format_run_id(run_id)} changed state meanwhile; try again")
            self.store.transition(run_id, "stopping", "failure", self.clock(),
                                  "stopped (a program that runs in the server is abandoned, not killed)",
                                  meta={"stopped": True})
        if self._inserver is not None:
            self._inserver.stop(run_id)
        self._inserver_results.pop(run_id, None)
        return self.store.get_run(run_id)

    def signal(self, run_id, name, user=None):
        """Send a named signal to a running run's process group."""
        from apsis_lite.agent import signal_from_name
        try:
            sig = signal_from_name(name)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        run = self.store.get_run(run_id)
        if run.state not in ("running", "stopping"):
            raise TransitionError(f"run {format_run_id(run_id)} is {run.state}; only a running run can be signalled")
        if (run.meta or {}).get("in_server"):
            raise TransitionError(f"run {format_run_id(run_id)} runs in the server: it has no process to signal")
        if not self.launcher.send_signal(run_id, sig.name):
            raise TransitionError(f"run {format_run_id(run_id)}: its process is gone")
        self.store.log(run_id, self.clock(), f"sent {sig.name}", user=user)
        return self.store.get_run(run_id)

    def rerun(self, run_id, user=None):
        """A new run of a finished run's job and args, in the same rerun group."""
        run = self.store.get_run(run_id)
        if run.state not in FINISHED:
            raise TransitionError(f"run {format_run_id(run_id)} is {run.state}; only a finished run can be rerun")
        try:
            job = self.get_job(run.job_id)
        except NotFound:
            raise TransitionError(f"run {format_run_id(run_id)}: its job {run.job_id!r} no longer exists") from None
        new = self._create_adhoc_run(job, run.args, None, user, f"rerun of {format_run_id(run_id)}",
                                     rerun_of=run_id, rerun_group=run.rerun_group or run_id)
        self.store.log(run_id, self.clock(), f"rerun as {format_run_id(new.run_id)}", user=user)
        return new

    def mark(self, run_id, state, user=None):
        """Mark a finished run as another finished state."""
        state = parse_state(state)
        run = self.store.get_run(run_id)
        if state not in FINISHED:
            raise TransitionError(f"cannot mark a run as {state}; only as success, failure, error or skipped")
        if run.state not in FINISHED:
            raise TransitionError(f"run {format_run_id(run_id)} is {run.state}; only a finished run can be marked")
        if state == run.state:
            raise TransitionError(f"run {format_run_id(run_id)} is already {state}")
        if not self.store.transition(run_id, run.state, state, self.clock(), f"marked as {state}", user=user):
            raise TransitionError(f"run {format_run_id(run_id)} changed state meanwhile; try again")
        return self.store.get_run(run_id)


    # -- waiting: conditions, resources, reruns --------------------------------------------------
    #
    # A due run with conditions goes to 'waiting' and is checked at once; if
    # a condition does not hold, the run is filed in ``_waits`` under what
    # could change that (runs of a job and args, a resource) and is not
    # looked at again until the store's listener reports such a change. So
    # 10,000 waiting runs cost nothing while nothing happens.

    def _on_change(self, run_id, old, new):
        """Store listener (after each commit, in the writer's thread): queue what matters.

        A change made by the engine's own pass is handled at the end of that
        pass; waking the loop for it would cost a whole extra pass per run.
        """
        if (new in FINISHED and old not in FINISHED) or len(self._waits):
            self._changes.append((run_id, old, new))
            if not self._in_tick:
                self.wake()

    def _find_job(self, job_id):
        """The job, or None if it is gone or no longer loads."""
        try:
            return self.get_job(job_id)
        except StoreUnavailable:  # not knowing is not "gone": the pass fails and is tried again
            raise
        except ApsisError:
            return None

    def _may_start(self, run, now):
        """Check a waiting run's conditions and resources; True if it may start now.

        Otherwise it is filed under what it waits for, with its reason
        recorded, or sent to the finished state a condition asks for.
        """
        pause = pause_of(self._pauses, run) if self._pauses else None
        if pause is not None:
            self._hold_or_skip(run, pause, now)
            return False
        if not run.conditions:
            return True
        verdict = check_conditions(run, StoreContext(self.store, self._find_job), self._resources)
        if verdict.ok:
            return True
        rid = run.run_id
        if verdict.finish:
            self._waits.remove(rid)
            if self.store.transition(rid, "waiting", verdict.finish, now, verdict.reason):
                self._discard_prepared(rid)
            return False
        self._waits.add(rid, verdict.keys)
        if verdict.recheck:
            heapq.heappush(self._rechecks, (now + max(verdict.recheck, 0.1), rid))
        self.store.set_waiting_reason(rid, verdict.reason, now)
        if rid not in self._has_deadline:
            job = self._find_job(run.job_id)
            max_time = (job and job.waiting_max_time) or self.config.waiting_max_time
            since = run.times.get("waiting", now)
            heapq.heappush(self._wait_deadlines, (since + max_time, rid, max_time))
            self._has_deadline.add(rid)
        return False

    def _start_waiting(self, run, now, why):
        """waiting -> starting, taking the run's resources; False if it moved meanwhile."""
        wants = resource_wants(run.conditions)
        self._resources.take(run.run_id, wants)
        if self.store.transition(run.run_id, "waiting", "starting", now, why):
            self._waits.remove(run.run_id)
            return True
        self._resources.release(run.run_id)
        return False

    def _process_changes(self, now):
        """React to committed state changes: free resources, schedule reruns, wake waiting runs."""
        if not self._changes:
            return
        woken = set()
        while self._changes:
            rid, old, new = self._changes.popleft()
            key = self.store.run_key(rid)
            if key is None:
                continue
            if new in FINISHED and old not in FINISHED:
                for name in self._resources.release(rid):
                    woken |= self._waits.pop(("resource", name))
                self._has_deadline.discard(rid)
                self._alarmed.discard(rid)  # its max_duration alarm can no longer come
                try:
                    with self.store.atomic():
                        self._maybe_rerun(rid, key[0], new, now)
                except Exception as exc:  # a bad job must not stop the others' reruns
                    raise_if_fault(exc)
                    log.exception("scheduling a rerun of run %s failed", rid)
            if len(self._waits):
                woken |= self._waits.pop(("runs", *key))
        if woken:
            self._recheck(sorted(woken), now)

    def _recheck_polled(self, now):
        """Check again waiting runs whose condition asked to be polled (see Verdict.recheck)."""
        due = set()
        while self._rechecks and self._rechecks[0][0] <= now:
            due.add(heapq.heappop(self._rechecks)[1])
        if due:
            self._recheck(sorted(due), now)

    def _recheck(self, run_ids, now):
        """Check again waiting runs whose wait may be over, oldest first."""
        self._try_start(run_ids, now, "starting: its conditions hold")

    def _expire_waiting(self, now):
        """Send runs that waited longer than their waiting max_time to error."""
        if not self._wait_deadlines or self._wait_deadlines[0][0] > now:
            return
        with self.store.write():
            while self._wait_deadlines and self._wait_deadlines[0][0] <= now:
                _, rid, max_time = heapq.heappop(self._wait_deadlines)
                self._has_deadline.discard(rid)
                try:
                    run = self.store.get_run(rid)
                except NotFound:
                    continue
                if run.state != "waiting":
                    continue
                if self._pauses and pause_of(self._pauses, run) is not None:
                    continue  # a pause is no condition: its hold is not timed out
                self._waits.remove(rid)
                last = f": {run.message}" if run.message else ""
                if self.store.transition(rid, "waiting", "error", now,
                                         f"waited longer than waiting max_time "
                                         f"({format_duration(max_time)}){last}"):
                    self._discard_prepared(rid)

    def _maybe_rerun(self, rid, job_id, state, now, finished=None, quiet=False):
        """Schedule the next automatic rerun of a run that ended in ``state``, if its job says so.

        ``finished``: when it ended, if not now (its rerun is due its delay
        after that, or now); ``quiet``: log nothing when no rerun is left.
        """
        # A job-folder job is a dict look-up; only ad hoc ones are read from the store.
        job = self.jobs.get(job_id) or (self._find_job(job_id) if job_id.startswith("adhoc/") else None)
        policy = job and job.reruns
        if not policy or state not in policy.states or not policy.count:
            return
        run = self.store.get_run(rid)
        group = run.rerun_group or run.run_id
        done = self.store.count_reruns(group)
        if done >= policy.count:
            if quiet:
                return
            self.store.log(rid, now, f"{state}: no automatic rerun left (its rerun group has {done} "
                                     f"rerun{'s' if done != 1 else ''}; the job allows {policy.count})")
            return
        n = done + 1
        delay = policy.delay_before(n)
        try:
            bound = jobs_mod.bind(job, run.args)
        except BadRequest as exc:
            self.store.log(rid, now, f"{state}: cannot rerun: {exc}")
            return
        when = max(now, (now if finished is None else finished) + delay)
        # The slot makes rerun n of a group unique: never created twice.
        new = self.store.insert_run(
            job.job_id, run.args, "scheduled", when, now, slot=f"rerun|{group}|{n}", rerun_of=rid,
            rerun_group=group, meta={"rerun": {"try": n, "count": policy.count}},
            message=f"automatic rerun {n} of {policy.count} of {format_run_id(rid)}, "
                    f"for {to_iso(when)}", **bound)
        if new is None:
            return
        late = "" if finished is None else " (made at restart: the server stopped before making it)"
        self.store.log(rid, now, f"{state}: rerun {n} of {policy.count} in {_seconds(when - now)} "
                                 f"as {format_run_id(new.run_id)}{late}")
        self._push_due(when, new.run_id)
        self._arm_deadline(job, new, now)

    def explain(self, run_id):
        """Why a run is in its state: ``{"run_id", "state", "summary", "lines", ...}``."""
        run = self.store.get_run(run_id)
        job = self._find_job(run.job_id)
        max_time = (job and job.waiting_max_time) or self.config.waiting_max_time
        ctx = StoreContext(self.store, self._find_job)
        out = explain_run(run, ctx, self._resources, self.clock(), max_time=max_time,
                          reruns=job.reruns if job else None)
        self._explain_pause_and_alarms(run, job, out)
        return out

    # -- pauses, deadlines and max_duration ---------------------------------------------------
    #
    # A pause is looked at when a run of a schedule slot (or an automatic
    # rerun) comes due: with ``skip`` it is skipped, with ``hold`` it waits,
    # filed in ``_waits`` under ("pause", scope) like any other wait, so that
    # lifting the pause wakes exactly the runs it held. Deadlines and
    # max_duration are timers in ``_alarms``; a deadline is also a row in
    # the store, so that it outlives a restart.

    def _load_pauses(self):
        self._pauses = {scope: Pause(scope, mode, reason, user, t)
                        for scope, mode, reason, user, t in self.store.get_pauses()}

    @property
    def pauses(self) -> list:
        """Every pause in force, the global one first."""
        return [self._pauses[k] for k in sorted(self._pauses)]

    def job_pause(self, job_id):
        """A job's own pause (``job_id`` None: the global pause), or None."""
        return self._pauses.get(GLOBAL if job_id is None else job_id)

    def pause_of_job(self, job_id):
        """The pause a job's scheduled runs are under (global first), or None."""
        return self._pauses.get(GLOBAL) or self._pauses.get(job_id)

    def pause(self, job_id=None, reason="", mode="skip", user=None):
        """Pause every job (``job_id`` None) or one job; replaces a pause already there."""
        scope = GLOBAL if job_id is None else job_id
        if scope and scope not in self.jobs:
            self.get_job(scope)  # raises NotFound, saying why
            raise BadRequest(f"{scope!r} is an ad hoc job; only jobs of the jobs folder can be paused")
        now = self.clock()
        self.store.set_pause(scope, mode, reason, user, now)
        pause = self._pauses[scope] = Pause(scope, mode, reason, user, now)
        log.info("%s", pause.describe())
        # Runs held by the pause this one replaces: skipped now if it skips.
        self._pause_changes.append(scope)
        self.wake()
        return pause

    def resume(self, job_id=None, user=None):
        """Lift a pause; the runs it held are checked again (and start if nothing else holds them)."""
        scope = GLOBAL if job_id is None else job_id
        pause = self._pauses.get(scope)
        if pause is None:
            raise TransitionError("there is no global pause" if not scope else f"job {scope!r} is not paused")
        self.store.delete_pause(scope)
        del self._pauses[scope]
        log.info("%s lifted%s", pause.describe(), f" by {user}" if user else "")
        self._pause_changes.append(scope)
        self.wake()
        return pause

    def _release_paused(self, now):
        """Check again the runs held by pauses set or lifted since the last pass."""
        woken = set()
        while self._pause_changes:
            woken |= self._waits.pop(("pause", self._pause_changes.popleft()))
        if woken:
            self._recheck(sorted(woken), now)

    @staticmethod
    def _pause_words(pause):
        by = f" (by {pause.user})" if pause.user else ""
        what = "global pause" if pause.scope == GLOBAL else "job paused"
        return f"{what}: {pause.reason}{by}"

    def _skip_if_paused(self, run, now):
        """A due scheduled run: skip it if a ``skip`` pause applies; note a pause it is exempt from."""
        pause = pause_of(self._pauses, run)
        if pause is None:
            if not pausable(run) and self.pause_of_job(run.job_id):
                self.store.log(run.run_id, now, "not held back by the "
                               + self._pause_words(self.pause_of_job(run.job_id))
                               + "; only scheduled runs and automatic reruns are paused")
            return False
        if pause.mode != "skip":
            return False
        if self.store.transition(run.run_id, "scheduled", "skipped", now,
                                 f"skipped: {self._pause_words(pause)}"):
            self._discard_prepared(run.run_id)
        return True

    def _hold_or_skip(self, run, pause, now):
        """A waiting run under a pause: skip it, or file it under the pause until it is lifted."""
        rid = run.run_id
        if pause.mode == "skip":
            self._waits.remove(rid)
            if self.store.transition(rid, "waiting", "skipped", now, f"skipped: {self._pause_words(pause)}"):
                self._discard_prepared(rid)
            return
        self._waits.add(rid, [("pause", pause.scope)])
        self.store.set_waiting_reason(
            rid, f"held: {self._pause_words(pause)}; starts when the pause is lifted", now)

    def add_alarm_listener(self, fn):
        """Call ``fn(run_id, kind, message)`` when a run misses its deadline or max_duration.

        ``kind`` is ``deadline`` or ``max_duration``; called after the log
        line saying so has committed, in the engine's thread: be quick.
        """
        self._alarm_listeners.append(fn)

    def _arm_deadline(self, job, run, now):
        """Record a new run's deadline, if its job has one still ahead."""
        deadline = getattr(job, "deadline", None)
        if deadline is None or run is None:
            return
        t = deadline.due(run.args, run.time_schedule)
        if t is None or t <= now:
            return  # created after its deadline (a catch-up, a late rerun), or none before year 9999
        self.store.add_deadline(run.run_id, t, deadline.describe())
        self._on_commit(heapq.heappush, self._alarms, (t, "deadline", run.run_id))

    def _arm_max_duration(self, run):
        job = self.jobs.get(run.job_id)
        started = run.times.get("running")
        if job is None or job.max_duration is None or started is None:
            return
        heapq.heappush(self._alarms, (started + job.max_duration.duration, "max_duration", run.run_id))

    def _fire_alarms(self, now):
        # Deadlines reported in this call, by (job_id, args, time): runs of
        # the same job and args share a deadline time, so they all come due
        # in this one call; nothing needs remembering beyond it.
        reported = set()
        while self._alarms and self._alarms[0][0] <= now:
            t, kind, rid = heapq.heappop(self._alarms)
            try:
                with self.store.write():
                    if kind == "deadline":
                        self._check_deadline(rid, t, now, reported)
                        continue
                    limit = self._check_max_duration(rid, now)
                # Outside the transaction: asking the agent to stop yields.
                if limit is not None and limit.stop:
                    self.stop(rid, why=f"max_duration {limit.describe()} exceeded")
            except (NotFound, TransitionError):
                continue
            except Exception as exc:  # one bad alarm must not stop the others
                raise_if_fault(exc)
                log.exception("checking the %s of run %s failed", kind, rid)

    def _check_deadline(self, rid, t, now, reported):
        row = self.store.get_deadline(rid)
        if row is None or row[0] != t:
            return
        self.store.delete_deadline(rid)
        run = self.store.get_run(rid)
        if run.state == "success" or self.store.runs_of(run.job_id, run.args, ["success"], limit=1):
            return
        # A later try of its rerun group with the same deadline reports it instead.
        if any(r.run_id > rid and self.store.get_deadline(r.run_id)
               for r in self.store.rerun_group(run.rerun_group or rid)):
            return
        key = (run.job_id, dumps(run.args), t)
        if key in reported:
            return  # two runs of the same job and args: one report
        reported.add(key)
        self._alarm(rid, "deadline", f"deadline {row[1]} missed: {_status_words(run)}", now)

    def _check_max_duration(self, rid, now):
        """Report a run past its job's max_duration; returns that max_duration if it is."""
        run = self.store.get_run(rid)
        job = self.jobs.get(run.job_id)
        started = run.times.get("running")
        if run.state != "running" or job is None or job.max_duration is None or started is None:
            return
        limit = job.max_duration
        if started + limit.duration > now:  # the job file changed meanwhile
            heapq.heappush(self._alarms, (started + limit.duration, "max_duration", rid))
            return
        if rid in self._alarmed:
            return  # armed twice (at a restart, and as it was found running)
        self._alarmed.add(rid)
        self._alarm(rid, "max_duration", f"ran longer than max_duration {limit.describe()} "
                                         f"(running since {to_iso(started)})", now)
        return limit

    def _alarm(self, rid, kind, message, now):
        self.store.log(rid, now, message)
        for fn in self._alarm_listeners:
            self.store.after_commit(functools.partial(_call_alarm_listener, fn, rid, kind, message))

    def _explain_pause_and_alarms(self, run, job, out):
        """Add to an explanation the pause a pending run is under and the alarms ahead of it."""
        lines = out["lines"]
        if run.state in ("scheduled", "waiting"):
            pause = pause_of(self._pauses, run)
            if pause is not None:
                out["pause"] = pause.to_jso()
                if run.state == "waiting":
                    # A pause is not a condition: waiting max_time does not end a held run.
                    lines[:] = [x for x in lines if not x.startswith("goes to error at ")]
                    verb = "held" if pause.mode == "hold" else "skipped on the next pass"
                    out["summary"] = f"{verb}: {self._pause_words(pause)}" + (
                        "; starts when the pause is lifted" if pause.mode == "hold" else "")
                else:
                    lines.insert(0, f"{self._pause_words(pause)}: when due it will be "
                                    + ("skipped" if pause.mode == "skip" else "held until the pause is lifted"))
            elif not pausable(run) and self.pause_of_job(run.job_id):
                lines.append(f"not held back by the {self._pause_words(self.pause_of_job(run.job_id))} "
                             "(it was not created by a schedule)")
        row = self.store.get_deadline(run.run_id)
        if row is not None:
            lines.append(f"deadline {row[1]}: must have succeeded by {to_iso(row[0])}")
        started = run.times.get("running")
        if run.state == "running" and job is not None and job.max_duration and started is not None:
            lines.append(f"max_duration {job.max_duration.describe()}: an alarm at "
                         f"{to_iso(started + job.max_duration.duration)}"
                         + (", and it is stopped" if job.max_duration.stop else ""))


def _call_alarm_listener(fn, rid, kind, message):
    try:
        fn(rid, kind, message)
    except Exception:  # a listener's bug must not stop the engine
        log.exception("alarm listener failed for run %s (%s)", rid, kind)


def _status_words(run):
    """Where a run stands, for a missed deadline: ``the run is still waiting (for ...)``."""
    state = run.state
    if state == "scheduled":
        return f"the run is still scheduled (for {to_iso(run.time_schedule)})"
    if state == "waiting":
        why = run.message or ""
        why = why.removeprefix("waiting ")
        return "the run is still waiting" + (f" ({why})" if why else "")
    if state in ACTIVE:
        return f"the run is still {state} (since {to_iso(run.times.get(state, run.time_updated))})"
    at = run.times.get(state, run.time_updated)
    return f"the run ended {state} at {to_iso(at)}" + (f": {run.message}" if run.message else "")


def _seconds(delay):
    """``40 s`` for whole seconds under a minute, else format_duration's form."""
    if delay < 60 and float(delay).is_integer():
        return f"{int(delay)} s"
    return format_duration(delay)


def _planning_form(job):
    """What of a job decides its runs: all but its metadata (a new description re-plans nothing)."""
    jso = job.to_jso()
    jso.pop("metadata", None)
    return jso


def _bounded_output(data, head, tail):
    """(kept bytes, bytes dropped): the first ``head`` and last ``tail`` bytes, as a process's output is kept."""
    data = bytes(data)
    if len(data) <= head + tail:
        return data, 0
    dropped = len(data) - head - tail
    return data[:head] + dropped_marker(dropped) + data[len(data) - tail:], dropped


def outcome(res):
    """(state, message) for a shepherd's result."""
    if res.get("error"):
        return "error", res["error"]
    notes = []
    if res.get("timed_out"):
        notes.append("timed out")
    elif res.get("stopped"):
        notes.append("stopped")
    if res.get("group_killed"):
        count = res["group_killed"]
        notes.append(f"SIGKILL after the grace period to {count} process{'es' if count != 1 else ''}"
                     " it left in its group")
    if res.get("group_left"):
        notes.append(f"{res['group_left']} of them survived it")
    lost = (res.get("output") or {}).get("bytes_lost")
    if lost:
        notes.append(f"{lost} bytes of output lost: the disk was full")
    suffix = f" ({', '.join(notes)})" if notes else ""
    if res.get("signal"):
        return "failure", f"killed by {res['signal']}{suffix}"
    code = res.get("exit_code")
    if code == 0:
        return "success", f"exit code 0{suffix}"
    return "failure", f"exit code {code}{suffix}"

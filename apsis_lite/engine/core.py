"""The scheduler engine: the Engine facade, the pass and the loop, over one collaborator per concern.

``Engine.tick(now)`` does one pass and returns the time it next wants to be
woken; the loop in ``serve_forever`` only calls it and waits on an event, so
tests drive the engine with explicit times. The engine owns the pass, the
loop, its backoff and the read-back after a failed write; the work is done
by the collaborators the package docstring lists, which it makes and wires.
Operations from the API, pages and CLI are methods here too: every state
change goes through the same compare-and-set store transition, committed
before it is acted on.
"""

import logging
import threading
import time

from apsis_lite.engine.alarms import Alarms
from apsis_lite.engine.catalog import JobCatalog
from apsis_lite.engine.collecting import Collector, outcome
from apsis_lite.engine.faults import RunGuard, disk_fault, raise_if_fault
from apsis_lite.engine.folders_ahead import PREPARE_AHEAD, FoldersAhead
from apsis_lite.engine.health import Backoff, Health
from apsis_lite.engine.inserver_runs import InServerRuns
from apsis_lite.engine.launching import Starter
from apsis_lite.engine.operations import Operations
from apsis_lite.engine.pauses import Pauses
from apsis_lite.engine.planning import PLAN_BUDGET, Planner, slot_key
from apsis_lite.engine.reactions import Reactions
from apsis_lite.engine.recovery import Recovery
from apsis_lite.engine.reruns import Reruns
from apsis_lite.engine.stopping import Stopper
from apsis_lite.engine.waitlist import WaitingRuns
# The built-in housekeeping program types register themselves on import.
import apsis_lite.engine.housekeeping_programs  # noqa: F401,E402
from apsis_lite.errors import StoreUnavailable
from apsis_lite.timeutil import format_duration, to_iso

# Names this module has always offered, now defined with their owners.
__all__ = ["Engine", "PREPARE_AHEAD", "disk_fault", "outcome", "raise_if_fault", "slot_key"]

log = logging.getLogger("apsis_lite.engine")

# How early the engine's timer fires before a due time, and how it waits
# the rest; see _sleep_until.
WAKE_EARLY = 0.005
FINE_STEP = 0.0005


class Engine:
    """Owns scheduling and every run state change: the facade the service, web and tests use."""

    def __init__(self, config, store, launcher, clock=time.time, since_now=False):
        self.config = config
        self.store = store
        self.launcher = launcher
        self.clock = clock
        self.since_now = since_now
        self._wake = threading.Event()
        self._next_sweep = 0.0
        self._next_checkpoint = 0.0
        self.started = False
        # How a pass that left work for the next (planning, folders to write)
        # yields; the service makes it "until the event loop is idle", so that a
        # web request is answered whole between two passes, not a step per pass.
        self.yield_busy = lambda: time.sleep(0)
        # Health, and what a failed transaction left to do: memory may be
        # ahead of the database until it is read again (see _resync).
        # The engine passes at least every sweep_interval, even when idle.
        self.health = Health(max_pass_age=max(30.0, 3 * config.sweep_interval))
        self._backoff = Backoff()
        self._resync_pending = False
        self._faults_seen = store.faults
        # fn(seconds) after each pass that succeeded (the metrics' pass times).
        self.pass_listeners = []
        self._wire(config, store, launcher, clock, since_now)
        store.add_listener(self._reactions.on_change)

    def _wire(self, config, store, launcher, clock, since_now):
        """Make the collaborators, each with what it needs (cycles go through a lambda)."""
        self._catalog = catalog = JobCatalog(config, store, clock)
        self._folders = folders = FoldersAhead(store, launcher)
        self._pauses = pauses = Pauses(store, clock, catalog, self.wake)
        self._waiting = waiting = WaitingRuns(config, store, catalog, pauses, folders)
        guard = RunGuard(store, waiting.forget, folders.discard)
        self._alarms = alarms = Alarms(store, catalog, lambda rid, why: self._stopper.stop(rid, why=why, expected=False))
        self._inserver = inserver = InServerRuns(config, store, clock, guard, self.wake)
        self._starter = starter = Starter(config, store, clock, launcher, guard, catalog, pauses, waiting,
                                          folders, alarms, inserver)
        self._collector = collector = Collector(store, clock, launcher, guard, alarms, inserver, starter.launch)
        self._stopper = stopper = Stopper(store, clock, launcher, folders, inserver, collector.reconcile)
        self._planner = planner = Planner(config, store, catalog, starter, stopper, alarms, folders)
        self._reruns = reruns = Reruns(store, catalog, starter.push_due, alarms.arm_deadline)
        self._reactions = Reactions(store, waiting, alarms, reruns, self.wake)
        self._recovery = Recovery(store, launcher, since_now, guard, planner, starter, stopper, alarms,
                                  waiting, collector)
        self._operations = Operations(config, store, clock, launcher, catalog, starter, waiting, folders,
                                      alarms, self.wake)

    # -- jobs ------------------------------------------------------------------

    @property
    def jobs(self) -> dict:
        """The jobs folder's jobs, by id."""
        return self._catalog.jobs

    @property
    def calendars(self):
        """The calendar library job files were loaded with (for ad hoc jobs)."""
        return self._catalog.calendars

    @calendars.setter
    def calendars(self, calendars):
        self._catalog.calendars = calendars

    def set_jobs(self, jobs, errors):
        """Install the loaded jobs (and their load errors); once started, re-plan what changed.

        A changed job's runs still scheduled for its future slots are skipped
        (their slots released) and its slots planned again from its new
        schedules; a removed job's are skipped and it plans no more; an added
        job is planned from now. Runs already waiting or beyond keep what
        they were bound with. Returns ``{"added", "changed", "removed"}``
        (job ids) and ``"skipped_runs"`` (how many were cancelled).
        """
        new = dict(jobs)
        added, changed, removed = self._catalog.changes(new)
        summary = {"added": added, "changed": changed, "removed": removed, "skipped_runs": 0}
        now = self.clock()
        if self.started and (changed or removed):
            # On disk first: if this fails (a full disk), the engine keeps the
            # jobs it had, and the next reload finds the same changes to make.
            with self.store.write():
                for job_id in changed + removed:
                    why = "job file changed; re-planned" if job_id in new else "job file deleted"
                    summary["skipped_runs"] += self._planner.unplan(job_id, now, why)
        touched = set(added) | set(changed) | set(removed)
        self._catalog.install(new, errors, touched)
        if not touched:
            return summary
        self._planner.replan(added, changed, touched, now)
        self.wake()
        return summary

    @property
    def job_errors(self) -> list:
        """Job files that failed to load, then jobs whose planning failed (broken until their file changes)."""
        return self._catalog.job_errors

    def broken(self, job_id):
        """Why a job cannot be scheduled (its planning failed), or None."""
        return self._catalog.broken(job_id)

    def get_job(self, job_id):
        """A job from the jobs folder, or an ad hoc job stored in the database."""
        return self._catalog.get_job(job_id)

    def next_times(self, job, count=10, after=None):
        """The next ``count`` due times of a job, with the args each run will get (computed, not stored)."""
        return self._catalog.next_times(job, count, after)

    # -- the loop ----------------------------------------------------------------

    def wake(self):
        self._wake.set()

    def next_start(self):
        """When the next run is due to start (inf if none is); background work stands aside then."""
        return self._starter.next_wake()

    def notice(self, kind, run_id):
        """A shepherd said a run is running or done (called from the notify server)."""
        self._collector.notice(kind, run_id)
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
            began = time.perf_counter()
            wake_at = self.tick(self.clock())
            for fn in self.pass_listeners:
                fn(time.perf_counter() - began)
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
        self._reactions.in_pass = True
        try:
            return self._tick(now)
        finally:
            self._reactions.in_pass = False
            if self._reactions.pending:  # made by another thread after this pass looked
                self.wake()

    def _tick(self, now):
        self._collector.handle_notices()
        self._inserver.record(now)
        self._starter.recheck(self._waiting.polls_due(now), now)
        self._react(now)
        self._release_paused(now)
        self._waiting.expire(now)
        self._alarms.fire(now)
        self._stopper.stop_due(now)  # first: a run whose stop time has passed must not start
        self._starter.start_due(now)
        planned_all = self._planner.plan_due(now)
        self._starter.start_due(now)
        prepared_all = self._folders.prepare_soon(now, PLAN_BUDGET)
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
        self._react(now)
        if save_low_water:
            self._reruns.save_low_water(self._reactions.pending_run_ids())
        if not planned_all or not prepared_all or self._reactions.pending or self._pauses.changed:
            return now
        return min(self._next_sweep, self._next_checkpoint, self._starter.next_wake(),
                   self._folders.next_wake(), self._planner.next_wake(), self._waiting.next_wake(),
                   self._stopper.next_wake(), self._alarms.next_wake())

    def _react(self, now):
        """React to committed state changes; waiting runs they may free are checked again."""
        self._starter.recheck(self._reactions.process(now), now)

    def _release_paused(self, now):
        """Check again the runs held by pauses set or lifted since the last pass."""
        woken = set()
        for scope in self._pauses.take_changes():
            woken |= self._waiting.woken_by(("pause", scope))
        self._starter.recheck(sorted(woken), now)

    def _sweep(self, now):
        """Catch completions whose notice was lost, and specs nobody claimed."""
        self._collector.sweep(now)

    def _plan_due(self, now, budget=PLAN_BUDGET):
        """One planning step (see Planner.plan_due); False if it left work for the next pass."""
        return self._planner.plan_due(now, budget)

    # -- start-up and read-back -----------------------------------------------------

    def recover(self):
        """Re-attach to the world as the database and run folders describe it (at start-up).

        Tried again until it succeeds if the database cannot be written.
        """
        self._recovery.read_boot()
        # Faults met by earlier tries are undone by this one: no resync after it.
        self._faults_seen = self.store.faults
        self._read_back("restart")
        self._recovery.save_boot()
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
        self._read_back("resync")
        self._resync_pending = False

    def _read_back(self, after):
        """Forget what memory holds of runs and planning, and read it all again (see Recovery)."""
        for part in (self._starter, self._folders, self._planner, self._waiting, self._stopper, self._alarms):
            part.reset()
        self._pauses.load()
        now = self.clock()
        self._recovery.load(now, after)
        with self.store.write():
            self._reruns.recover(now)
            self._reruns.save_low_water(self._reactions.pending_run_ids())

    # -- operations (API, pages, CLI) ----------------------------------------------------

    def submit(self, job_id, args=None, when=None, user=None, why="submitted"):
        """An ad hoc run of an existing job with ``args``, now or at ``when`` (epoch)."""
        return self._operations.submit(job_id, args, when, user, why)

    def submit_program(self, program, when=None, user=None):
        """An ad hoc run of an inline program, stored as a transient job."""
        return self._operations.submit_program(program, when, user)

    def submit_job(self, definition, args=None, when=None, user=None):
        """An ad hoc run of an inline job definition (job-file form, templates and all)."""
        return self._operations.submit_job(definition, args, when, user)

    def start(self, run_id, user=None):
        """Start a scheduled or waiting run now, skipping its wait for time and conditions."""
        return self._operations.start(run_id, user)

    def skip(self, run_id, user=None):
        """Skip a scheduled or waiting run."""
        return self._operations.skip(run_id, user)

    def stop(self, run_id, user=None, why="stop requested"):
        """Stop a running run: its stop signal, then SIGKILL after the grace period."""
        return self._stopper.stop(run_id, user, why)

    def signal(self, run_id, name, user=None):
        """Send a named signal to a running run's process group."""
        return self._operations.signal(run_id, name, user)

    def rerun(self, run_id, user=None):
        """A new run of a finished run's job and args, in the same rerun group."""
        return self._operations.rerun(run_id, user)

    def mark(self, run_id, state, user=None):
        """Mark a finished run as another finished state."""
        return self._operations.mark(run_id, state, user)

    def explain(self, run_id):
        """Why a run is in its state: ``{"run_id", "state", "summary", "lines", ...}``."""
        run = self.store.get_run(run_id)
        job = self._catalog.find_job(run.job_id)
        out = self._waiting.explain(run, job, self.clock())
        self._pauses.explain(run, out)
        self._alarms.explain(run, job, out)
        return out

    @property
    def inserver(self):
        """The runner of in-server programs (see inserver.py), made when first needed."""
        return self._inserver.runner

    # -- pauses and alarms -------------------------------------------------------------

    @property
    def pauses(self) -> list:
        """Every pause in force, the global one first."""
        return self._pauses.pauses

    def job_pause(self, job_id):
        """A job's own pause (``job_id`` None: the global pause), or None."""
        return self._pauses.job_pause(job_id)

    def pause_of_job(self, job_id):
        """The pause a job's scheduled runs are under (global first), or None."""
        return self._pauses.pause_of_job(job_id)

    def pause(self, job_id=None, reason="", mode="skip", user=None):
        """Pause every job (``job_id`` None) or one job; replaces a pause already there."""
        return self._pauses.pause(job_id, reason, mode, user)

    def resume(self, job_id=None, user=None):
        """Lift a pause; the runs it held are checked again (and start if nothing else holds them)."""
        return self._pauses.resume(job_id, user)

    def add_alarm_listener(self, fn):
        """Call ``fn(run_id, kind, message)`` when a run misses its deadline or max_duration.

        ``kind`` is ``deadline`` or ``max_duration``; called after the log
        line saying so has committed, in the engine's thread: be quick.
        """
        self._alarms.add_listener(fn)

    def _arm_deadline(self, job, run, now):
        """Record a new run's deadline, if its job has one still ahead (see Alarms)."""
        self._alarms.arm_deadline(job, run, now)

    @property
    def _alarmed(self) -> set:
        """Runs whose max_duration alarm was reported and that have not finished."""
        return self._alarms.alarmed

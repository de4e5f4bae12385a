"""Recovery: the engine's memory read back from the database and run folders.

At start-up (``restart``) and after a transaction failed (``resync``: it
was rolled back, what the engine did in memory meanwhile was not): pending
runs are filed as due again, missed slots caught up, deadlines re-armed,
and each run in flight re-attached to its shepherd. A restart of the
machine since the server last ran (its boot id changed) makes what was not
fsynced prove nothing.
"""

from apsis_lite.model.runs import ACTIVE
from apsis_lite.timeutil import to_iso

# Meta key: the machine's boot id when the server last started (see Collector.reconcile).
BOOT_KEY = "boot_id"


class Recovery:
    """Reads back what the store says; owns the boot id check."""

    def __init__(self, store, launcher, since_now, guard, planner, starter, stopper, alarms, waiting, collector):
        self.store = store
        self.launcher = launcher
        self.since_now = since_now
        self._guard = guard
        self._planner = planner
        self._starter = starter
        self._stopper = stopper
        self._alarms = alarms
        self._waiting = waiting
        self._collector = collector
        self._boot = None
        self.rebooted = False  # since the server last started (set by read_boot)

    def read_boot(self):
        """Compare the machine's boot id with the one saved at the last start (once per start-up)."""
        if self._boot is None:
            # Read once: a retry must not see the boot id its first try saved.
            self._boot = self.launcher.boot_id() or ""
            self.rebooted = not self._boot or self.store.get_meta(BOOT_KEY) != self._boot

    def save_boot(self):
        self.store.set_meta(BOOT_KEY, self._boot)
        self._boot = None  # saved: a later start-up compares with it

    def load(self, now, after):
        """Fill the collaborators' memory from the database and run folders.

        ``after``: ``restart`` (the server started) or ``resync`` (the
        database failed a write). Missed slots are caught up after either.
        """
        fresh = self.since_now and after == "restart"
        self._planner.load({} if fresh else self.store.get_horizons(), now)
        with self.store.write():
            for run in self.store.runs_in_states(["scheduled"]):
                if fresh and run.slot is not None and run.time_schedule < now:
                    self.store.transition(
                        run.run_id, "scheduled", "skipped", now,
                        f"missed: due at {to_iso(run.time_schedule)} while the server was down; "
                        "the server started with --since now")
                    continue
                self._starter.push_due(run.time_schedule, run.run_id)
                self._stopper.push_stop(run)
            if not fresh:
                self._planner.catch_up(now, "while the server was down" if after == "restart"
                                       else "while the database could not be written")
        for run in self.store.runs_in_states(["waiting"]):
            self._starter.push_due(run.time_schedule, run.run_id)
            self._stopper.push_stop(run)
        self._alarms.load()
        rebooted = self.rebooted
        for run in self.store.runs_in_states(sorted(ACTIVE)):
            self._stopper.push_stop(run)
            self._alarms.arm_max_duration(run)
            self._waiting.hold_resources(run.run_id, run.conditions)
            with self._guard.item(now, run.run_id, "re-attaching to it"):
                self._collector.reconcile(run, now, after=after, rebooted=rebooted)
        self._retire_idle_folders()

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

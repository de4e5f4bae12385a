"""The pauses in force: setting and lifting them, and what they mean for a run.

A pause is looked at when a run of a schedule slot (or an automatic rerun)
comes due: with ``skip`` it is skipped, with ``hold`` it waits, filed in the
waiting index under ("pause", scope) like any other wait, so that lifting
the pause wakes exactly the runs it held (see waitlist.py). Pauses are rows
in the store, so that they outlive a restart.
"""

import logging
from collections import deque

from apsis_lite.errors import BadRequest, TransitionError
from apsis_lite.model.pauses import GLOBAL, Pause, pausable, pause_of

# The engine's log lines keep the logger name they had when it was one module.
log = logging.getLogger("apsis_lite.engine")


class Pauses:
    """Owns the pauses in force and the scopes set or lifted since the last pass."""

    def __init__(self, store, clock, catalog, wake):
        self.store = store
        self.clock = clock
        self._catalog = catalog
        self._wake = wake
        self._pauses = {}           # scope ('' global, else job id) -> Pause
        self._changes = deque()     # scopes set or lifted since the last pass
        self.load()

    def load(self):
        """Read the pauses in force from the store."""
        self._pauses = {scope: Pause(scope, mode, reason, user, t)
                        for scope, mode, reason, user, t in self.store.get_pauses()}

    def __bool__(self):
        return bool(self._pauses)

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

    def applying_to(self, run):
        """The pause a run is under, or None."""
        return pause_of(self._pauses, run)

    def pause(self, job_id=None, reason="", mode="skip", user=None):
        """Pause every job (``job_id`` None) or one job; replaces a pause already there."""
        scope = GLOBAL if job_id is None else job_id
        if scope and scope not in self._catalog.jobs:
            self._catalog.get_job(scope)  # raises NotFound, saying why
            raise BadRequest(f"{scope!r} is an ad hoc job; only jobs of the jobs folder can be paused")
        now = self.clock()
        self.store.set_pause(scope, mode, reason, user, now)
        pause = self._pauses[scope] = Pause(scope, mode, reason, user, now)
        log.info("%s", pause.describe())
        # Runs held by the pause this one replaces: skipped now if it skips.
        self._changes.append(scope)
        self._wake()
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
        self._changes.append(scope)
        self._wake()
        return pause

    @property
    def changed(self) -> bool:
        """Whether pauses were set or lifted since the last ``take_changes``."""
        return bool(self._changes)

    def take_changes(self) -> list:
        """The scopes set or lifted since the last call, oldest first."""
        scopes = []
        while self._changes:
            scopes.append(self._changes.popleft())
        return scopes

    def skipping(self, run, now):
        """The ``skip`` pause a due scheduled run is to be skipped for, or None.

        A run a pause does not apply to (not made by a schedule) gets a log
        line saying so.
        """
        pause = pause_of(self._pauses, run)
        if pause is None:
            if not pausable(run) and self.pause_of_job(run.job_id):
                self.store.log(run.run_id, now, "not held back by the "
                               + words(self.pause_of_job(run.job_id))
                               + "; only scheduled runs and automatic reruns are paused")
            return None
        return pause if pause.mode == "skip" else None

    def explain(self, run, out):
        """Add to an explanation the pause a pending run is under."""
        if run.state not in ("scheduled", "waiting"):
            return
        lines = out["lines"]
        pause = pause_of(self._pauses, run)
        if pause is not None:
            out["pause"] = pause.to_jso()
            if run.state == "waiting":
                # A pause is not a condition: waiting max_time does not end a held run.
                lines[:] = [x for x in lines if not x.startswith("goes to error at ")]
                verb = "held" if pause.mode == "hold" else "skipped on the next pass"
                out["summary"] = f"{verb}: {words(pause)}" + (
                    "; starts when the pause is lifted" if pause.mode == "hold" else "")
            else:
                lines.insert(0, f"{words(pause)}: when due it will be "
                                + ("skipped" if pause.mode == "skip" else "held until the pause is lifted"))
        elif not pausable(run) and self.pause_of_job(run.job_id):
            lines.append(f"not held back by the {words(self.pause_of_job(run.job_id))} "
                         "(it was not created by a schedule)")


def words(pause):
    """``global pause: <reason> (by <user>)`` or ``job paused: ...``."""
    by = f" (by {pause.user})" if pause.user else ""
    what = "global pause" if pause.scope == GLOBAL else "job paused"
    return f"{what}: {pause.reason}{by}"

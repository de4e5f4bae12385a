"""Operator actions from the API, pages and CLI: submit, start, skip, signal, rerun, mark.

Each goes through the same compare-and-set store transition as the engine's
own changes, committed before it is acted on; a run that changed state
meanwhile is reported, never overwritten. (Stopping is in stopping.py.)
"""

import secrets
import time

from apsis_lite.errors import BadRequest, NotFound, TransitionError
from apsis_lite.model import jobs as jobs_mod
from apsis_lite.model.runs import FINISHED, format_run_id, parse_state
from apsis_lite.timeutil import to_iso


class Operations:
    """Carries out operator actions on runs."""

    def __init__(self, config, store, clock, launcher, catalog, starter, waiting, folders, alarms, wake):
        self.config = config
        self.store = store
        self.clock = clock
        self.launcher = launcher
        self._catalog = catalog
        self._starter = starter
        self._waiting = waiting
        self._folders = folders
        self._alarms = alarms
        self._wake = wake

    def submit(self, job_id, args=None, when=None, user=None, why="submitted"):
        """An ad hoc run of an existing job with ``args``, now or at ``when`` (epoch).

        ``why`` starts its log (a schedule action says which run asked for it).
        """
        job = self._catalog.get_job(job_id)
        args = jobs_mod.check_args(job, args or {})
        return self._create_adhoc_run(job, args, when, user, why)

    def submit_program(self, program, when=None, user=None):
        """An ad hoc run of an inline program, stored as a transient job.

        Its text is taken literally: it was typed, not written as a template.
        """
        job_id = self._adhoc_job_id()
        job = jobs_mod.adhoc_job(program, job_id, sudo_for_user=self.config.sudo_for_user)
        self.store.put_adhoc_job(job_id, {"literal": True, "job": job.to_jso()}, self.clock())
        return self._create_adhoc_run(job, {}, when, user, "submitted inline")

    def submit_job(self, definition, args=None, when=None, user=None):
        """An ad hoc run of an inline job definition (job-file form, templates and all)."""
        job_id = self._adhoc_job_id()
        job = jobs_mod.job_from_jso(definition, job_id, calendars=self._catalog.calendars,
                                    min_interval=self.config.min_interval,
                                    sudo_for_user=self.config.sudo_for_user)
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
        self._starter.push_due(when, run.run_id)
        self._alarms.arm_deadline(job, run, now)
        self._wake()
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
        self._waiting.forget(run_id)
        # It holds its resources like any active run, over capacity if need be.
        self._waiting.hold_resources(run_id, run.conditions)
        self._starter.launch([self.store.get_run(run_id)])
        return self.store.get_run(run_id)

    def skip(self, run_id, user=None):
        run = self.store.get_run(run_id)
        if run.state not in ("scheduled", "waiting"):
            raise TransitionError(f"run {format_run_id(run_id)} is {run.state}; only a scheduled or waiting run can be skipped")
        if not self.store.transition(run_id, run.state, "skipped", self.clock(), "skipped by hand", user=user):
            raise TransitionError(f"run {format_run_id(run_id)} changed state meanwhile; try again")
        self._folders.discard(run_id)
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
            job = self._catalog.get_job(run.job_id)
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

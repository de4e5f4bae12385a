"""Automatic reruns: the next try of a run that ended in a state its job reruns.

Each rerun n of a rerun group has a unique slot, so it is never made twice;
a checkpointed low-water mark lets a restart make the reruns lost when the
server stopped between a failure and its rerun, without reading the whole
history. (The policy itself is model/reruns.py.)
"""

import logging

from apsis_lite.engine.faults import raise_if_fault
from apsis_lite.errors import BadRequest
from apsis_lite.model import jobs as jobs_mod
from apsis_lite.model.runs import FINISHED, format_run_id
from apsis_lite.timeutil import format_duration, to_iso

# The engine's log lines keep the logger name they had when it was one module.
log = logging.getLogger("apsis_lite.engine")

# Meta key: run ids below it had finished and been reacted to at the last checkpoint.
LOW_WATER_KEY = "reacted_low_water"


class Reruns:
    """Makes automatic reruns; ``schedule(when, run_id)`` files a new run as due, ``arm_deadline`` its deadline."""

    def __init__(self, store, catalog, schedule, arm_deadline):
        self.store = store
        self._catalog = catalog
        self._schedule = schedule
        self._arm_deadline = arm_deadline

    def after_finish(self, rid, job_id, state, now):
        """A run ended in ``state``: its rerun, if its job makes one (a bad job does not stop the others)."""
        try:
            with self.store.atomic():
                self.maybe_rerun(rid, job_id, state, now)
        except Exception as exc:  # a bad job must not stop the others' reruns
            raise_if_fault(exc)
            log.exception("scheduling a rerun of run %s failed", rid)

    def maybe_rerun(self, rid, job_id, state, now, finished=None, quiet=False):
        """Schedule the next automatic rerun of a run that ended in ``state``, if its job says so.

        ``finished``: when it ended, if not now (its rerun is due its delay
        after that, or now); ``quiet``: log nothing when no rerun is left.
        """
        # A job-folder job is a dict look-up; only ad hoc ones are read from the store.
        job = self._catalog.jobs.get(job_id) or (
            self._catalog.find_job(job_id) if job_id.startswith("adhoc/") else None)
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
        self._schedule(when, new.run_id)
        self._arm_deadline(job, new, now)

    def recover(self, now):
        """Create the automatic reruns lost when the server stopped between a failure and its rerun.

        Only runs that finished after the low-water mark saved at the last
        checkpoint are looked at (the (state, run_id) index; see
        ``save_low_water``), not the whole history. A run that already has
        a rerun, or was marked by hand, is left alone; rerun n's unique slot
        keeps this from ever making one twice.
        """
        low = self.store.get_meta(LOW_WATER_KEY)
        states = sorted({st for job in self._catalog.jobs.values() if job.reruns and job.reruns.count
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
                    self.maybe_rerun(run.run_id, run.job_id, run.state, now,
                                     finished=run.times.get(run.state, run.time_updated), quiet=True)
            except Exception as exc:  # a bad job must not stop the others' reruns
                raise_if_fault(exc)
                log.exception("recovering the rerun of run %s failed", run.run_id)

    def save_low_water(self, pending):
        """Record below which run ids every finished run has been reacted to (for ``recover``).

        ``pending``: ids of runs that finished and were not reacted to yet.
        """
        low = self.store.unfinished_low_water()
        self.store.set_meta(LOW_WATER_KEY, min([low, *pending]))


def _seconds(delay):
    """``40 s`` for whole seconds under a minute, else format_duration's form."""
    if delay < 60 and float(delay).is_integer():
        return f"{int(delay)} s"
    return format_duration(delay)

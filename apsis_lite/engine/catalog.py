"""The jobs the engine knows: the jobs folder's, their load errors, the broken ones, ad hoc ones.

A job whose planning raised is broken: it is not planned again until its
file changes, and it is listed with the load errors.
"""

import heapq
import itertools
import logging
import os

from apsis_lite.engine.slices import Slices
from apsis_lite.errors import ApsisError, JobFileError, NotFound, StoreUnavailable
from apsis_lite.model import jobs as jobs_mod
from apsis_lite.timeutil import from_epoch

# The engine's log lines keep the logger name they had when it was one module.
log = logging.getLogger("apsis_lite.engine")


class JobCatalog:
    """Looks jobs up, and remembers which failed to load or to plan."""

    def __init__(self, config, store, clock):
        self.config = config
        self.store = store
        self.clock = clock
        self.jobs = {}
        self.calendars = None  # the calendar library job files were loaded with (for ad hoc jobs)
        self.any_max_duration = False
        self._load_errors = []  # job files that failed to load
        self._errors_by_id = {}
        self._broken = {}       # job_id -> why its planning failed; not planned until its file changes

    def changes(self, jobs):
        """(added, changed, removed) job ids, from the jobs installed to ``jobs``."""
        old, new = self.jobs, jobs
        added = sorted(j for j in new if j not in old)
        removed = sorted(j for j in old if j not in new)
        # Comparing 10,000 jobs' planning forms takes a while: in slices (see Slices).
        pause, changed = Slices(), []
        for j in sorted(new):
            if j in old and new[j] is not old[j] and _planning_form(new[j]) != _planning_form(old[j]):
                changed.append(j)
            pause()
        return added, changed, removed

    def install(self, jobs, errors, touched):
        """Make ``jobs`` the jobs folder's jobs; the ``touched`` ones get a new chance to plan."""
        self.jobs = jobs
        self.any_max_duration = any(j.max_duration for j in self.jobs.values())
        self._load_errors = list(errors)
        self._errors_by_id = {}
        for err in self._load_errors:
            self._errors_by_id.setdefault(self._job_id_of(err.path), []).append(err)
        for job_id in touched:
            self._broken.pop(job_id, None)  # a new file gets a new chance

    def _job_id_of(self, path):
        rel = os.path.relpath(path, self.config.jobs_dir)
        return os.path.splitext(rel)[0].replace(os.sep, "/")

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

    def is_broken(self, job_id) -> bool:
        return job_id in self._broken

    def break_job(self, job_id, why):
        """Stop planning a job whose planning raised; the rest of the jobs go on."""
        self._broken[job_id] = why
        log.error("job %s cannot be scheduled: %s; no runs are planned until its file changes", job_id, why)

    def get_job(self, job_id):
        """A job from the jobs folder, or an ad hoc job stored in the database."""
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        stored = self.store.get_adhoc_job(job_id)
        if stored is None:
            errors = self._errors_by_id.get(job_id)
            if errors:
                raise NotFound(f"job {job_id!r} failed to load: " + "; ".join(str(e) for e in errors))
            raise NotFound(f"no job {job_id!r}")
        return jobs_mod.job_from_jso(stored["job"], job_id, adhoc=stored["literal"], calendars=self.calendars,
                                     min_interval=None,
                                     sudo_for_user=getattr(self.config, "sudo_for_user", False))

    def find_job(self, job_id):
        """The job, or None if it is gone or no longer loads."""
        try:
            return self.get_job(job_id)
        except StoreUnavailable:  # not knowing is not "gone": the pass fails and is tried again
            raise
        except ApsisError:
            return None

    def catch_up_of(self, job_id):
        """A job's ``catch_up`` policy, or None (also for a job no longer in the folder)."""
        job = self.jobs.get(job_id)
        return job.catch_up if job is not None else None

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
                self.break_job(job.job_id, f"computing its due times failed: {type(exc).__name__}: {exc}")
            return []


def _planning_form(job):
    """What of a job decides its runs: all but its metadata (a new description re-plans nothing)."""
    jso = job.to_jso()
    jso.pop("metadata", None)
    return jso

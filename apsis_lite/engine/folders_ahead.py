"""Run folders written ahead of time, for runs due within PREPARE_AHEAD.

Creating a folder and a file is slow on some file systems (a millisecond on
a busy VM disk), so it is done before the due time rather than on the way
from due to started. A spec on disk starts nothing by itself: only a
request to the agent does, and that is sent after 'starting' is committed.
"""

import heapq
import logging
import math
import time

from apsis_lite.engine.faults import disk_fault
from apsis_lite.errors import StoreUnavailable
from apsis_lite.model.programs import parse_program

# The engine's log lines keep the logger name they had when it was one module.
log = logging.getLogger("apsis_lite.engine")

# How long before its due time a run's folder and spec are written. A folder
# made new (no spare to recycle) costs six file creations, up to a few ms on a
# slow file system: enough lead for a thousand runs due together.
PREPARE_AHEAD = 3.0
# With at least this many folders written in one go, the agent is asked to
# fork shepherds for them ahead too (most are reused, and a fork at the due
# time costs a millisecond and more on a machine the batch keeps busy).
WARM_FROM = 8


class FoldersAhead:
    """Owns which runs still need their folder written, and which have one on disk."""

    def __init__(self, store, launcher):
        self.store = store
        self.launcher = launcher
        self._unprepared = []   # heap of (time_schedule, run_id) of scheduled runs, until their folder is written
        self._prepared = set()  # run ids whose spec is already on disk

    def reset(self):
        self._unprepared, self._prepared = [], set()

    def expect(self, t, run_id):
        """A run is due at ``t``: write its folder PREPARE_AHEAD before."""
        heapq.heappush(self._unprepared, (t, run_id))

    def next_wake(self):
        return self._unprepared[0][0] - PREPARE_AHEAD if self._unprepared else math.inf

    def is_prepared(self, run_id) -> bool:
        return run_id in self._prepared

    def prepare_soon(self, now, budget):
        """Write the run folders of runs due within PREPARE_AHEAD.

        Returns False if it stopped after ``budget`` seconds with folders
        left to write, so that due runs and requests are served in between.
        """
        deadline = time.monotonic() + budget
        prepared = 0
        try:
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
                    # A remote run's host is picked as it starts (a group's choice), so its
                    # folder is written then.
                    if program.is_noop or not program.runs_process or program.host:
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
                prepared += 1
            return True
        finally:
            if prepared >= WARM_FROM:
                self._warm(prepared)

    def _warm(self, count):
        try:
            self.launcher.warm(count)
        except Exception as exc:  # only sooner starts are lost: they fork as they go
            log.debug("could not have %d shepherds forked ahead: %s", count, exc)

    def take(self, run, program):
        """The run is starting: its folder, written now unless it was ahead of time."""
        if run.run_id not in self._prepared:
            self.launcher.prepare(run, program)
        self._prepared.discard(run.run_id)

    def discard(self, run_id):
        """Remove the folder written ahead of time for a run that will not start."""
        if run_id in self._prepared:
            self._prepared.discard(run_id)
            self.store.after_commit(lambda: self.launcher.remove(run_id))

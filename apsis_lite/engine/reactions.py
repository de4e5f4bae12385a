"""Reactions to committed run state changes, whoever made them.

The store calls ``on_change`` after each commit, in the writer's thread; the
change is queued and reacted to in the engine's pass: a finished run frees
its resources, can no longer raise its max_duration alarm, and may get an
automatic rerun; any change of a run wakes the waiting runs that wait on
runs of its job and args.
"""

from collections import deque

from apsis_lite.model.runs import FINISHED


class Reactions:
    """Owns the queue of changes not reacted to yet."""

    def __init__(self, store, waiting, alarms, reruns, wake):
        self.store = store
        self._waiting = waiting
        self._alarms = alarms
        self._reruns = reruns
        self._wake = wake
        self._changes = deque()     # (run_id, old state, new state)
        self.in_pass = False        # set by the engine while a pass runs

    def on_change(self, run_id, old, new):
        """Store listener (after each commit, in the writer's thread): queue what matters.

        A change made by the engine's own pass is handled at the end of that
        pass; waking the loop for it would cost a whole extra pass per run.
        """
        if (new in FINISHED and old not in FINISHED) or len(self._waiting):
            self._changes.append((run_id, old, new))
            if not self.in_pass:
                self._wake()

    @property
    def pending(self) -> bool:
        return bool(self._changes)

    def pending_run_ids(self) -> list:
        """Runs whose change is not reacted to yet (finished, perhaps, without their rerun)."""
        return [rid for rid, _, _ in self._changes]

    def process(self, now) -> list:
        """React to the queued changes; returns the waiting runs to check again, oldest first."""
        if not self._changes:
            return []
        woken = set()
        while self._changes:
            rid, old, new = self._changes.popleft()
            key = self.store.run_key(rid)
            if key is None:
                continue
            if new in FINISHED and old not in FINISHED:
                woken |= self._waiting.finished(rid)
                self._alarms.run_finished(rid)
                self._reruns.after_finish(rid, key[0], new, now)
            if len(self._waiting):
                woken |= self._waiting.woken_by(("runs", *key))
        return sorted(woken)

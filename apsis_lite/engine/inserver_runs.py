"""The engine's side of in-server programs: starting them, recording their results, abandoning them.

The runner (inserver.py, worker threads) is made when first needed. A
result it reports is held in memory until the next pass records it; it is
forgotten only once it is on disk, since memory holds its only copy.
"""

import functools

from apsis_lite.agent import dropped_marker
from apsis_lite.model.runs import ACTIVE


class InServerRuns:
    """Owns the runner and the results not yet recorded."""

    def __init__(self, config, store, clock, guard, wake):
        self.config = config
        self.store = store
        self.clock = clock
        self._guard = guard
        self._wake = wake
        self._runner = None
        self._results = {}

    @property
    def runner(self):
        """The runner of in-server programs (see inserver.py), made when first needed."""
        if self._runner is None:
            from apsis_lite.engine.inserver import InServerRunner
            self._runner = InServerRunner(self.config.data_dir, self._finished)
        return self._runner

    def start_after_commit(self, run, program):
        """Start ``program`` for ``run`` once its 'running' has committed."""
        self.store.after_commit(functools.partial(self.runner.start, run, program))

    def in_flight(self, rid) -> bool:
        """Whether the run's program runs here, or its result is about to be recorded."""
        return rid in self._results or (self._runner is not None and rid in self._runner)

    def abandon(self, rid):
        """The run was stopped: its call is told to stop, and whatever it returns is ignored."""
        if self._runner is not None:
            self._runner.stop(rid)
        self._results.pop(rid, None)

    def _finished(self, rid, state, message, output):
        """An in-server program ended (called in the event loop): recorded in the next pass."""
        self._results[rid] = (state, message, output)
        self._wake()

    def record(self, now):
        """Record the results of in-server programs: state, message and bounded output."""
        if not self._results:
            return
        with self.store.write():
            for rid, (state, message, output) in list(self._results.items()):
                with self._guard.item(now, rid, "recording its result"):
                    current = self.store.run_state(rid)
                    if current in ACTIVE:
                        data, dropped = _bounded_output(output, self.config.output_head, self.config.output_tail)
                        self.store.store_output_bytes(rid, data, len(output), dropped)
                        out = {"bytes_total": len(output), "bytes_kept": len(output) - dropped,
                               "bytes_dropped": dropped}
                        self.store.transition(rid, current, state, self.clock(), message, meta={"output": out})
                # Recorded, or the run ended otherwise meanwhile (a stop).
                self.store.after_commit(functools.partial(self._results.pop, rid, None))


def _bounded_output(data, head, tail):
    """(kept bytes, bytes dropped): the first ``head`` and last ``tail`` bytes, as a process's output is kept."""
    data = bytes(data)
    if len(data) <= head + tail:
        return data, 0
    dropped = len(data) - head - tail
    return data[:head] + dropped_marker(dropped) + data[len(data) - tail:], dropped

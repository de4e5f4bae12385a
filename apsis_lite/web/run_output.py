"""A run's output, from wherever it is now: the store once the run has finished,
the launcher's live file while it runs. Shared by the API and the run page."""

import os

from apsis_lite.model.runs import ACTIVE, FINISHED


def output_chunk(store, launcher, run, offset, size):
    """(bytes from ``offset``, whether that reaches the end of a finished run's output)."""
    if run.state in FINISHED:
        data = store.read_output(run.run_id, offset, size)
        if data is None:
            return b"", True
        return data, offset + len(data) >= (store.output_length(run.run_id) or 0)
    if run.state in ACTIVE:
        return launcher.read_live_output(run.run_id, offset, size), False
    return b"", False


def output_size(store, launcher, run):
    """How many bytes of output the run has now (0 before it starts)."""
    if run.state in FINISHED:
        return store.output_length(run.run_id) or 0
    if run.state in ACTIVE:
        try:
            return os.path.getsize(launcher.output_path(run.run_id))
        except OSError:
            return 0
    return 0

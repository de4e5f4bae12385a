"""Fault containment: which failures fail a whole pass, and which only the run at hand.

A failure of the database or of the data folder's disk says nothing about
the run or job being handled: it fails the pass, which is rolled back and
tried again. Any other error belongs to the run: it goes to error with the
message, and the rest of the pass goes on.
"""

import contextlib
import errno
import logging

from apsis_lite.errors import NotFound, StoreUnavailable
from apsis_lite.model.runs import FINISHED, format_run_id

log = logging.getLogger("apsis_lite.engine")

# Errors of the data folder's disk: like a failed commit, they say nothing
# about the run at hand, so the engine waits and tries again.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def disk_fault(exc):
    """StoreUnavailable for an OSError of the disk itself (full, read-only, failing); else None."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return StoreUnavailable(f"the data folder cannot be written: {exc.strerror}"
                                + (f" ({exc.filename})" if exc.filename else ""))
    return None


def raise_if_fault(exc):
    """Re-raise ``exc`` (as StoreUnavailable) if the database or its disk failed.

    Such a failure says nothing about the run or job at hand: it fails the
    whole pass, which is tried again. Any other error is that item's own.
    """
    if isinstance(exc, StoreUnavailable):
        raise exc
    fault = disk_fault(exc)
    if fault is not None:
        raise fault from exc


class RunGuard:
    """Confines a failure to the run it happened to: that run goes to error.

    ``forget_waiting(run_id)`` drops a failed run from the waiting index;
    ``discard_prepared(run_id)`` retires the folder written ahead for it.
    """

    def __init__(self, store, forget_waiting, discard_prepared):
        self.store = store
        self._forget_waiting = forget_waiting
        self._discard_prepared = discard_prepared

    @contextlib.contextmanager
    def item(self, now, run_id, what):
        """One run's share of a pass: if it raises, the run goes to error with
        the message, and the rest of the pass goes on.

        What it wrote before it raised stays, and is true: the run's log shows
        how far it got, and the error follows. (A savepoint per run would undo
        it, at a tenth of the CPU of a burst of starts.) A failure of the
        database or its disk says nothing about the run: it fails the whole
        pass, which rolls back and is tried again (see serve_forever).
        """
        try:
            yield
        except Exception as exc:
            raise_if_fault(exc)
            if isinstance(exc, NotFound) and self.store.run_state(run_id) is None:
                return  # the run is gone: nothing to do for it
            log.exception("run %s: %s failed", format_run_id(run_id), what)
            self.fail_run(run_id, now, f"{what} failed: {type(exc).__name__}: {exc}")

    def fail_run(self, rid, now, message):
        """Send an unfinished run to error with ``message``."""
        self._forget_waiting(rid)
        try:
            with self.store.atomic():
                state = self.store.run_state(rid)
                if state is not None and state not in FINISHED and \
                        self.store.transition(rid, state, "error", now, message):
                    self._discard_prepared(rid)
        except Exception as exc:  # nothing more can be done for it in this pass
            raise_if_fault(exc)
            log.exception("run %s: could not record its error", format_run_id(rid))

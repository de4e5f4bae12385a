"""The engine's health: whether it is passing, and what stops it if not.

The engine reports each pass, each failed pass and each storage failure
here; ``/api/v1/alive``, ``/stats``, the banner on every page and the log
read it. A failing pass is retried after a delay that doubles up to a cap
(``Backoff``), so no fault is ever retried in a tight loop.
"""

import logging
import threading
import time

from apsis_lite.timeutil import format_duration, to_iso

log = logging.getLogger("apsis_lite.engine")

# The engine passes at least every sweep_interval (5 s by default) even when
# idle; a pass older than this (or three sweep intervals) means it is stuck.
DEFAULT_MAX_PASS_AGE = 30.0

# While a storage failure lasts, it is logged again at most this often.
RELOG_EVERY = 60.0


class Backoff:
    """Delays that double from ``first`` up to ``cap``; ``reset`` after a success."""

    def __init__(self, first=0.5, cap=10.0):
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay

    def reset(self):
        self._next = self.first


class Health:
    """What the engine last did, and the problem that holds it back, if any."""

    def __init__(self, clock=time.time, max_pass_age=DEFAULT_MAX_PASS_AGE):
        self.clock = clock
        self.max_pass_age = max_pass_age
        self._lock = threading.Lock()
        self.state = "not started"      # not started | running | stopped
        self.started_at = None
        self.last_pass = None           # when the last pass completed
        self.stopped_reason = None
        self.storage_error = None       # message, while the database cannot be written
        self.storage_since = None
        self._storage_logged = 0.0
        self.pass_error = None          # the last failed pass's error, until a pass succeeds
        self.pass_error_since = None

    # -- reports from the engine ----------------------------------------------

    def engine_started(self):
        with self._lock:
            self.state, self.started_at, self.stopped_reason = "running", self.clock(), None

    def engine_stopped(self, reason="the server is stopping"):
        with self._lock:
            self.state, self.stopped_reason = "stopped", reason

    def pass_done(self):
        now = self.clock()
        with self._lock:
            if self.storage_error is not None:
                log.warning("the database can be written again after %s; scheduling resumed",
                            format_duration(max(0.0, now - self.storage_since)))
            if self.pass_error is not None:
                log.info("engine passes succeed again")
            self.last_pass = now
            self.storage_error = self.storage_since = None
            self.pass_error = self.pass_error_since = None

    def storage_failed(self, message):
        now = self.clock()
        with self._lock:
            first = self.storage_error is None
            self.storage_error = message
            if first:
                self.storage_since = self._storage_logged = now
                log.error("%s; runs are not started or recorded until it can be written again "
                          "(retrying, at most every %s)", message, format_duration(Backoff().cap))
            elif now - self._storage_logged >= RELOG_EVERY:
                log.error("%s (since %s); still retrying", message, to_iso(self.storage_since))
                self._storage_logged = now

    def pass_failed(self, message):
        now = self.clock()
        with self._lock:
            if self.pass_error is None:
                self.pass_error_since = now
            self.pass_error = message

    # -- reading ----------------------------------------------------------------

    def problems(self) -> list:
        """What keeps the engine from scheduling now, in words; empty when all is well."""
        now = self.clock()
        out = []
        with self._lock:
            # "not started" is no problem: tests drive an engine by hand.
            if self.state == "stopped":
                out.append(f"the engine is stopped: {self.stopped_reason}")
            if self.storage_error is not None:
                out.append(f"{self.storage_error} (since {to_iso(self.storage_since)}); runs are not "
                           "started or recorded until it can be written again")
            elif self.pass_error is not None:
                out.append(f"engine passes fail (since {to_iso(self.pass_error_since)}): {self.pass_error}")
            if self.state == "running":
                last = self.last_pass if self.last_pass is not None else self.started_at
                if last is not None and now - last > self.max_pass_age and self.storage_error is None:
                    out.append(f"the engine has not completed a pass for {format_duration(now - last)}")
        return out

    def to_jso(self) -> dict:
        problems = self.problems()
        with self._lock:
            return {
                "ok": not problems,
                "engine": self.state,
                "last_pass": to_iso(self.last_pass) if self.last_pass is not None else None,
                "storage_error": self.storage_error,
                "storage_error_since": to_iso(self.storage_since) if self.storage_since else None,
                "problems": problems,
            }

"""Password checks off the event loop, a few at a time.

A check costs an argon2id hash: some 100-250 ms of CPU, on purpose. Run in
a request's greenlet it would stop everything else in the process for that
long (the engine starting runs, other requests), so checks go to a small
pool of OS threads (argon2 releases the GIL while it hashes). The pool has
WORKERS threads (2, or 1 on a machine of 2 cores or fewer) whichever web
server is used: waitress's worker "threads" are greenlets too in this
process (gevent patches threading), so they would block the loop just the
same. The pool's threads run at a lower priority (NICE; on Linux niceness
is per thread, and the threads argon2 starts inherit it), so that on a
small machine a flood of logins takes the CPU the scheduler and its
programs leave over rather than an equal share.

Checks wait their turn in the pool, so the queue is bounded: one client
address may have at most PER_ADDRESS checks under way or waiting, and all
addresses together MAX_PENDING; beyond that a login is refused at once
(``Busy``: 429 with Retry-After) without hashing anything.
"""

import os
import threading

from apsis_lite.errors import ApsisError

#: Checks at once. One check already hashes argon2's 4 lanes in threads of its own
#: (about 1.6 cores' worth on 2 cores), so a second check at once on a small machine
#: only takes more CPU from everything else, for no more checks per second.
WORKERS = 1 if (os.cpu_count() or 1) <= 2 else 2
PER_ADDRESS = 4
MAX_PENDING = 32
RETRY_AFTER = 1  # seconds: a few checks' time
#: Niceness of the threads that hash: the engine, the pages and the programs come first.
NICE = 10


class Busy(ApsisError):
    """Too many password checks under way: from this address, or in all."""

    status = 429

    def __init__(self, message, retry_after=RETRY_AFTER):
        super().__init__(message)
        self.retry_after = retry_after


class PasswordChecks:
    """Runs ``fn(*args)`` (a password check) in a pool of ``workers`` OS threads, bounded per address."""

    def __init__(self, workers=WORKERS, per_address=PER_ADDRESS, max_pending=MAX_PENDING):
        self.workers = workers
        self.per_address = per_address
        self.max_pending = max_pending
        self._lock = threading.Lock()  # never held across a wait
        self._pending = {}  # address -> checks under way or waiting
        self._pool = None

    def pending(self, address=None) -> int:
        """Checks under way or waiting: from ``address``, or in all."""
        with self._lock:
            return self._pending.get(address, 0) if address is not None else sum(self._pending.values())

    def run(self, address, fn, *args):
        """``fn(*args)`` in the pool, once a thread is free; Busy if ``address`` (or everyone)
        already has as many checks as allowed."""
        with self._lock:
            mine = self._pending.get(address, 0)
            if mine >= self.per_address:
                raise Busy(f"too many logins at once from your address ({mine} being checked); "
                           f"try again in {RETRY_AFTER} s")
            if sum(self._pending.values()) >= self.max_pending:
                raise Busy(f"too many logins at once ({self.max_pending} being checked); "
                           f"try again in {RETRY_AFTER} s")
            self._pending[address] = mine + 1
        try:
            return self._threads().apply(_at_low_priority, (fn, *args))
        finally:
            with self._lock:
                left = self._pending[address] - 1
                if left:
                    self._pending[address] = left
                else:
                    del self._pending[address]

    def _threads(self):
        if self._pool is None:
            # Real threads even when threading is patched; made on first use, in the
            # thread (and gevent hub) that serves requests.
            from gevent.threadpool import ThreadPool
            self._pool = ThreadPool(self.workers)
        return self._pool


def _at_low_priority(fn, *args):
    """``fn(*args)`` in this pool thread, its niceness raised first (on Linux, niceness is per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except (AttributeError, OSError):  # elsewhere: at the process's priority
        pass
    return fn(*args)

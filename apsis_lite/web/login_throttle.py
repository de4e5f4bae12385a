"""Slows down password guessing at the login form.

Failed logins are counted per user name and client address. The first
FREE_FAILURES cost nothing (people mistype); after that each one makes the
next attempt wait twice as long as the one before, from 1 s up to MAX_WAIT,
so an address gets about a hundred guesses at a name a day instead of the
four a second a password check allows. A throttled attempt is refused before
the password is checked, so guessing does not cost the server a core either.
A success forgets the name's failures from that address.

The count is per name *and* address: per address alone, everyone behind one
proxy would be locked out together; per name alone, anyone could lock a user
out. Memory is bounded: at most MAX_TRACKED pairs are remembered.
"""

import threading
import time

FREE_FAILURES = 5
MAX_WAIT = 15 * 60.0
#: A pair with no failure for this long starts again from nothing.
FORGET_AFTER = 24 * 3600.0
MAX_TRACKED = 10_000


class LoginThrottle:
    def __init__(self, clock=time.time):
        self.clock = clock
        self._lock = threading.Lock()  # waitress serves logins from several threads
        self._failures = {}  # (name, address) -> (count, time of the last failure)

    def wait(self, name, address) -> float:
        """Seconds before another login as ``name`` from ``address`` may be tried (0: now)."""
        with self._lock:
            entry = self._failures.get((name, address))
        if entry is None:
            return 0.0
        count, last = entry
        return max(0.0, last + _delay(count) - self.clock())

    def failed(self, name, address) -> None:
        now = self.clock()
        with self._lock:
            count, last = self._failures.get((name, address), (0, now))
            if now - last > FORGET_AFTER:
                count = 0
            if (name, address) not in self._failures and len(self._failures) >= MAX_TRACKED:
                self._make_room(now)
            self._failures[(name, address)] = (count + 1, now)

    def succeeded(self, name, address) -> None:
        with self._lock:
            self._failures.pop((name, address), None)

    def _make_room(self, now):
        """Forget the pairs no longer throttled, or else the tenth that failed longest ago."""
        idle = [key for key, (count, last) in self._failures.items() if now >= last + _delay(count)]
        if len(idle) < MAX_TRACKED // 10:
            idle = sorted(self._failures, key=lambda key: self._failures[key][1])[:MAX_TRACKED // 10]
        for key in idle:
            del self._failures[key]


def _delay(failures: int) -> float:
    """The wait after ``failures`` failures in a row."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(2.0 ** (failures - FREE_FAILURES), MAX_WAIT)

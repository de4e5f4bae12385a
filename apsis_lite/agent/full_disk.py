"""A full disk, as the shepherd meets it: which errors mean there is no
room for now, and when to try a write again.

A shepherd keeps what it could not write (its pid files, the result) and
tries again, first RETRY_MIN later, doubling up to RETRY_MAX apart, for as
long as it takes; output that finds no room is counted as lost instead
(see ``apsis_lite.agent.sink``).
"""

from __future__ import annotations

import errno
import time

#: Errors that mean there is no room on the disk for now.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})
RETRY_MIN = 0.1
RETRY_MAX = 5.0


class Backoff:
    """When to try again a write that found no room: RETRY_MIN after the
    first failure, doubling up to RETRY_MAX, back to nothing on success."""

    __slots__ = ("delay", "at")

    def __init__(self):
        self.delay = 0.0
        self.at = 0.0

    def failed(self) -> None:
        self.delay = min(RETRY_MAX, max(RETRY_MIN, self.delay * 2))
        self.at = time.monotonic() + self.delay

    def succeeded(self) -> None:
        self.delay = self.at = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.at


def no_room(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the quota) is full."""
    return isinstance(exc, OSError) and exc.errno in NO_ROOM


def error_reason(exc: OSError) -> str:
    """``No space left on device`` → ``no space left on device``."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]

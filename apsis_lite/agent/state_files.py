"""shepherd.json and pid.json: written at once, or, on a full disk, kept
and written once there is room, while the run goes on."""

from __future__ import annotations

import os

from apsis_lite.agent.full_disk import Backoff, no_room
from apsis_lite.agent.log import log
from apsis_lite.agent.protocol import atomic_write_json


class StateFiles:
    """The shepherd's state files of one run, in the order they were due.

    The program is started, and keeps running, all the same when they find
    no room: nothing the server concludes from these files becomes false
    meanwhile. Without shepherd.json a stop request does not signal the
    shepherd but relies on its look at stop.json once it is written (which
    ``on_written`` is for); without pid.json the server leaves the run as
    starting, and cannot signal it.

    No fsync (see "Recovery rules" in ``apsis_lite.agent.protocol``): a
    power cut kills the processes these files describe.
    """

    def __init__(self, run_dir: str, on_written):
        self.run_dir = run_dir
        self.on_written = on_written  # Called with each name written late.
        self.unwritten: dict[str, dict] = {}  # Found no room, in the order to write them.
        self.rewrite = Backoff()

    def write(self, name: str, info: dict) -> None:
        """Write ``name``; with no room on the disk, keep it to write later
        (see ``write_unwritten``) and go on."""
        if not self.unwritten:
            try:
                atomic_write_json(os.path.join(self.run_dir, name), info, durable=False)
                return
            except OSError as exc:
                if not no_room(exc):
                    raise
                log.warning("%s: cannot write %s (%s); the run goes on, and it is tried again",
                            self.run_dir, name, exc)
                self.rewrite.failed()
        self.unwritten[name] = info

    def write_unwritten(self) -> None:
        """Write the files that found no room, in order; raises OSError if
        one still cannot be written."""
        while self.unwritten:
            name, info = next(iter(self.unwritten.items()))
            atomic_write_json(os.path.join(self.run_dir, name), info, durable=False)
            del self.unwritten[name]
            log.info("%s: wrote %s", self.run_dir, name)
            self.on_written(name)

    def retry_due(self) -> None:
        """Try the files that found no room again, if it is time to."""
        if self.unwritten and self.rewrite.due():
            try:
                self.write_unwritten()
            except OSError as exc:
                if not no_room(exc):
                    raise
                self.rewrite.failed()
            else:
                self.rewrite.succeeded()

    def retry_at(self) -> float | None:
        """When ``retry_due`` has something to do (monotonic clock), or None."""
        return self.rewrite.at if self.unwritten else None

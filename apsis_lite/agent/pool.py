"""The agent's shepherds: forking them, handing a run to one that is idle,
and retiring those unused for too long."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys
import time

from apsis_lite.agent.log import log
from apsis_lite.agent.protocol import handoff_line
from apsis_lite.agent.shepherd import shepherd_loop

#: Finished shepherds kept waiting for their next run. A freshly forked
#: shepherd pays several milliseconds of CPU in copy-on-write page faults
#: before it can start a program; a reused one pays none, which is what lets
#: a slot of many runs start within milliseconds. Each idle one holds about
#: 2 MB of its own memory, so they retire after IDLE_SHEPHERD_TTL unused:
#: only a workload that keeps coming back keeps them.
MAX_IDLE_SHEPHERDS = 256
IDLE_SHEPHERD_TTL = 120.0
#: Shepherds forked ahead (``warm``) per turn of the agent's loop: a few at a
#: time, so that a request that comes meanwhile waits for a few forks at most.
WARM_PER_TURN = 4


class ShepherdPool:
    """The shepherds of one agent, each with its control socket in the
    agent's ``selector``. ``become_shepherd`` is called in a forked child
    before its first run, to shed what belongs to the agent."""

    def __init__(self, selector: selectors.BaseSelector, shepherd_ttl: float, become_shepherd):
        self.selector = selector
        self.shepherd_ttl = shepherd_ttl
        self.become_shepherd = become_shepherd
        self.children: set[int] = set()
        self.shepherds: dict[int, tuple[int, socket.socket]] = {}  # ctl fd -> (pid, ctl)
        # (pid, ctl, idle since): the warmest last, the first to expire first.
        self.idle: list[tuple[int, socket.socket, float]] = []
        self.closing = False  # Keep no more shepherds idle.
        self.to_warm = 0  # Shepherds still to fork ahead of runs (see warm).
        self.warming: set[int] = set()  # Forked ahead, not yet said idle.

    def busy(self) -> bool:
        """Whether a shepherd is looking after a run."""
        return len(self.children) > len(self.idle)

    def next_expiry(self) -> float | None:
        """When the longest idle shepherd is due to retire (monotonic clock)."""
        return self.idle[0][2] + self.shepherd_ttl if self.idle else None

    def retire_expired(self) -> None:
        now = time.monotonic()
        while self.idle and self.idle[0][2] + self.shepherd_ttl <= now:
            self._retire(self.idle[0][1])

    def reap(self) -> None:
        """Collect the shepherds that exited (on SIGCHLD)."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            self.children.discard(pid)

    def warm(self, count: int) -> None:
        """Runs are due soon: have up to ``count`` shepherds (at most
        MAX_IDLE_SHEPHERDS) forked and idle before then, so that each of their
        starts is a send instead of a fork. Forked a few at a time by
        ``warm_some``."""
        self.to_warm = max(0, min(count, MAX_IDLE_SHEPHERDS) - len(self.idle) - len(self.warming))

    def warm_some(self) -> None:
        """Fork up to WARM_PER_TURN of the shepherds asked for by ``warm``."""
        for _ in range(min(self.to_warm, WARM_PER_TURN)):
            if self.closing:
                self.to_warm = 0
                return
            self.to_warm -= 1
            try:
                self.warming.add(self._fork(None))
            except OSError as exc:  # No room for more processes: the runs fork as they come.
                log.warning("cannot fork a shepherd ahead: %s", exc)
                self.to_warm = 0
                return

    def start(self, run_dir: str) -> int:
        """Hand ``run_dir`` to the warmest idle shepherd, or fork one; its pid."""
        while self.idle:
            pid, ctl, _ = self.idle.pop()
            try:
                ctl.send(handoff_line(run_dir))
            except OSError:
                self._retire(ctl)
                continue
            log.debug("reused shepherd %d for %s", pid, run_dir)
            return pid
        # The runs came before their shepherds: forks for them, not ahead, from now on.
        self.to_warm = 0
        return self._fork(run_dir)

    def _fork(self, run_dir: str | None) -> int:
        """A new shepherd for ``run_dir``, or (None) one that says it is idle at once."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()  # Or the child would print our buffer again.
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                ours.close()
                self.become_shepherd()
                status = shepherd_loop(theirs, run_dir)
            except BaseException:
                with contextlib.suppress(BaseException):
                    log.exception("%s: shepherd crashed", run_dir)
            finally:
                os._exit(status)
        theirs.close()
        ours.setblocking(False)
        self.shepherds[ours.fileno()] = (pid, ours)
        self.selector.register(ours, selectors.EVENT_READ, self._on_shepherd)
        self.children.add(pid)
        log.debug("started shepherd %d for %s", pid, run_dir)
        return pid

    def _on_shepherd(self, key, mask) -> None:
        """A shepherd finished a run (``idle``) or went away (EOF)."""
        entry = self.shepherds.get(key.fd)
        if entry is None:
            return
        pid, ctl = entry
        self.warming.discard(pid)
        try:
            data = ctl.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._retire(ctl)
        elif len(self.idle) < MAX_IDLE_SHEPHERDS and not self.closing:
            self.idle.append((pid, ctl, time.monotonic()))
        else:
            self._retire(ctl)  # It exits on EOF.

    def _retire(self, ctl: socket.socket) -> None:
        self.shepherds.pop(ctl.fileno(), None)
        self.idle = [entry for entry in self.idle if entry[1] is not ctl]
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(ctl)
        ctl.close()

"""Processes as /proc and the kernel show them: a process's start time,
the members of a process group, a child's exit without its reaping, and
the signal dispositions a shepherd starts from."""

from __future__ import annotations

import _signal
import os
import signal


def proc_start_time(pid: int) -> int | None:
    """The process start time (clock ticks since boot, /proc/<pid>/stat field
    22), or None if there is no such process. A pid plus its start time names
    one process for good, whereas a bare pid may be reused."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as file:
            data = file.read()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may contain anything,
    # so count fields from the last ")": the field after it is field 3.
    try:
        fields = data[data.rindex(b")") + 2:].split()
        return int(fields[22 - 3])
    except (ValueError, IndexError):
        return None


def same_process(info: dict | None) -> int | None:
    """The pid recorded in ``info`` if that very process still exists."""
    if not info:
        return None
    try:
        pid = int(info["pid"])
        start_time = info["start_time"]
    except (KeyError, TypeError, ValueError):
        return None
    if start_time is None or proc_start_time(pid) != start_time:
        return None
    return pid


def group_members(pgid: int) -> list[int]:
    """The living processes (zombies aside) whose process group is ``pgid``.

    There is no system call for this: it reads /proc/<pid>/stat of every
    process (a few ms for a few hundred processes). Only threads' leaders
    are listed there, which is enough: threads share their leader's group.
    """
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                data = file.read()
        except OSError:  # Gone meanwhile.
            continue
        # Fields after the command name: state (3), ppid (4), pgrp (5).
        fields = data[data.rfind(b")") + 2:].split(None, 3)
        try:
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                members.append(int(name))
        except (ValueError, IndexError):
            continue
    return members


def exited_unreaped(pid: int) -> bool:
    """Whether our child ``pid`` has exited, leaving it a zombie: until it is
    reaped, its pid, and so the number of the process group it leads, cannot
    name anyone else, so the rest of its group can still be signalled
    safely (see ``Program.settle`` in ``apsis_lite.agent.program``)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


RESETTABLE_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
# The same as plain ints, for the C function behind ``signal.signal``: the
# Python wrapper converts every call's result to an enum, and in a freshly
# forked shepherd the objects that touches cost a page fault each.
_RESETTABLE_NUMBERS = tuple(sorted(int(sig) for sig in RESETTABLE_SIGNALS))


def reset_signals() -> None:
    """Give every signal its default disposition and unblock them all, so
    the shepherd inherits nothing from the agent's handlers, nor from
    whatever the agent's own parent chose to ignore."""
    signal.set_wakeup_fd(-1)
    for number in _RESETTABLE_NUMBERS:
        try:
            _signal.signal(number, 0)  # SIG_DFL
        except (OSError, ValueError):
            pass
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())

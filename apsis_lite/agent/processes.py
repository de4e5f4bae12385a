"""Processes as /proc and the kernel show them: a process's start time,
the members of a process group, a child's exit without its reaping, and
the signal dispositions a shepherd starts from."""

from __future__ import annotations

import _signal
import os
import signal


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat from field 3 (the state) on, or None if there is no
    such process."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as file:
            data = file.read()
    except (OSError, ValueError):
        return None
    # The command name (field 2) is in parentheses and may contain anything,
    # so count fields from the last ")": the field after it is field 3.
    end = data.rfind(b")")
    return data[end + 2:].split() if end >= 0 else None


def proc_start_time(pid: int) -> int | None:
    """The process start time (clock ticks since boot, /proc/<pid>/stat field
    22), or None if there is no such process. A pid plus its start time names
    one process for good, whereas a bare pid may be reused."""
    fields = _stat_fields(pid)
    try:
        return int(fields[22 - 3]) if fields is not None else None
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


def process_status(pid: int) -> tuple[str, int, int] | None:
    """(state letter, session id, start time) of a living process, or None if
    there is none or it is a zombie (it has exited; only its parent's
    reaping is left)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    try:
        state, sid, start = fields[0].decode(), int(fields[6 - 3]), int(fields[22 - 3])
    except (ValueError, IndexError):
        return None
    return None if state in ("Z", "X") else (state, sid, start)


def processes_with_env(name: str, without: str | None = None, pause=None) -> dict[str, list[int]]:
    """{value: [pids]} of the living processes whose environment sets ``name``
    (and not ``without``), among those whose environment may be read (all of
    them as root; one's own otherwise). A process's environment is the one it
    started with. Reading another process's costs about 0.15 ms, so
    ``pause()``, if given, is called after every few."""
    key = name.encode() + b"="
    other = without.encode() + b"=" if without else None
    found: dict[str, list[int]] = {}
    for i, entry in enumerate(os.listdir("/proc")):
        if pause is not None and i % 8 == 7:
            pause()
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as file:
                data = file.read()
        except OSError:  # gone meanwhile, or another user's
            continue
        value = None
        for item in data.split(b"\0"):
            if item.startswith(key):
                value = item[len(key):]
            elif other is not None and item.startswith(other):
                value = None
                break
        if value is not None:
            found.setdefault(value.decode("utf-8", "replace"), []).append(int(entry))
    return found

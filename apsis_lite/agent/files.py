"""Atomic file writes, durable on request: the run folder's state changes
are renames, and a rename is only as durable as its directory."""

from __future__ import annotations

import os

#: What the server, the agent and the shepherds create is owner-only (files 0600,
#: folders 0700), whatever the umask they were started with.
PRIVATE_UMASK = 0o077
_started_umask: list = []


def go_private() -> int:
    """Make this process create owner-only files and folders (umask 077).

    Returns the umask the process was started with, which the programs it
    runs get back (``program_umask``): a program's files are its own business.
    """
    old = os.umask(PRIVATE_UMASK)
    if not _started_umask:
        _started_umask.append(old)
    return _started_umask[0]


def program_umask() -> int | None:
    """The umask this process was started with, if ``go_private`` was called; else None."""
    return _started_umask[0] if _started_umask else None


def fsync_dir(path: str) -> None:
    """Persist a directory's entries: a rename is only durable once its
    directory is synced, and the renames here *are* the state machine."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data) -> None:
    """``os.write`` until all of ``data`` is written."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def atomic_write_bytes(path: str, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` so that readers see either the old content or the
    complete new one, never a partial file; with ``durable``, so does a
    machine that loses power.

    Durability costs two fsyncs, and on a busy disk an fsync also slows every
    file creation behind it, so files whose loss in a power cut is harmless
    (they describe processes that a power cut kills anyway) skip it.

    A temporary file left from before (run folders are recycled) is
    overwritten in place and then cut to length, not truncated first: freeing
    its block and allocating one again costs ten times the write on a file
    system that discards freed blocks.
    """
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
        os.ftruncate(fd, len(data))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if durable:
        fsync_dir(os.path.dirname(os.path.abspath(path)))

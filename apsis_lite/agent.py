"""The agent: a small detached process that starts runs so they outlive the server.

Why this exists
---------------
The scheduler server holds SQLite connections and runs gevent, so it must never
fork (a forked copy of an open database or a gevent hub is a corruption risk),
and the programs it starts must keep running when the server stops or crashes.
So the server hands each run to this agent over a Unix socket. The agent forks
one *shepherd* per run (a fork, about a millisecond, rather than a new
interpreter, 30+ ms: bursts of a thousand runs must start in about a second).
The shepherd puts itself in its own session, spawns the program in another
session, captures its output, and writes the outcome into the run's folder.
Neither the agent nor the server is needed for a run to finish and be
recorded. A shepherd that has finished a run waits, idle, for the agent to
hand it another: forking is the expensive part.

Everything that matters lives in files in the run folder, written atomically,
so a restarted server can tell, for every run, exactly what happened:

=====================  =====================================================
``spec.json``          written by the server: what to run (the intent)
``spec.claimed.json``  a shepherd renamed the spec: it owns the run
``spec.revoked.json``  the server renamed it first: the run never started
(the folder itself)    flock held by the shepherd while it has the run
``shepherd.json``      shepherd pid + /proc start time (written before spawn)
``pid.json``           program pid/pgid + start time (written right after spawn)
``output``             stdout+stderr: the head as it comes; (marker +) tail
                       appended at the end
``output.tail``        ring buffer of the last bytes, while running only
``stop.json``          written by the server before it SIGTERMs the shepherd
``result.json``        the outcome, written last, before the lock is released
=====================  =====================================================

A full disk delays these files but loses no run: a shepherd that finds no
room for shepherd.json or pid.json starts the program all the same and
writes them once there is room; output that finds none is counted, and a
line in ``output`` says how many bytes were lost where; the result waits
in memory, the lock held, until it can be written.

Recovery rules for the server (all decidable from the files):

* ``revoke()`` succeeds → the run provably never started and never will,
  as long as the machine has not restarted since the run was handed over.
  Nothing between the spec and the program's start is fsynced (a flush of
  the disk's cache per start was the longest wait on the way from due to
  started), so after a power cut a claim may be lost although its program
  ran: the server compares the machine's boot id with the one it saved when
  it last started (``boot_id()``), and after a restart of the machine treats
  every run that was starting as "may have started".
* ``result.json`` exists → the run is over; it holds the outcome (check this
  first: the lock is released just after it is written). It and ``output``
  are fsynced only when no server took the shepherd's ``done`` notice; a
  server that did records both in its database. So a power cut in the
  moment between a run's end and that commit loses the outcome, and the
  run, found without a shepherd or a result after the restart, is an error.
* ``is_alive()`` → a shepherd is still looking after the run (or waits for
  room on the disk to write its result).
* claimed, not alive, no result → the shepherd died (SIGKILL, OOM, reboot);
  the program may still run if ``pid.json`` exists (check its start time):
  report an error. Without ``pid.json`` the program was almost surely never
  spawned (or it was, on a full disk, and its shepherd died before there
  was room for ``pid.json``), but that is not provable.

This module is stdlib only and cheap to import: the agent imports it at each
start, and the server imports the client helpers from a gevent-patched process
(they only use ``socket``, ``os`` and ``time`` calls, which gevent patches).

The agent process imports neither ``logging`` nor ``threading``: each
registers a handler that runs Python code in every forked child, and in a
child every object that Python code touches costs a page fault (a copy of a
page shared with the agent), a few microseconds each. Without them the fork
itself costs a new shepherd 80 faults rather than 230, and its whole first
run about 515 rather than 590.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import resource
import _signal
import json
import os
import select
import selectors
import signal
import socket
import struct
import sys
import time

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "exception": 40}


class _Log:
    """``logging``'s interface for this module, without importing ``logging``
    into the agent (see the module docstring).

    In a process that has ``logging`` (the server, tests) it is the standard
    logger ``apsis_lite.agent``; in the agent and its shepherds it writes one
    line per message, INFO and up, to stderr (the agent's log file).
    """

    name = "apsis_lite.agent"

    def __getattr__(self, method):
        if method not in _LEVELS:
            raise AttributeError(method)

        def emit(msg, *args):
            logging = sys.modules.get("logging")
            if logging is not None:
                getattr(logging.getLogger(self.name), method)(msg, *args)
            elif _LEVELS[method] >= 20:
                _write_log_line(method, msg % args if args else msg, method == "exception")

        return emit


def _write_log_line(level: str, text: str, with_traceback: bool) -> None:
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
    line = f"{stamp} {os.getpid()} {'ERROR' if level == 'exception' else level.upper()} {_Log.name}: {text}\n"
    if with_traceback and sys.exc_info()[0] is not None:
        import traceback
        line += traceback.format_exc()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line)
        sys.stderr.flush()


log = _Log()

# Run folder file names (see the module docstring).
SPEC = "spec.json"
SPEC_CLAIMED = "spec.claimed.json"
SPEC_REVOKED = "spec.revoked.json"
SHEPHERD = "shepherd.json"
PID = "pid.json"
OUTPUT = "output"
OUTPUT_TAIL = "output.tail"
STOP = "stop.json"
RESULT = "result.json"

# State folder file names.
AGENT_LOCK = "agent.lock"
AGENT_SOCK = "agent.sock"
AGENT_PID = "agent.pid"
AGENT_LOG = "agent.log"

DEFAULT_OUTPUT_HEAD = 8 * 1024 * 1024
DEFAULT_OUTPUT_TAIL = 8 * 1024 * 1024
DEFAULT_STOP = {"signal": "SIGTERM", "grace_period": 60.0}
DEFAULT_IDLE_TIMEOUT = 300.0
#: Finished shepherds kept waiting for their next run. A freshly forked
#: shepherd pays several milliseconds of CPU in copy-on-write page faults
#: before it can start a program; a reused one pays none, which is what lets
#: a slot of many runs start within milliseconds. Each idle one holds about
#: 2 MB of its own memory, so they retire after IDLE_SHEPHERD_TTL unused:
#: only a workload that keeps coming back keeps them.
MAX_IDLE_SHEPHERDS = 256
IDLE_SHEPHERD_TTL = 120.0
#: A shepherd retires after this many runs, bounding anything it might leak.
MAX_RUNS_PER_SHEPHERD = 500

#: After the program exits, how long to keep reading output that background
#: grandchildren may still be writing before giving up on EOF.
DRAIN_TIMEOUT = 0.2
#: Largest single read from the output pipe; also the most output held in RAM.
READ_CHUNK = 65536
#: After a stop or a timeout, how often the program's process group is looked
#: at while members remain: first after SETTLE_POLL_MIN, doubling up to
#: SETTLE_POLL_MAX (each look reads /proc, a few ms with many processes).
SETTLE_POLL_MIN = 0.005
SETTLE_POLL_MAX = 0.25
#: How long members SIGKILLed are waited for (one in uninterruptible sleep
#: dies only when its system call ends) before the result is written anyway.
KILL_WAIT = 5.0
#: Errors that mean there is no room on the disk for now. A shepherd keeps
#: what it could not write (its pid files, the result) and tries again, first
#: RETRY_MIN later, doubling up to RETRY_MAX apart, for as long as it takes;
#: output that finds no room is counted as lost instead (see _OutputSink).
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})
RETRY_MIN = 0.1
RETRY_MAX = 5.0


# ---------------------------------------------------------------------------
# File helpers shared by the server, the agent and the shepherd.
# ---------------------------------------------------------------------------

def _fsync_dir(path: str) -> None:
    """Persist a directory's entries: a rename is only durable once its
    directory is synced, and the renames here *are* the state machine."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data) -> None:
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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
        os.ftruncate(fd, len(data))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if durable:
        _fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write_json(path: str, obj, durable: bool = True) -> None:
    """``atomic_write_bytes`` of one JSON document plus a newline."""
    atomic_write_bytes(path, json.dumps(obj, separators=(",", ":")).encode() + b"\n", durable)


def read_json(run_dir: str, name: str) -> dict | None:
    """Read one of the run folder's JSON files, or None if it is missing.

    Files are written atomically, so a partial or unparsable file means
    something outside this protocol touched it; that too reads as None rather
    than raising, so recovery code can treat "unknown" uniformly.
    """
    try:
        with open(os.path.join(run_dir, name), "rb") as file:
            value = json.loads(file.read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_spec(run_dir: str, spec: dict) -> None:
    """Record the intent to run (creating ``run_dir`` if needed). Must happen
    before ``AgentClient.start``.

    Not fsynced: after a power cut the server knows from the boot id that
    no spec, claimed or not, proves anything (see "Recovery rules").
    """
    os.makedirs(run_dir, exist_ok=True)
    atomic_write_json(os.path.join(run_dir, SPEC), spec, durable=False)


def boot_id() -> str | None:
    """This boot of the machine (Linux's random boot id), or None if unknown."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
            return file.read().strip() or None
    except OSError:
        return None


def revoke(run_dir: str) -> bool:
    """Make sure a run never starts. True if the spec was still unclaimed and
    is now revoked; False if a shepherd claimed it first (or there was no
    spec). Exactly one of revoke and claim can win: both are a rename of the
    same file."""
    try:
        os.rename(os.path.join(run_dir, SPEC), os.path.join(run_dir, SPEC_REVOKED))
    except FileNotFoundError:
        return False
    _fsync_dir(run_dir)
    return True


def is_alive(run_dir: str) -> bool:
    """Is a shepherd looking after this run right now?

    The shepherd holds an exclusive flock on the run folder itself for as
    long as it looks after the run, and the kernel drops it when the process
    dies however it dies, so a failed non-blocking lock attempt means "alive"
    with no pid-reuse ambiguity. (Locking the folder rather than a file in it
    saves a file creation per run, which is not cheap on every file system.)
    """
    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(fd)  # Also releases our probe lock, if we got it.


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
    safely (see ``_Shepherd._settle_group``)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _same_process(info: dict | None) -> int | None:
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


def signal_from_name(text) -> signal.Signals:
    """Parse ``SIGTERM``, ``TERM``, ``term``, ``15`` (or an int) into a signal."""
    if isinstance(text, signal.Signals):
        return text
    if isinstance(text, int) and not isinstance(text, bool):
        try:
            return signal.Signals(text)
        except ValueError:
            raise ValueError(f"unknown signal: {text}") from None
    if not isinstance(text, str):
        raise ValueError(f"unknown signal: {text!r}")
    name = text.strip()
    if name.isdigit():
        return signal_from_name(int(name))
    name = name.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"unknown signal: {text}") from None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def request_stop(run_dir: str, signal_name, grace_period: float) -> bool:
    """Ask the shepherd to stop the program: ``signal_name`` to its process
    group, then SIGKILL after ``grace_period`` seconds.

    The request is written to ``stop.json`` first and the shepherd carries it
    out by itself, so it completes even if the server dies right after. Returns
    True if a live shepherd will act on it. False means no shepherd could be
    signalled (finished, dead, or not started yet); a shepherd that starts
    later still honours ``stop.json`` as soon as it has spawned the program.
    """
    sig = signal_from_name(signal_name)
    atomic_write_json(
        os.path.join(run_dir, STOP),
        {"signal": sig.name, "grace_period": float(grace_period)},
    )
    if not is_alive(run_dir):
        return False
    info = read_json(run_dir, SHEPHERD)
    if info is None:
        # Alive but not yet past its claim: it checks stop.json after spawning.
        return True
    pid = _same_process(info)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def send_signal(run_dir: str, signal_name) -> bool:
    """Send a signal to the program's whole process group, now. Only while
    the shepherd is alive and the recorded program pid still names the same
    process (start time check), so a reused pid is never hit. False if not
    sent."""
    sig = signal_from_name(signal_name)
    if not is_alive(run_dir):
        return False
    info = read_json(run_dir, PID)
    if _same_process(info) is None:
        return False
    try:
        os.killpg(int(info["pgid"]), sig)
    except (ProcessLookupError, KeyError, TypeError, ValueError):
        return False
    return True


@contextlib.contextmanager
def _unix_address(path: str):
    """Yield an address for ``path`` that fits in sockaddr_un (108 bytes).

    Long paths are reached through ``/proc/self/fd/<dir fd>/<name>``, which
    the kernel resolves like any other path when binding or connecting.
    """
    if len(os.fsencode(path)) < 100:
        yield path
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# Shepherd: one per run, forked from the agent.
# ---------------------------------------------------------------------------

class _SpecError(ValueError):
    pass


def _parse_spec(raw: dict | None, run_dir: str) -> dict:
    """Validate the spec up front, so a bad one becomes a clear error in
    result.json instead of a crash halfway through the run."""
    if raw is None:
        raise _SpecError("spec is missing or not valid JSON")
    spec = {}
    spec["run_id"] = str(raw.get("run_id") or os.path.basename(run_dir))
    argv = raw.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise _SpecError("argv must be a non-empty list of strings")
    spec["argv"] = argv
    env = raw.get("env")
    if env is not None and not (
        isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise _SpecError("env must map strings to strings")
    spec["env"] = dict(os.environ) if env is None else env
    cwd = raw.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise _SpecError("cwd must be a string or null")
    spec["cwd"] = cwd or None
    try:
        stop = raw.get("stop") or {}
        spec["stop_signal"] = signal_from_name(stop.get("signal", DEFAULT_STOP["signal"]))
        spec["stop_grace"] = max(0.0, float(stop.get("grace_period", DEFAULT_STOP["grace_period"])))
        timeout = raw.get("timeout")
        if timeout:
            spec["timeout_duration"] = max(0.0, float(timeout["duration"]))
            spec["timeout_signal"] = signal_from_name(timeout.get("signal", "SIGTERM"))
        else:
            spec["timeout_duration"] = None
            spec["timeout_signal"] = None
        spec["output_head"] = max(0, int(raw.get("output_head", DEFAULT_OUTPUT_HEAD)))
        spec["output_tail"] = max(0, int(raw.get("output_tail", DEFAULT_OUTPUT_TAIL)))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise _SpecError(str(exc)) from None
    notify = raw.get("notify")
    spec["notify"] = notify if isinstance(notify, str) and notify else None
    return spec


class _Backoff:
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


def _no_room(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _NO_ROOM


def _reason(exc: OSError) -> str:
    """``No space left on device`` → ``no space left on device``."""
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def dropped_marker(count: int) -> bytes:
    """The line that stands for ``count`` bytes of output dropped between the head and the tail."""
    return f"\n[apsis-lite: {count} bytes of output dropped]\n".encode()


def _lost_marker(count: int, reason: str) -> bytes:
    return f"\n[apsis-lite: {count} bytes of output lost: {reason}]\n".encode()


class _OutputSink:
    """Stores a stream of output in bounded disk and memory.

    The first ``head`` bytes go straight to ``output`` as they arrive, so a
    client can follow them by byte offset. Later bytes go to a fixed-size ring
    file, ``output.tail``, at position ``(offset - head) % tail``; only the
    last ``tail`` bytes survive. ``finish`` appends them, in order and after a
    marker if anything was dropped, to ``output``. Nothing but the current
    chunk is ever held in RAM, so a program printing 1 GB costs head + tail on
    disk and a few kB of memory.

    Output that cannot be stored (a full disk) is counted, never waited for:
    the program must not block on a full pipe. Storing is tried again when
    more output comes, RETRY_MIN to RETRY_MAX apart; where it works again, a
    line ``[apsis-lite: N bytes of output lost: <why>]`` takes the place of
    what was lost (in ``output`` at once for the head, at the end for the
    tail), so what is stored never reads as if it were all there.
    """

    def __init__(self, run_dir: str, head: int, tail: int):
        self.head = head
        self.tail = tail
        self.path = os.path.join(run_dir, OUTPUT)
        self.tail_path = os.path.join(run_dir, OUTPUT_TAIL)
        self.fd: int | None = None
        self.tail_fd: int | None = None
        self.total = 0  # Bytes read from the program.
        self.written = 0  # Length of ``output`` known good: where the next write goes.
        self.stored_to = 0  # Offset in the stream up to which the chunk being stored is stored.
        self.lost_head = 0  # Bytes of the head not stored, all told...
        self.head_gap = 0  # ...of which this many are not yet marked in ``output``.
        self.head_gap_reason = ""
        # [start, end, why] offsets in the stream of bytes past the head that
        # could not be stored, oldest first: the ring holds stale bytes there.
        self.ring_gaps: list[list] = []
        self.failing: str | None = None  # Why storing fails, until it works again.
        self.first_failure: str | None = None
        self.retry = _Backoff()
        self.trailer: bytes | None = None  # Set by finish: the end of ``output`` still to write.
        self.info: dict | None = None  # Set by finish: the byte counts for result.json.
        try:
            self._open()
        except OSError as exc:
            self._failed(exc)

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self.written = 0

    def write(self, data: bytes) -> None:
        offset = self.total
        self.total += len(data)
        if self.failing is not None and not (self.retry.due() and self._resume()):
            self._lose(offset, self.total, self.failing)
            return
        try:
            self._store(data, offset)
        except OSError as exc:
            self._lose(self.stored_to, self.total, _reason(exc))
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        if self.failing is None:
            log.warning("%s: cannot store output: %s; counting what is lost until it can",
                        os.path.dirname(self.path), exc)
        self.failing = _reason(exc)
        self.first_failure = self.first_failure or self.failing
        self.retry.failed()

    def _resume(self) -> bool:
        """Try to store again: open ``output`` if need be and mark the head's gap."""
        try:
            if self.fd is None:
                self._open()
            if self.head_gap:
                self._append_text(_lost_marker(self.head_gap, self.head_gap_reason))
                self.head_gap = 0
        except OSError as exc:
            self._failed(exc)
            return False
        log.info("%s: storing output again", os.path.dirname(self.path))
        self.failing = None
        self.retry.succeeded()
        return True

    def _lose(self, start: int, end: int, reason: str) -> None:
        """Count the stream's bytes from ``start`` to ``end`` as not stored."""
        if start < self.head:
            n = min(end, self.head) - start
            self.lost_head += n
            if not self.head_gap:
                self.head_gap_reason = reason
            self.head_gap += n
            start += n
        if start >= end or self.tail == 0:
            return  # Nothing past the head, or it would be dropped anyway.
        gaps = self.ring_gaps
        if gaps and gaps[-1][1] == start:
            gaps[-1][1] = end
        else:
            gaps.append([start, end, reason])
        while gaps and gaps[0][1] <= self.total - self.tail:  # Overwritten in the ring by now.
            gaps.pop(0)

    def _store(self, data: bytes, offset: int) -> None:
        self.stored_to = offset
        if offset < self.head:
            n = min(len(data), self.head - offset)
            self._append(data[:n] if n < len(data) else data)
            data = data[n:]
            offset += n
        if not data or self.tail == 0:
            self.stored_to = offset + len(data)
            return
        if len(data) > self.tail:  # Only the end of a huge chunk can survive.
            offset += len(data) - self.tail
            data = data[-self.tail:]
            self.stored_to = offset
        if self.tail_fd is None:
            self.tail_fd = os.open(
                self.tail_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644
            )
        pos = (offset - self.head) % self.tail
        first = min(len(data), self.tail - pos)
        self._pwrite_all(data[:first], pos)
        if first < len(data):
            self._pwrite_all(data[first:], 0)

    def _append(self, data) -> None:
        """Write at the end of ``output``, counting what got there."""
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.written += n
            self.stored_to += n

    def _append_text(self, text: bytes) -> None:
        """Append a line of ours whole, or leave ``output`` as it was."""
        try:
            _write_all(self.fd, text)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.written)
                os.lseek(self.fd, self.written, os.SEEK_SET)
            raise
        self.written += len(text)

    def _pwrite_all(self, data, pos: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.tail_fd, view, pos)
            view = view[n:]
            pos += n
            self.stored_to += n

    def finish(self) -> dict:
        """Complete ``output`` and drop the ring file; returns the byte counts
        for result.json. Not fsynced: see ``_Shepherd._finish``.

        Raises OSError only for lack of room, after which it may be called
        again, until the end of ``output`` is written. The tail is not waited
        for: if there is no room to copy it from the ring, it is counted as
        lost and its ring file freed, so a run never keeps the disk full with
        its own output; only the short line saying so is waited for.
        """
        if self.info is None:
            self._assemble()
        if self.trailer:
            try:
                if self.fd is None:
                    self._open()
                self._append_text(self.trailer)
            except OSError as exc:
                if _no_room(exc):
                    raise
                log.error("%s: cannot end the output: %s", os.path.dirname(self.path), exc)
                self.info.setdefault("error", f"cannot store output: {exc}")
            self.trailer = None
        self.close()
        return self.info

    def _assemble(self) -> None:
        """Append what follows the head to ``output``; what cannot be written
        becomes ``trailer``, the lines that say it was lost."""
        beyond = max(0, self.total - self.head)
        kept_tail = min(beyond, self.tail)
        dropped = beyond - kept_tail
        # What follows the head, in order: ("text", line), ("lost", count, why)
        # and ("copy", ring position, count).
        pieces: list[tuple] = []
        if self.head_gap:
            pieces.append(("lost", self.head_gap, self.head_gap_reason))
        if dropped:
            pieces.append(("text", dropped_marker(dropped)))
        offset = self.total - kept_tail
        lost = self.lost_head
        for start, end, reason in self.ring_gaps:
            start, end = max(start, offset), min(end, self.total)
            if start < end:
                if start > offset:
                    pieces.append(("copy", (offset - self.head) % self.tail, start - offset))
                pieces.append(("lost", end - start, reason))
                lost += end - start
                offset = end
        if offset < self.total:
            pieces.append(("copy", (offset - self.head) % self.tail, self.total - offset))
        trailer = b""
        for i, piece in enumerate(pieces):
            try:
                if self.fd is None:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                if piece[0] == "text":
                    self._append_text(piece[1])
                elif piece[0] == "lost":
                    self._append_text(_lost_marker(piece[1], piece[2]))
                else:
                    self._copy_ring(piece[1], piece[2])
            except OSError as exc:
                # The rest is lost: the lines of ours that say so are all that
                # is waited for.
                reason = _reason(exc)
                self.first_failure = self.first_failure or reason
                lost += sum(p[2] for p in pieces[i:] if p[0] == "copy")
                trailer = _trailer(pieces[i:], reason)
                log.warning("%s: cannot store the end of the output (%s): %d bytes of output lost",
                            os.path.dirname(self.path), exc, lost)
                break
        self.head_gap = 0
        self.trailer = trailer
        self.info = {
            "bytes_total": self.total,
            "bytes_kept": self.total - dropped - lost,
            "bytes_dropped": dropped,
        }
        if lost:
            self.info["bytes_lost"] = lost
            self.info["error"] = f"cannot store output: {self.first_failure}"
        self._drop_ring()

    def _copy_ring(self, start: int, length: int) -> None:
        """Append ``length`` bytes of the ring from ``start``, whole or not at all."""
        written = self.written
        pos = start
        try:
            while length:
                n = min(length, self.tail - pos, 1024 * 1024)
                chunk = os.pread(self.tail_fd, n, pos)
                if not chunk:
                    raise OSError(errno.EIO, "output.tail is shorter than expected")
                _write_all(self.fd, chunk)
                self.written += len(chunk)
                length -= len(chunk)
                pos = (pos + len(chunk)) % self.tail
        except OSError:
            self.written = written
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, written)
                os.lseek(self.fd, written, os.SEEK_SET)
            raise

    def _drop_ring(self) -> None:
        if self.tail_fd is not None:
            os.close(self.tail_fd)
            self.tail_fd = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tail_path)

    def close(self) -> None:
        """Let go of the files, finished or not."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self._drop_ring()


def _trailer(pieces: list[tuple], reason: str) -> bytes:
    """The lines that stand for ``pieces`` that could not be written: ours
    as they are, the program's output as a count of bytes lost."""
    lines, count = [], 0
    for piece in pieces:
        if piece[0] == "text":
            if count:
                lines.append(_lost_marker(count, reason))
                count = 0
            lines.append(piece[1])
        else:
            count += piece[1] if piece[0] == "lost" else piece[2]
    if count:
        lines.append(_lost_marker(count, reason))
    return b"".join(lines)


_RESETTABLE_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
# The same as plain ints, for the C function behind ``signal.signal``: the
# Python wrapper converts every call's result to an enum, and in a freshly
# forked shepherd the objects that touches cost a page fault each.
_RESETTABLE_NUMBERS = tuple(sorted(int(sig) for sig in _RESETTABLE_SIGNALS))


def _reset_signals() -> None:
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


class _Shepherd:
    """Looks after one run from claim to result.json.

    Every path out of ``run`` after a successful claim writes result.json:
    that file (or a dead shepherd without it) is how the server learns the
    outcome. The shepherd waits in ``poll`` on the output pipe and a wakeup
    pipe fed by SIGCHLD/SIGTERM, with a timeout set to the next deadline, so
    an idle shepherd costs no CPU.

    A stop or a timeout is over only when the program's whole process group
    is: if the program exits on the stop signal but others in its group do
    not, the shepherd sends the group SIGKILL at the end of the grace period
    and writes the result once the group is empty (see ``_settle_group``).
    A program that exits by itself is recorded at once, and what it left in
    the background keeps running, as under cron.
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.lock_fd: int | None = None
        self.spec: dict | None = None
        self.sink: _OutputSink | None = None
        self.pending: set[int] = set()  # Signals caught, not yet handled.
        self.wake_r = self.wake_w = -1
        self.pid: int | None = None  # The program; also its pgid.
        self.out_r: int | None = None
        # The program has exited; its wait status is collected (``status``)
        # at once, or during a stop or timeout only once its group is empty.
        self.exited = False
        self.status: int | None = None
        self.rusage = None
        self.start_wall = time.time()
        self.start_mono = time.monotonic()
        self.end_wall: float | None = None
        self.end_mono: float | None = None
        self.timeout_deadline: float | None = None
        self.kill_deadline: float | None = None
        self.killed_at: float | None = None  # When the group was sent SIGKILL.
        self.timed_out = False
        self.stopped = False
        self.group_killed = 0  # Processes left in the group after the program, SIGKILLed.
        self.group_left = 0  # Of those, still there KILL_WAIT later.
        # State files that found no room on the disk, in the order to write them.
        self.unwritten: dict[str, dict] = {}
        self.rewrite = _Backoff()

    def _path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def run(self) -> int:
        """Returns the shepherd's exit status (0 unless something broke)."""
        if not self._lock():
            return 0
        try:
            os.rename(self._path(SPEC), self._path(SPEC_CLAIMED))
        except FileNotFoundError:
            log.info("%s: spec already claimed or revoked; nothing to do", self.run_dir)
            return 0
        try:
            return self._run_claimed()
        except BaseException as exc:
            log.exception("%s: shepherd failed", self.run_dir)
            if self.pid is not None and self.status is None:
                # Nobody would collect this program's output any more.
                with contextlib.suppress(OSError):
                    os.killpg(self.pid, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    self._reap(blocking=True)
            self._finish(f"shepherd failed: {exc!r}")
            return 1

    def _lock(self) -> bool:
        """Take the run's lock, or learn that another shepherd has the run.

        The server's liveness probe takes the lock for a microsecond too, so a
        busy lock is retried for as long as the spec is still unclaimed.
        """
        fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        deadline = time.monotonic() + 10.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not os.path.exists(self._path(SPEC)) or time.monotonic() > deadline:
                    os.close(fd)
                    log.info("%s: locked by another shepherd; nothing to do", self.run_dir)
                    return False
                time.sleep(0.005)
            else:
                self.lock_fd = fd
                return True

    def _run_claimed(self) -> int:
        try:
            self.spec = _parse_spec(read_json(self.run_dir, SPEC_CLAIMED), self.run_dir)
        except _SpecError as exc:
            return self._finish(f"bad spec: {exc}")
        # Handlers go in before shepherd.json exists: once it does, the server
        # may send SIGTERM, which must not kill us with the default action.
        self._install_signal_handlers()
        me = os.getpid()
        self._write_state(SHEPHERD, {"pid": me, "start_time": proc_start_time(me), "time": time.time()})
        error = self._spawn()
        if error is not None:
            return self._finish(error)
        # Only now: the output waits in the pipe meanwhile, and the program
        # starts one file creation sooner.
        self.sink = _OutputSink(self.run_dir, self.spec["output_head"], self.spec["output_tail"])
        self._notify("running")
        if os.path.exists(self._path(STOP)):
            # A stop requested before we had a program to signal.
            self._stop()
        self._supervise()
        if self.status is None:  # It exited during a stop or a timeout.
            self._settle_group()
            self._reap(blocking=True)
        self._drain()
        return self._finish(None)

    def _install_signal_handlers(self) -> None:
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

        def on_signal(signum, frame):
            self.pending.add(signum)

        signal.signal(signal.SIGCHLD, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    def _spawn(self) -> str | None:
        """Start the program; returns an error message or None.

        The program gets its own session and process group (so a stop or
        timeout reaches the whole tree, grandchildren included), stdin from
        /dev/null, stdout and stderr on one pipe, default signal dispositions
        and an empty signal mask. We use posix_spawn rather than fork + exec:
        glibc spawns with vfork semantics (no copy of this Python process)
        and reports a failed exec as an exception here, which is what an
        error pipe would do, at a quarter of the cost per run.
        """
        spec = self.spec
        argv, env, cwd = spec["argv"], spec["env"], spec["cwd"]
        if cwd is not None:
            # Where the program starts; nothing else here uses relative paths.
            try:
                os.chdir(cwd)
            except OSError as exc:
                return f"exec failed: cannot chdir to {cwd!r}: {exc.strerror}"
        # posix_spawnp searches the PATH of *this* process: make it the
        # program's, as execvpe(argv[0], argv, env) would.
        if "PATH" in env:
            os.environ["PATH"] = env["PATH"]
        else:
            os.environ.pop("PATH", None)
        out_r, out_w = os.pipe()  # Both close-on-exec; dup2 makes 1 and 2.
        try:
            pid = os.posix_spawnp(
                argv[0], argv, env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out_w, 1),
                    (os.POSIX_SPAWN_DUP2, out_w, 2),
                ],
                setsid=True,
                setsigmask=(),
                setsigdef=_RESETTABLE_SIGNALS,
            )
        except OSError as exc:
            os.close(out_r)
            return f"exec failed: cannot run {argv[0]!r}: {exc.strerror}"
        except (TypeError, ValueError) as exc:  # E.g. a NUL byte in env.
            os.close(out_r)
            return f"exec failed: cannot run {argv[0]!r}: {exc}"
        finally:
            os.close(out_w)
        self.pid = pid
        self.start_wall = time.time()
        self.start_mono = time.monotonic()
        # Record the program before anything else: if we die from here on,
        # the server must still be able to find (and kill) it.
        self._write_state(
            PID, {"pid": pid, "pgid": pid, "start_time": proc_start_time(pid), "time": self.start_wall})
        os.set_blocking(out_r, False)
        self.out_r = out_r
        if spec["timeout_duration"] is not None:
            self.timeout_deadline = self.start_mono + spec["timeout_duration"]
        log.debug("%s: started pid %d: %s", spec["run_id"], pid, argv)
        return None

    def _write_state(self, name: str, info: dict) -> None:
        """Write shepherd.json or pid.json; with no room on the disk, keep it
        to write later (see ``_write_unwritten``) and go on.

        The program is started, and keeps running, all the same: nothing the
        server concludes from these files becomes false meanwhile. Without
        shepherd.json a stop request does not signal us but relies on our
        look at stop.json once it is written; without pid.json the server
        leaves the run as starting, and cannot signal it.
        No fsync (see "Recovery rules" above): a power cut kills the
        processes these files describe.
        """
        if not self.unwritten:
            try:
                atomic_write_json(self._path(name), info, durable=False)
                return
            except OSError as exc:
                if not _no_room(exc):
                    raise
                log.warning("%s: cannot write %s (%s); the run goes on, and it is tried again",
                            self.run_dir, name, exc)
                self.rewrite.failed()
        self.unwritten[name] = info

    def _write_unwritten(self) -> None:
        """Write the state files that found no room, in order; raises OSError
        if one still cannot be written."""
        while self.unwritten:
            name, info = next(iter(self.unwritten.items()))
            atomic_write_json(self._path(name), info, durable=False)
            del self.unwritten[name]
            log.info("%s: wrote %s", self.run_dir, name)
            if (name == SHEPHERD and self.pid is not None and self.status is None
                    and not self.stopped and os.path.exists(self._path(STOP))):
                # A stop asked for while shepherd.json was missing did not
                # signal us: it counts on this look.
                self._stop()

    def _retry_unwritten(self) -> None:
        if self.unwritten and self.rewrite.due():
            try:
                self._write_unwritten()
            except OSError as exc:
                if not _no_room(exc):
                    raise
                self.rewrite.failed()
            else:
                self.rewrite.succeeded()

    def _supervise(self) -> None:
        """Copy output and enforce stop/timeout until the program exits."""
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        poller.register(self.out_r, select.POLLIN)
        while not self.exited:
            self._poll_once(poller, self._poll_timeout_ms())
            self._handle_signals()
            self._check_deadlines()
            self._retry_unwritten()

    def _poll_once(self, poller, timeout_ms) -> None:
        """Wait up to ``timeout_ms`` for a signal (drained) or output (copied); stop
        watching the output at its end."""
        for fd, _ in poller.poll(timeout_ms):
            if fd == self.wake_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 4096):
                        pass
            elif fd == self.out_r and not self._read_output():
                poller.unregister(self.out_r)
                os.close(self.out_r)
                self.out_r = None

    def _poll_timeout_ms(self) -> int | None:
        deadlines = [d for d in (self.timeout_deadline, self.kill_deadline,
                                 self.rewrite.at if self.unwritten else None) if d is not None]
        if not deadlines:
            return None  # Sleep until output or a signal arrives.
        return max(0, int((min(deadlines) - time.monotonic()) * 1000) + 1)

    def _read_output(self) -> bool:
        """Read what the pipe has (a bounded amount); False at EOF."""
        for _ in range(16):
            try:
                data = os.read(self.out_r, READ_CHUNK)
            except BlockingIOError:
                return True
            if not data:
                return False
            self.sink.write(data)
            if len(data) < READ_CHUNK:
                return True
        return True

    def _handle_signals(self) -> None:
        pending, self.pending = self.pending, set()
        # A reused shepherd may get a SIGTERM meant for an earlier run of its;
        # only a stop.json in this run's folder makes it a stop of this run.
        # Handled before SIGCHLD: a stop that crossed the program's exit
        # still reaches what the program left in its group.
        if (signal.SIGTERM in pending and self.status is None
                and os.path.exists(self._path(STOP))):
            self._stop()
        if signal.SIGCHLD in pending and not self.exited:
            if self.stopped or self.timed_out:
                # Note the exit but leave the zombie: see _settle_group.
                if exited_unreaped(self.pid):
                    self._note_exit()
            else:
                self._reap(blocking=False)

    def _note_exit(self) -> None:
        self.exited = True
        self.end_wall, self.end_mono = time.time(), time.monotonic()

    def _reap(self, blocking: bool) -> None:
        if self.status is not None:
            return
        pid, status, rusage = os.wait4(self.pid, 0 if blocking else os.WNOHANG)
        if pid == 0:
            return
        self.status, self.rusage = status, rusage
        if not self.exited:
            self._note_exit()

    def _stop(self) -> None:
        """Carry out stop.json (or the spec's stop) on the process group."""
        request = read_json(self.run_dir, STOP) or {}
        try:
            sig = signal_from_name(request.get("signal", self.spec["stop_signal"]))
        except ValueError:
            sig = self.spec["stop_signal"]
        try:
            grace = max(0.0, float(request.get("grace_period", self.spec["stop_grace"])))
        except (TypeError, ValueError):
            grace = self.spec["stop_grace"]
        log.info("%s: stopping with %s, grace %.1fs", self.spec["run_id"], sig.name, grace)
        self.stopped = True
        self._signal_group(sig)
        self._arm_kill(grace)
        self._check_deadlines()  # A zero grace period kills right away.

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        if self.timeout_deadline is not None and now >= self.timeout_deadline:
            self.timeout_deadline = None
            if not self.exited:
                log.info("%s: timed out", self.spec["run_id"])
                self.timed_out = True
                self._signal_group(self.spec["timeout_signal"])
                self._arm_kill(self.spec["stop_grace"])
        if self.kill_deadline is not None and time.monotonic() >= self.kill_deadline:
            self.kill_deadline = None
            if self.exited:
                self.group_killed = len(group_members(self.pid))
                if self.group_killed:
                    log.info("%s: SIGKILL to %d processes left in the group after the grace period",
                             self.spec["run_id"], self.group_killed)
            self.killed_at = time.monotonic()
            self._signal_group(signal.SIGKILL)

    def _arm_kill(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        if self.kill_deadline is None or deadline < self.kill_deadline:
            self.kill_deadline = deadline

    def _signal_group(self, sig: int) -> None:
        # Never after the reap: the pgid could then name someone else's group
        # (see _settle_group). Until then the program, alive or a zombie,
        # holds its pid, so the group's number is ours.
        if self.status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def _settle_group(self) -> None:
        """The program exited during a stop or a timeout: wait until the rest
        of its process group is gone, sending it SIGKILL when the grace period
        ends, before the result says the run is over.

        Why the group can be signalled safely: the program's pid is its group's
        number (and its session's), and Linux never hands out a pid again
        while any process still uses it as its pid, group or session. The
        program is not reaped until we are done (``waitid`` with WNOWAIT saw
        its exit), so its zombie keeps the number ours throughout: ``killpg``
        reaches only our group, and every process /proc shows in that group
        is one of the program's. Once reaped with its group empty, the number
        is free and could be a stranger's group a moment later.

        Members leave no event to wait on (they are not our children), so
        /proc is looked at after growing pauses, and promptly after SIGKILL.
        The output pipe is read meanwhile: a member may still write to it.
        """
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        if self.out_r is not None:
            poller.register(self.out_r, select.POLLIN)
        pause = SETTLE_POLL_MIN
        waited = False
        while True:
            members = group_members(self.pid)
            if not members:
                break
            now = time.monotonic()
            if self.killed_at is not None and now >= self.killed_at + KILL_WAIT:
                self.group_left = len(members)
                log.warning("%s: %d processes of the group still there %.0fs after SIGKILL: %s",
                            self.spec["run_id"], len(members), KILL_WAIT, members)
                break
            if not waited:
                log.info("%s: program exited; waiting for %d more processes in its group",
                         self.spec["run_id"], len(members))
                waited = True
            wait = pause
            for deadline in (self.kill_deadline,
                             None if self.killed_at is None else self.killed_at + KILL_WAIT):
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - now))
            self._poll_once(poller, int(wait * 1000) + 1)
            killed_at = self.killed_at
            self._handle_signals()
            self._check_deadlines()
            pause = SETTLE_POLL_MIN if self.killed_at != killed_at else min(pause * 2, SETTLE_POLL_MAX)
        if waited:  # The run ends when its group does.
            self.end_wall, self.end_mono = time.time(), time.monotonic()

    def _drain(self) -> None:
        """Read the output left in the pipe after the program exited.

        A background grandchild may hold the pipe open indefinitely; like
        cron, we leave it alone, and stop reading after DRAIN_TIMEOUT.
        """
        if self.out_r is None:
            return
        poller = select.poll()
        poller.register(self.out_r, select.POLLIN)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(int(remaining * 1000) + 1):
                log.info("%s: output still open after exit; not waiting", self.spec["run_id"])
                break
            if not self._read_output():
                break
        os.close(self.out_r)
        self.out_r = None

    def _finish(self, error: str | None) -> int:
        """Write result.json, release the lock, then say ``done``.

        The output and the result are flushed to disk only if no server took
        the ``done``. A server that took it copies both into its database and
        commits (synchronous=FULL) before it deletes them, so three flushes
        per run (output, result, folder) would only cover a power cut in the
        moment between the two, and they kept the shepherd from its next run:
        the last of a thousand simultaneous runs started about 0.15 s later.

        With no room on the disk, the result waits in memory and is tried
        again (RETRY_MIN to RETRY_MAX apart) for as long as it takes, the
        run's lock held meanwhile: to the server the run is still running,
        and it records the outcome once there is room. This shepherd is not
        idle meanwhile, so the agent hands it no other run.
        """
        exit_code = sig_name = None
        if error is None and self.status is not None:
            if os.WIFEXITED(self.status):
                exit_code = os.WEXITSTATUS(self.status)
            elif os.WIFSIGNALED(self.status):
                sig_name = _signal_name(os.WTERMSIG(self.status))
        end_wall = self.end_wall if self.end_wall is not None else time.time()
        end_mono = self.end_mono if self.end_mono is not None else time.monotonic()
        if self.rusage is not None:
            rusage = {
                "utime": self.rusage.ru_utime,
                "stime": self.rusage.ru_stime,
                "maxrss_kb": self.rusage.ru_maxrss,
            }
        else:
            rusage = {"utime": 0.0, "stime": 0.0, "maxrss_kb": 0}
        result = {
            "exit_code": exit_code,
            "signal": sig_name,
            "error": error,
            "start": self.start_wall,
            "end": end_wall,
            "elapsed": max(0.0, end_mono - self.start_mono),
            "rusage": rusage,
            "timed_out": self.timed_out,
            "stopped": self.stopped,
            "group_killed": self.group_killed,
            "group_left": self.group_left,
            "shepherd_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
        run_id = self.spec["run_id"] if self.spec else os.path.basename(self.run_dir)
        retry = _Backoff()
        while True:
            try:
                result["output"] = (self.sink.finish() if self.sink is not None
                                    else {"bytes_total": 0, "bytes_kept": 0, "bytes_dropped": 0})
                self._write_unwritten()
                atomic_write_json(self._path(RESULT), result, durable=False)
                break
            except OSError as exc:
                if not _no_room(exc):
                    raise
                if not retry.delay:
                    log.warning("%s: no room for the result (%s); holding it, trying again until there is",
                                run_id, exc)
                retry.failed()
                time.sleep(retry.delay)
        if retry.delay:
            log.info("%s: result written", run_id)
        self.sink = None
        log.debug(
            "%s: finished: exit %s signal %s error %s in %.3fs",
            run_id, exit_code, sig_name, error, result["elapsed"],
        )
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # The run is over for anyone probing the lock.
            self.lock_fd = None
        if not self._notify("done"):
            self._flush_outcome()
        return 0

    def _flush_outcome(self) -> None:
        """Make output and result.json durable: no server is there to record them."""
        try:
            for name in (OUTPUT, RESULT):
                with contextlib.suppress(FileNotFoundError):
                    fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            _fsync_dir(self.run_dir)
        except OSError as exc:
            log.warning("%s: cannot flush the result to disk: %s", self.run_dir, exc)

    def close(self) -> None:
        """Release what this run held, so that the process can take another."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN if sig == signal.SIGTERM else signal.SIG_DFL)
        for fd in (self.wake_r, self.wake_w, self.out_r, self.lock_fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.wake_r = self.wake_w = -1
        self.out_r = self.lock_fd = None
        if self.sink is not None:
            with contextlib.suppress(OSError):
                self.sink.close()
            self.sink = None
        with contextlib.suppress(OSError):
            os.chdir("/")

    def _notify(self, word: str) -> bool:
        """Best-effort nudge to the server (it finds the files anyway); True
        if a server took it."""
        path = self.spec and self.spec["notify"]
        if not path:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                with _unix_address(path) as address:
                    sock.connect(address)
                sock.sendall(f"{word} {self.spec['run_id']}\n".encode())
        except OSError as exc:
            log.debug("%s: notify %s failed: %s", self.spec["run_id"], word, exc)
            return False
        return True


def _shepherd_loop(ctl: socket.socket, run_dir: str) -> int:
    """A shepherd's life: supervise ``run_dir``, then tell the agent it is
    idle and wait on ``ctl`` for the next run folder, until the agent closes
    ``ctl`` (it has enough idle shepherds, or it is gone) or the shepherd has
    done MAX_RUNS_PER_SHEPHERD runs."""
    buf = b""
    for _ in range(MAX_RUNS_PER_SHEPHERD):
        shepherd = _Shepherd(run_dir)
        try:
            shepherd.run()
        finally:
            shepherd.close()
        try:
            ctl.sendall(b"idle\n")
            while b"\n" not in buf:
                chunk = ctl.recv(65536)
                if not chunk:
                    return 0
                buf += chunk
        except OSError:
            return 0
        line, _, buf = buf.partition(b"\n")
        run_dir = line.decode()
    return 0


# ---------------------------------------------------------------------------
# Agent: serves start requests and hands runs to shepherds.
# ---------------------------------------------------------------------------

class _Conn:
    __slots__ = ("sock", "inbuf", "outbuf", "backlog")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.backlog = False  # Whole requests in inbuf still to answer.


class Agent:
    """The agent's event loop: one thread, one selector, no blocking calls
    apart from ``fork``, so many clients and thousands of starts are served
    promptly. It owns nothing about runs beyond forking their shepherds: if
    it dies, running shepherds carry on and a new agent takes over."""

    MAX_REQUEST = 1024 * 1024
    #: Requests answered per connection per turn of the loop. A thousand
    #: pipelined starts are served a few at a time, so that shepherds that
    #: finished meanwhile are back in the idle pool before the next start
    #: needs one: handing a run to an idle shepherd costs a send, a fork
    #: costs a millisecond and more on a machine busy with the other runs.
    REQUESTS_PER_TURN = 8

    def __init__(self, state_dir: str, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 shepherd_ttl: float = IDLE_SHEPHERD_TTL):
        self.state_dir = os.path.abspath(state_dir)
        self.idle_timeout = idle_timeout
        self.shepherd_ttl = shepherd_ttl
        self.lock_fd: int | None = None
        self.listener: socket.socket | None = None
        self.selector: selectors.BaseSelector | None = None
        self.conns: dict[int, _Conn] = {}
        self.children: set[int] = set()
        self.shepherds: dict[int, tuple[int, socket.socket]] = {}  # ctl fd -> (pid, ctl)
        # (pid, ctl, idle since): the warmest last, the first to expire first.
        self.idle: list[tuple[int, socket.socket, float]] = []
        self.pending: set[int] = set()
        self.wake_r = self.wake_w = -1
        self.stopping = False

    def _path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    def serve(self) -> int:
        """Run until idle or signalled; returns the exit status."""
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.lock_fd = os.open(self._path(AGENT_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another agent already serves %s", self.state_dir)
            os.close(self.lock_fd)
            return 0
        try:
            self._open()
            log.info("agent %d serving %s", os.getpid(), self.state_dir)
            self._loop()
        finally:
            self._close()
        return 0

    def _open(self) -> None:
        sock_path = self._path(AGENT_SOCK)
        # Only the lock holder may remove the socket: it is stale by now.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with _unix_address(sock_path) as address:
            self.listener.bind(address)
        # Whoever can talk to us can run programs as us: owner only (and
        # _accept checks the peer's uid too, which also covers this window).
        os.chmod(sock_path, 0o600)
        self.listener.listen(1024)
        self.listener.setblocking(False)
        atomic_write_bytes(self._path(AGENT_PID), f"{os.getpid()}\n".encode())

        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        # Do not pin whatever directory we were started from.
        os.chdir("/")

        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, self._accept)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self._drain_wakeup)

    def _on_signal(self, signum, frame) -> None:
        self.pending.add(signum)

    def _loop(self) -> None:
        idle_since: float | None = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            timeout = None  # Busy: wait for events only.
            if self.conns or len(self.children) > len(self.idle):
                idle_since = None
            else:
                if idle_since is None:
                    idle_since = now
                timeout = idle_since + self.idle_timeout - now
                if timeout <= 0:
                    log.info("idle for %gs; exiting", self.idle_timeout)
                    break
            if self.idle:
                expires = self.idle[0][2] + self.shepherd_ttl - now
                timeout = expires if timeout is None else min(timeout, expires)
            backlog = [conn for conn in self.conns.values() if conn.backlog]
            if backlog:
                timeout = 0.0
            for key, mask in self.selector.select(max(0.0, timeout) if timeout is not None else None):
                key.data(key, mask)
            for conn in backlog:
                if conn.backlog and self.conns.get(conn.sock.fileno()) is conn:
                    self._serve(conn)
            self._handle_signals()
            self._retire_expired()

    def _retire_expired(self) -> None:
        now = time.monotonic()
        while self.idle and self.idle[0][2] + self.shepherd_ttl <= now:
            self._retire(self.idle[0][1])

    def _handle_signals(self) -> None:
        pending, self.pending = self.pending, set()
        if signal.SIGCHLD in pending:
            while True:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                self.children.discard(pid)
        if pending & {signal.SIGTERM, signal.SIGINT}:
            log.info("signalled; exiting (shepherds keep running)")
            self.stopping = True

    def _drain_wakeup(self, key, mask) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 4096):
                pass

    def _accept(self, key, mask) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # EMFILE and friends: try again later.
                log.error("accept failed: %s", exc)
                return
            if not self._trusted(sock):
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock)
            self.conns[sock.fileno()] = conn
            self.selector.register(sock, selectors.EVENT_READ, self._on_conn)

    @staticmethod
    def _trusted(sock: socket.socket) -> bool:
        """Only our own user (or root) may ask us to run things."""
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return False
        _, uid, _ = struct.unpack("3i", creds)
        if uid in (os.getuid(), 0):
            return True
        log.warning("refused a connection from uid %d", uid)
        return False

    def _on_conn(self, key, mask) -> None:
        conn = self.conns.get(key.fd)
        if conn is None:
            return
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
        # A connection with requests still to answer is not read: the rest
        # wait in the socket, which holds up a client that sends too much.
        if mask & selectors.EVENT_READ and key.fd in self.conns and not conn.backlog:
            try:
                data = conn.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._drop(conn)
                return
            conn.inbuf += data
            self._serve(conn)

    def _serve(self, conn: _Conn) -> None:
        """Answer up to REQUESTS_PER_TURN of the whole requests in ``inbuf``."""
        for _ in range(self.REQUESTS_PER_TURN):
            end = conn.inbuf.find(b"\n")
            if end < 0:
                break
            line = bytes(conn.inbuf[:end])
            del conn.inbuf[:end + 1]
            if line.strip():
                reply = self._handle_request(line)
                conn.outbuf += json.dumps(reply).encode() + b"\n"
        conn.backlog = conn.inbuf.find(b"\n") >= 0
        if not conn.backlog and len(conn.inbuf) > self.MAX_REQUEST:
            log.error("request too long; dropping connection")
            self._drop(conn)
            return
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._drop(conn)
                return
            del conn.outbuf[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        if self.selector.get_key(conn.sock).events != events:
            self.selector.modify(conn.sock, events, self._on_conn)

    def _drop(self, conn: _Conn) -> None:
        self.conns.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()

    def _handle_request(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        op = request.get("op")
        try:
            if op == "ping":
                return {"ok": True, "pid": os.getpid()}
            if op == "start":
                return {"ok": True, "pid": self._start(request.get("run_dir"))}
            return {"ok": False, "error": f"unknown op: {op!r}"}
        except (OSError, ValueError) as exc:
            return {"ok": False, "error": str(exc)}

    def _start(self, run_dir) -> int:
        if not isinstance(run_dir, str) or not os.path.isabs(run_dir):
            raise ValueError(f"run_dir must be an absolute path: {run_dir!r}")
        if not os.path.isdir(run_dir):
            raise ValueError(f"no such run dir: {run_dir}")
        if not os.path.exists(os.path.join(run_dir, SPEC)):
            raise ValueError(f"no {SPEC} in {run_dir} (already claimed or revoked)")
        while self.idle:
            pid, ctl, _ = self.idle.pop()
            try:
                ctl.send(run_dir.encode() + b"\n")
            except OSError:
                self._retire(ctl)
                continue
            log.debug("reused shepherd %d for %s", pid, run_dir)
            return pid
        return self._fork_shepherd(run_dir)

    def _fork_shepherd(self, run_dir: str) -> int:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()  # Or the child would print our buffer again.
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                ours.close()
                self._become_shepherd()
                status = _shepherd_loop(theirs, run_dir)
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
        try:
            data = ctl.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._retire(ctl)
        elif len(self.idle) < MAX_IDLE_SHEPHERDS and not self.stopping:
            self.idle.append((pid, ctl, time.monotonic()))
        else:
            self._retire(ctl)  # It exits on EOF.

    def _retire(self, ctl: socket.socket) -> None:
        self.shepherds.pop(ctl.fileno(), None)
        self.idle = [entry for entry in self.idle if entry[1] is not ctl]
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(ctl)
        ctl.close()

    def _become_shepherd(self) -> None:
        """In the forked child: shed everything that belongs to the agent.

        A new session makes the shepherd immune to whatever ends the agent or
        the server. Closing the agent's descriptors matters: a shepherd still
        holding agent.lock would stop a new agent from ever serving. (Close,
        never unregister or shutdown: those would act on the agent's shared
        epoll set and connections.)
        """
        os.setsid()
        _reset_signals()
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # A dead notify socket must not kill us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        self.selector.close()
        self.listener.close()
        for conn in self.conns.values():
            conn.sock.close()
        # Or a sibling would never see EOF on its control socket when the
        # agent goes away.
        for _, ctl in self.shepherds.values():
            ctl.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        os.close(self.lock_fd)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        if devnull != 0:
            os.close(devnull)

    def _close(self) -> None:
        if self.selector is not None:
            self.selector.close()
        for conn in list(self.conns.values()):
            conn.sock.close()
        self.conns.clear()
        if self.listener is not None:
            self.listener.close()
            # Remove our socket before releasing the lock, never after: by
            # then it may belong to the next agent.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(AGENT_SOCK))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(AGENT_PID))
        os.close(self.lock_fd)
        self.lock_fd = None


def agent_main(state_dir: str, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
               shepherd_ttl: float = IDLE_SHEPHERD_TTL) -> int:
    """Serve ``state_dir`` until idle for ``idle_timeout`` seconds or
    SIGTERM/SIGINT. Exits at once with 0 if another agent serves it."""
    return Agent(state_dir, idle_timeout=idle_timeout, shepherd_ttl=shepherd_ttl).serve()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m apsis_lite.agent",
        description="Serve run start requests for one state folder.",
    )
    parser.add_argument("state_dir", help="folder for agent.sock, agent.lock, agent.pid")
    parser.add_argument(
        "--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
        help="exit after this long with no client and no running shepherd (default: %(default)s)",
    )
    parser.add_argument(
        "--shepherd-ttl", type=float, default=IDLE_SHEPHERD_TTL,
        help="retire an idle shepherd after this long unused (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    return agent_main(args.state_dir, idle_timeout=args.idle_timeout, shepherd_ttl=args.shepherd_ttl)


# ---------------------------------------------------------------------------
# Client, used by the server.
# ---------------------------------------------------------------------------

#: Pause between tries of a request whose connection broke (after the first).
RETRY_PAUSE = 0.02


class AgentError(Exception):
    """The agent could not be reached, started, or refused a request."""


class AgentClient:
    """The server's connection to its agent, which it starts when absent.

    One persistent connection, serialised by a lock (gevent makes that a
    cooperative lock), is reopened when broken. Holding it open also keeps
    the agent from exiting as idle while the server is up.

    A request whose connection broke is tried again on a new connection
    (starting a new agent if needed), for up to ``spawn_timeout`` seconds
    (see ``_try_again``). For ``start`` that is safe because of the claim:
    if a try did reach the
    agent, the next one either fails with "already claimed" or forks a
    second shepherd that loses the lock or the claim and exits. So on
    AgentError the run folder is the truth: if ``spec.claimed.json`` exists
    the run started, otherwise ``revoke`` it or try again; and the
    authoritative shepherd pid is always the one in shepherd.json.
    """

    def __init__(
        self,
        state_dir: str,
        command: list[str],
        *,
        env: dict | None = None,
        spawn_timeout: float = 5.0,
        reply_timeout: float = 30.0,
    ):
        self.state_dir = os.path.abspath(state_dir)
        self.command = list(command)
        self.env = env
        self.spawn_timeout = spawn_timeout
        self.reply_timeout = reply_timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self._proc = None  # The last agent we spawned, reaped when it exits.
        import threading  # Here, not at the top: the agent process must not import it.
        self._lock = threading.Lock()

    @property
    def socket_path(self) -> str:
        return os.path.join(self.state_dir, AGENT_SOCK)

    def ping(self) -> int:
        """The agent's pid (starting an agent if there is none)."""
        return int(self._request({"op": "ping"})["pid"])

    def start(self, run_dir: str) -> int:
        """Have the agent fork a shepherd for ``run_dir`` (spec.json must be
        written already); returns the shepherd pid without waiting for the
        program. The authoritative pid is shepherd.json's."""
        reply = self._request({"op": "start", "run_dir": os.path.abspath(run_dir)})
        return int(reply["pid"])

    def start_many(self, run_dirs) -> list:
        """``start`` for many runs, pipelined: all requests are sent before
        the first reply is read, so the agent forks back to back instead of
        waiting a round trip per run. Returns, in order, a shepherd pid or an
        AgentError for each. Requests lost with a broken connection are sent
        again (see ``_try_again``; a second start of a run that did start is
        refused by the claim, so the program still runs once).
        """
        results: dict[int, object] = {}
        pending = list(range(len(run_dirs)))
        deadline = time.monotonic() + self.spawn_timeout
        with self._lock:
            attempt = 0
            while pending:
                attempt += 1
                lines = b"".join(
                    json.dumps({"op": "start", "run_dir": os.path.abspath(run_dirs[i])}).encode() + b"\n"
                    for i in pending)
                try:
                    sock = self._connection()
                    sock.sendall(lines)
                    while pending:
                        reply = self._read_reply(sock)
                        i = pending.pop(0)
                        if isinstance(reply, dict) and reply.get("ok"):
                            results[i] = int(reply["pid"])
                        else:
                            error = reply.get("error") if isinstance(reply, dict) else reply
                            results[i] = AgentError(str(error))
                except (OSError, ValueError, AgentError) as exc:
                    self._disconnect()
                    if not self._try_again(exc, attempt, deadline):
                        for i in pending:
                            results[i] = AgentError(f"agent connection failed: {exc}")
                        pending = []
        return [results[i] for i in range(len(run_dirs))]

    def close(self) -> None:
        """Drop the connection. The agent keeps running (it exits by itself
        once idle)."""
        with self._lock:
            self._disconnect()
            self._poll_proc()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _request(self, message: dict) -> dict:
        line = json.dumps(message).encode() + b"\n"
        deadline = time.monotonic() + self.spawn_timeout
        with self._lock:
            attempt = 0
            while True:
                attempt += 1
                sock = self._connection()
                try:
                    sock.sendall(line)
                    reply = self._read_reply(sock)
                    break
                except TimeoutError as exc:
                    self._disconnect()
                    raise AgentError(f"agent did not answer within {self.reply_timeout}s") from exc
                except (OSError, ValueError) as exc:
                    self._disconnect()
                    if not self._try_again(exc, attempt, deadline):
                        raise AgentError(f"agent connection failed: {exc}") from exc
        if not isinstance(reply, dict) or not reply.get("ok"):
            error = reply.get("error") if isinstance(reply, dict) else reply
            raise AgentError(str(error))
        return reply

    def _try_again(self, exc: Exception, attempt: int, deadline: float) -> bool:
        """Whether to send a request again after its connection broke.

        The first try often meets a connection whose agent has died since
        the last request: the second, at once, reaches a new agent. But a new
        connection made just as an agent dies can still reach its listening
        socket, which the kernel may close only after the connections it
        resets (kill -9 in a benchmark showed it), and a new agent may be
        killed too: so tries go on, a little apart, until ``deadline``. No
        answer in time, or no agent that could be started, ends them.
        """
        if isinstance(exc, (TimeoutError, AgentError)):
            return False
        if attempt == 1:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(RETRY_PAUSE)
        return True

    def _read_reply(self, sock: socket.socket):
        while b"\n" not in self._buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("agent closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""

    def _try_connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.reply_timeout)
        try:
            with _unix_address(self.socket_path) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None  # No agent, or a stale socket of a dead one.
        except OSError as exc:
            sock.close()
            raise AgentError(f"cannot connect to {self.socket_path}: {exc}") from exc
        return sock

    def _connection(self) -> socket.socket:
        if self._sock is None:
            self._poll_proc()
            sock = self._try_connect()
            if sock is None:
                sock = self._spawn_and_connect()
            self._sock = sock
        return self._sock

    def _spawn_and_connect(self) -> socket.socket:
        deadline = time.monotonic() + self.spawn_timeout
        self._spawn()
        while True:
            sock = self._try_connect()
            if sock is not None:
                return sock
            if self._proc is not None and self._proc.poll() is not None:
                if self._proc.returncode != 0:
                    raise AgentError(
                        f"agent exited with status {self._proc.returncode}; "
                        f"see {os.path.join(self.state_dir, AGENT_LOG)}"
                    )
                # Status 0: another agent held the lock. If that one has
                # exited meanwhile, nobody serves now, so try again.
                self._proc = None
                if self._agent_lock_free():
                    self._spawn()
            if time.monotonic() > deadline:
                raise AgentError(
                    f"agent did not start within {self.spawn_timeout}s; "
                    f"see {os.path.join(self.state_dir, AGENT_LOG)}"
                )
            time.sleep(0.02)

    def _agent_lock_free(self) -> bool:
        try:
            fd = os.open(os.path.join(self.state_dir, AGENT_LOCK), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    def _spawn(self) -> None:
        import subprocess

        os.makedirs(self.state_dir, exist_ok=True)
        log_path = os.path.join(self.state_dir, AGENT_LOG)
        with open(log_path, "ab") as log_file:
            try:
                self._proc = subprocess.Popen(
                    self.command + [self.state_dir],
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    close_fds=True,
                    env=self.env,
                )
            except OSError as exc:
                raise AgentError(f"cannot start agent {self.command}: {exc}") from exc
        log.info("started agent pid %d for %s", self._proc.pid, self.state_dir)

    def _poll_proc(self) -> None:
        """Reap an agent we spawned that has exited (no zombies)."""
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None


if __name__ == "__main__":
    sys.exit(main())

"""What the server, the agent and the shepherds say to each other: the run
folder's files, the state folder's files, and the lines on the sockets.
Both ends import this module; nothing else in the package defines a format.

The run folder
--------------
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

The sockets
-----------
* Server → agent (``agent.sock`` in the state folder): one JSON object per
  line, ``{"op": "ping"}`` or ``{"op": "start", "run_dir": ...}``; each is
  answered, in order, by ``{"ok": true, "pid": ...}`` or
  ``{"ok": false, "error": ...}``.
* Shepherd → server (the spec's ``notify`` socket): ``running <run id>``
  once the program is spawned, ``done <run id>`` once result.json is
  written; best effort, the files are the truth.
* Shepherd ↔ agent (a socket pair per shepherd): the shepherd says
  ``idle`` when it is done with a run; the agent answers with the next run
  folder's path, or closes the socket to retire it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal

from apsis_lite.agent.files import atomic_write_bytes, fsync_dir

# Run folder file names.
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

# What a spec that leaves them out gets.
DEFAULT_OUTPUT_HEAD = 8 * 1024 * 1024
DEFAULT_OUTPUT_TAIL = 8 * 1024 * 1024
DEFAULT_STOP = {"signal": "SIGTERM", "grace_period": 60.0}


# ---------------------------------------------------------------------------
# The run folder's files.
# ---------------------------------------------------------------------------

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
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
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
    fsync_dir(run_dir)
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


def shepherd_info(pid: int, start_time: int | None, when: float) -> dict:
    """The content of shepherd.json: the shepherd's pid and /proc start time."""
    return {"pid": pid, "start_time": start_time, "time": when}


def program_info(pid: int, start_time: int | None, when: float) -> dict:
    """The content of pid.json: the program, which leads its own process group."""
    return {"pid": pid, "pgid": pid, "start_time": start_time, "time": when}


def write_stop_request(run_dir: str, sig: signal.Signals, grace_period: float) -> None:
    """Write stop.json: stop with ``sig``, then SIGKILL after ``grace_period`` seconds."""
    atomic_write_json(
        os.path.join(run_dir, STOP),
        {"signal": sig.name, "grace_period": float(grace_period)},
    )


def read_stop_request(run_dir: str, signal_default: signal.Signals,
                      grace_default: float) -> tuple[signal.Signals, float]:
    """The signal and grace period stop.json asks for; the spec's where it
    is missing or unreadable."""
    request = read_json(run_dir, STOP) or {}
    try:
        sig = signal_from_name(request.get("signal", signal_default))
    except ValueError:
        sig = signal_default
    try:
        grace = max(0.0, float(request.get("grace_period", grace_default)))
    except (TypeError, ValueError):
        grace = grace_default
    return sig, grace


def result_document(*, error: str | None, status: int | None, rusage, start: float, end: float,
                    elapsed: float, timed_out: bool, stopped: bool, group_killed: int,
                    group_left: int, shepherd_maxrss_kb: int) -> dict:
    """The content of result.json but its ``output`` counts, from the
    program's wait ``status`` and ``rusage`` (None if it never ran)."""
    exit_code = sig_name = None
    if error is None and status is not None:
        if os.WIFEXITED(status):
            exit_code = os.WEXITSTATUS(status)
        elif os.WIFSIGNALED(status):
            sig_name = signal_name(os.WTERMSIG(status))
    if rusage is not None:
        usage = {"utime": rusage.ru_utime, "stime": rusage.ru_stime, "maxrss_kb": rusage.ru_maxrss}
    else:
        usage = {"utime": 0.0, "stime": 0.0, "maxrss_kb": 0}
    return {
        "exit_code": exit_code,
        "signal": sig_name,
        "error": error,
        "start": start,
        "end": end,
        "elapsed": elapsed,
        "rusage": usage,
        "timed_out": timed_out,
        "stopped": stopped,
        "group_killed": group_killed,
        "group_left": group_left,
        "shepherd_maxrss_kb": shepherd_maxrss_kb,
    }


def dropped_marker(count: int) -> bytes:
    """The line that stands for ``count`` bytes of output dropped between the head and the tail."""
    return f"\n[apsis-lite: {count} bytes of output dropped]\n".encode()


def lost_marker(count: int, reason: str) -> bytes:
    """The line that stands for ``count`` bytes of output that found no room."""
    return f"\n[apsis-lite: {count} bytes of output lost: {reason}]\n".encode()


# ---------------------------------------------------------------------------
# The spec and signal names.
# ---------------------------------------------------------------------------

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


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15; the bare number for a signal Python has no name for."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class SpecError(ValueError):
    """spec.claimed.json is missing or says something the shepherd cannot run."""


def parse_spec(raw: dict | None, run_dir: str) -> dict:
    """Validate the spec up front, so a bad one becomes a clear error in
    result.json instead of a crash halfway through the run."""
    if raw is None:
        raise SpecError("spec is missing or not valid JSON")
    spec = {}
    spec["run_id"] = str(raw.get("run_id") or os.path.basename(run_dir))
    argv = raw.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise SpecError("argv must be a non-empty list of strings")
    spec["argv"] = argv
    env = raw.get("env")
    if env is not None and not (
        isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise SpecError("env must map strings to strings")
    spec["env"] = dict(os.environ) if env is None else env
    cwd = raw.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise SpecError("cwd must be a string or null")
    spec["cwd"] = cwd or None
    user = raw.get("user")
    if user is not None and not (isinstance(user, str) and user):
        raise SpecError("user must be a user name or null")
    spec["user"] = user
    sudo = raw.get("sudo")
    if sudo is not None and not (isinstance(sudo, list) and all(isinstance(n, str) for n in sudo)):
        raise SpecError("sudo must be a list of variable names or null")
    spec["sudo"] = sudo
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
        raise SpecError(str(exc)) from None
    umask = raw.get("umask")
    if umask is not None and not (isinstance(umask, int) and 0 <= umask <= 0o777):
        raise SpecError("umask must be a number from 0 to 0o777, or null")
    spec["umask"] = umask
    notify = raw.get("notify")
    spec["notify"] = notify if isinstance(notify, str) and notify else None
    return spec


# ---------------------------------------------------------------------------
# The sockets.
# ---------------------------------------------------------------------------

OP_PING = "ping"
OP_START = "start"
OP_WARM = "warm"
PING = {"op": OP_PING}
#: What a shepherd says to the agent when it is free for another run.
IDLE = b"idle\n"
#: The shepherd's notices to the server.
NOTICE_RUNNING = "running"
NOTICE_DONE = "done"


def start_request(run_dir: str) -> dict:
    """The request to start the run prepared in ``run_dir`` (an absolute path)."""
    return {"op": OP_START, "run_dir": run_dir}


def warm_request(count: int) -> dict:
    """The request to have ``count`` shepherds forked and waiting before runs are due."""
    return {"op": OP_WARM, "count": count}


def encode_message(message: dict) -> bytes:
    """A request or a reply as it goes on the agent's socket: one line of JSON."""
    return json.dumps(message).encode() + b"\n"


def decode_request(line: bytes) -> dict:
    """A request line; ValueError if it is not a JSON object."""
    request = json.loads(line)
    if not isinstance(request, dict):
        raise ValueError("request must be a JSON object")
    return request


def decode_reply(line: bytes):
    """A reply line: a dict as the agent sends it (anything else is an error)."""
    return json.loads(line)


def ok_reply(pid: int) -> dict:
    """The agent's answer to a request it carried out: its pid or the shepherd's."""
    return {"ok": True, "pid": pid}


def error_reply(text: str) -> dict:
    """The agent's answer to a request it refused, saying why."""
    return {"ok": False, "error": text}


def notice_line(word: str, run_id: str) -> bytes:
    """A shepherd's notice to the server: ``running`` or ``done`` and the run id."""
    return f"{word} {run_id}\n".encode()


def parse_notices(data: bytes):
    """The ``(word, run_id)`` pairs of the notice lines in ``data`` (the server's side of notice_line)."""
    for line in data.decode("utf-8", "replace").splitlines():
        word, _, run_id = line.strip().partition(" ")
        yield word, run_id


def handoff_line(run_dir: str) -> bytes:
    """What the agent sends an idle shepherd: the next run folder."""
    return run_dir.encode() + b"\n"


@contextlib.contextmanager
def unix_address(path: str):
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

"""Running a bound program once in this terminal, as the server would (``try --run``).

Its own session and process group, the job's env and cwd, the APSIS_*
variables; its timeout and stop signals go to the whole group, and a stop
or timeout is over only when the whole group is, as with the agent's
shepherds (whose helpers for that it uses).
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass

from apsis_lite.errors import ApsisError
from apsis_lite.timeutil import format_duration


class CannotRun(ApsisError):
    status = 400


def run_env(program, job_id: str, args: dict, base_env=None) -> dict:
    """The environment the server gives a run: its own, the job's ``env``, then the APSIS_* variables."""
    env = dict(os.environ if base_env is None else base_env)
    env.update(program.env or {})
    env["APSIS_RUN_ID"] = "r0"  # no such run: a trial is not recorded
    env["APSIS_JOB_ID"] = job_id
    env["APSIS_ARGS"] = json.dumps(args, sort_keys=True)
    for name, value in args.items():
        env[f"APSIS_ARG_{name}"] = str(value)
    return env


def local_argv(program) -> list[str]:
    """The argv to run here; CannotRun says why a program cannot be run on this machine."""
    if getattr(program, "host", None):
        where = (f"a host of group {program.group_id!r}" if getattr(program, "group_id", None)
                 else f"host {program.host!r}")
        raise CannotRun(f"the program runs on {where}; --run runs programs on this machine only")
    user = getattr(program, "user", None)
    if user and user != _current_user():
        raise CannotRun(f"the program runs as user {user!r}, not {_current_user()!r}")
    try:
        return program.argv()
    except TypeError:
        raise CannotRun(f"a {program.type_name} program cannot be run from the command line") from None


def _current_user() -> str:
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


@dataclass
class LocalResult:
    """How a local run ended: ``exit_code`` as a shell reports it (128 + signal number)."""

    exit_code: int
    signal: str | None
    timed_out: bool
    stopped: bool
    elapsed: float


def run_locally(program, job_id: str, args: dict, *, say=print, announce=None,
                stdout=None, stderr=None) -> LocalResult:
    """Run a bound program once, here, as the server would, and wait for it.

    The program gets its own session and process group, stdin from
    /dev/null, the job's env and cwd (home without one) and the APSIS_*
    variables. Its timeout sends the timeout signal to the whole group and
    SIGKILL after the stop grace period. Ctrl-C (SIGINT) or SIGTERM sends
    the job's stop signal to the group, SIGKILL after the grace period; a
    second Ctrl-C kills at once. As on the server, a stop or a timeout is
    over only when the whole group is: what the program leaves in its group
    gets the SIGKILL too, even once the program itself has exited.
    ``say`` reports these steps to a person, starting with ``announce``
    once the program can be started.
    """
    argv = local_argv(program)
    cwd = program.cwd or os.path.expanduser("~")
    if not os.path.isdir(cwd):
        raise CannotRun(f"cannot start: no folder {cwd!r} (the program's cwd)")
    if announce:
        say(announce)
    # From here on Ctrl-C or SIGTERM must stop the program, never leave it behind:
    # one arriving while the program starts is held until the wait loop takes it.
    interrupts = _Interrupts()
    previous = {sig: signal.signal(sig, interrupts) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _start_and_wait(program, job_id, args, argv, cwd, say, stdout, stderr, interrupts)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Interrupts:
    """A SIGINT/SIGTERM handler that raises KeyboardInterrupt only while ``armed``.

    A signal that arrives while disarmed is counted in ``pending`` and taken
    by the next ``wait()``, so none is lost and none escapes the wait loop.
    """

    def __init__(self):
        self.armed = False
        self.pending = 0

    def __call__(self, signum, frame):
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        self.pending += 1

    def wait(self, fn, *args):
        """``fn(*args)``, which a signal interrupts with KeyboardInterrupt."""
        self.armed = True
        try:
            if self.pending:
                self.armed = False
                self.pending -= 1
                raise KeyboardInterrupt
            return fn(*args)
        finally:
            self.armed = False


class _Exit:
    """Waits for a child to exit without reaping it (see ``agent.exited_unreaped``):
    its group can be signalled until ``reap``."""

    def __init__(self, proc):
        self.proc = proc
        try:
            self.pidfd = os.pidfd_open(proc.pid)  # readable once the child has exited
        except (AttributeError, OSError):  # an old kernel: look every 10 ms instead
            self.pidfd = None

    def wait(self, timeout) -> bool:
        """True once the child has exited; False after ``timeout`` seconds (None: no limit)."""
        from apsis_lite.agent import exited_unreaped
        if self.pidfd is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not exited_unreaped(self.proc.pid):
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                time.sleep(0.01 if deadline is None else max(0.0, min(0.01, deadline - time.monotonic())))
            return True
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        poller.poll(None if timeout is None else math.ceil(timeout * 1000))
        return exited_unreaped(self.proc.pid)

    def reap(self) -> int:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        return self.proc.wait()


def _start_and_wait(program, job_id, args, argv, cwd, say, stdout, stderr, interrupts):
    timeout = program.timeout
    stop = dict(program.stop)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, env=run_env(program, job_id, args), cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                start_new_session=True)
    except OSError as exc:
        raise CannotRun(f"cannot run {argv[0]!r}: {exc.strerror}") from None
    exit_ = _Exit(proc)

    def signal_group(sig):
        # Only before the program is reaped: afterwards its pgid may be someone else's.
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    timeout_at = started + float(timeout["duration"]) if timeout else None
    kill_at = killed_at = None
    timed_out = stopped = False
    stops = 0
    while True:
        try:
            deadlines = [d for d in (timeout_at, kill_at) if d is not None]
            wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            if interrupts.wait(exit_.wait, wait):
                break
            now = time.monotonic()
            if timeout_at is not None and now >= timeout_at:
                timeout_at = None
                timed_out = True
                say(f"timed out after {format_duration(timeout['duration'])}: "
                    f"sending {timeout['signal']} to the process group")
                signal_group(signal.Signals[timeout["signal"]])
                kill_at = min(kill_at or float("inf"), now + stop["grace_period"])
            if kill_at is not None and now >= kill_at:
                kill_at = None
                say("still running: sending SIGKILL to the process group")
                signal_group(signal.SIGKILL)
                killed_at = now
        except KeyboardInterrupt:
            stops += 1
            stopped = True
            timeout_at = None
            if stops == 1:
                say(f"stopping: sending {stop['signal']} to the process group "
                    f"(SIGKILL in {format_duration(stop['grace_period'])}; Ctrl-C again to kill now)")
                signal_group(signal.Signals[stop["signal"]])
                kill_at = time.monotonic() + stop["grace_period"]
            else:
                say("killing: sending SIGKILL to the process group")
                signal_group(signal.SIGKILL)
                kill_at, killed_at = None, time.monotonic()
    if stopped or timed_out:
        _settle_group(proc.pid, kill_at, killed_at, signal_group, say, interrupts)
    code = exit_.reap()
    sig = None
    if code < 0:
        sig = signal.Signals(-code).name
        code = 128 - code
    return LocalResult(exit_code=code, signal=sig, timed_out=timed_out, stopped=stopped,
                       elapsed=time.monotonic() - started)


def _settle_group(pgid, kill_at, killed_at, signal_group, say, interrupts):
    """The program exited during a stop or a timeout: wait for the rest of its
    group as the server does (see ``apsis_lite.agent.program.Program.settle``), sending
    it SIGKILL when the grace period ends (or at Ctrl-C), and giving up on
    members still there KILL_WAIT after that."""
    from apsis_lite.agent import KILL_WAIT, SETTLE_POLL_MAX, SETTLE_POLL_MIN, group_members
    pause = SETTLE_POLL_MIN
    waited = False
    while members := group_members(pgid):
        now = time.monotonic()
        if killed_at is not None and now >= killed_at + KILL_WAIT:
            say(f"{_processes(len(members))} of the group still there {KILL_WAIT:.0f} s after SIGKILL; "
                "not waiting for them")
            return
        if kill_at is not None and now >= kill_at:
            say(f"sending SIGKILL to the {_processes(len(members))} the program left in its group")
            signal_group(signal.SIGKILL)
            killed_at, kill_at, pause = now, None, SETTLE_POLL_MIN
            continue
        if not waited:
            say(f"the program exited; waiting for the {_processes(len(members))} it left in its group")
            waited = True
        wait = pause
        for deadline in (kill_at, None if killed_at is None else killed_at + KILL_WAIT):
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
        try:
            interrupts.wait(time.sleep, wait)
        except KeyboardInterrupt:
            if killed_at is None:
                kill_at = time.monotonic()  # kill now
            continue
        pause = min(pause * 2, SETTLE_POLL_MAX)


def _processes(count: int) -> str:
    return f"{count} process" if count == 1 else f"{count} processes"


def no_op_result(program) -> LocalResult:
    """What a no-op program does here: waits its ``duration``, then succeeds (or fails if told to)."""
    duration = program.duration if isinstance(program.duration, (int, float)) else 0
    started = time.monotonic()
    stopped = False
    try:
        time.sleep(duration)
    except KeyboardInterrupt:
        stopped = True
    return LocalResult(exit_code=0 if program.success and not stopped else 1, signal=None,
                       timed_out=False, stopped=stopped, elapsed=time.monotonic() - started)

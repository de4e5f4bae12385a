"""One run's program and its process group: spawning it, collecting its
exit, and ending it on a stop or a timeout, group and all."""

from __future__ import annotations

import contextlib
import os
import signal
import time

from apsis_lite.agent import run_as, run_sudo
from apsis_lite.agent.log import log
from apsis_lite.agent.processes import RESETTABLE_SIGNALS, exited_unreaped, group_members

#: After a stop or a timeout, how often the program's process group is looked
#: at while members remain: first after SETTLE_POLL_MIN, doubling up to
#: SETTLE_POLL_MAX (each look reads /proc, a few ms with many processes).
SETTLE_POLL_MIN = 0.005
SETTLE_POLL_MAX = 0.25
#: How long members SIGKILLed are waited for (one in uninterruptible sleep
#: dies only when its system call ends) before the result is written anyway.
KILL_WAIT = 5.0


class ExecFailed(Exception):
    """The program could not be started; the message is the run's error."""


class Program:
    """The program of one run, from its spawn to its reaping.

    A stop or a timeout is over only when the program's whole process group
    is: if the program exits on the stop signal but others in its group do
    not, they get SIGKILL at the end of the grace period, and the run ends
    once the group is empty (see ``settle``). A program that exits by itself
    is recorded at once, and what it left in the background keeps running,
    as under cron.

    Until ``spawn``, the start times are those of the shepherd's claim: a
    run whose program never started is timed from then.
    """

    def __init__(self):
        self.spec: dict | None = None
        self.pid: int | None = None  # Also the process group's number.
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
        self.sudo_user: str | None = None  # The user sudo runs the program as (see run_sudo).

    def spawn(self, spec: dict) -> int:
        """Start the program of ``spec``; returns the read end of its output
        pipe, or raises ExecFailed.

        The program gets its own session and process group (so a stop or
        timeout reaches the whole tree, grandchildren included), stdin from
        /dev/null, stdout and stderr on one pipe, default signal dispositions
        and an empty signal mask, and the umask in the spec (the one the
        server was started with; the shepherd itself keeps 077). We use
        posix_spawn rather than fork + exec: glibc spawns with vfork
        semantics (no copy of this Python process) and reports a failed
        exec as an exception here, which is what an error pipe would do, at
        a quarter of the cost per run.
        """
        self.spec = spec
        if spec.get("umask") is None:
            return self._spawn(spec)
        # posix_spawn has no umask of its own: the child inherits ours for the moment.
        own = os.umask(spec["umask"])
        try:
            return self._spawn(spec)
        finally:
            os.umask(own)

    def _spawn(self, spec: dict) -> int:
        argv, env, cwd = spec["argv"], spec["env"], spec["cwd"]
        keep = spec.get("sudo")  # names of the run's variables, when sudo may switch users
        try:
            user = run_as.target_user(spec["user"], sudo=keep is not None) if spec.get("user") else None
            if user is not None and os.geteuid() != 0:
                run_sudo.check_sudo(user, keep, env)
                argv, cwd = run_sudo.sudo_argv(user, argv, keep, cwd), "/"
                self.sudo_user, user = user.pw_name, None  # sudo switches; the spawn below is the plain one
        except run_as.UserError as exc:
            raise ExecFailed(f"exec failed: {exc}") from None
        if user is not None:
            return self._spawn_as(user, argv, run_as.login_env(env, user), cwd)
        if cwd is not None:
            # Where the program starts; nothing else here uses relative paths.
            try:
                os.chdir(cwd)
            except OSError as exc:
                raise ExecFailed(f"exec failed: cannot chdir to {cwd!r}: {exc.strerror}") from None
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
                setsigdef=RESETTABLE_SIGNALS,
            )
        except OSError as exc:
            os.close(out_r)
            raise ExecFailed(f"exec failed: cannot run {argv[0]!r}: {exc.strerror}") from None
        except (TypeError, ValueError) as exc:  # E.g. a NUL byte in env.
            os.close(out_r)
            raise ExecFailed(f"exec failed: cannot run {argv[0]!r}: {exc}") from None
        finally:
            os.close(out_w)
        self._started(pid)
        return out_r

    def _spawn_as(self, user, argv, env, cwd) -> int:
        """``spawn`` for a program that runs as another user (see ``run_as``)."""
        out_r, out_w = os.pipe()
        try:
            pid = run_as.spawn_as(user, argv, env, cwd, out_w)
        except run_as.UserError as exc:
            os.close(out_r)
            raise ExecFailed(f"exec failed: {exc}") from None
        finally:
            os.close(out_w)
        self._started(pid)
        return out_r

    def _started(self, pid) -> None:
        self.pid = pid
        self.start_wall = time.time()
        self.start_mono = time.monotonic()
        if self.spec["timeout_duration"] is not None:
            self.timeout_deadline = self.start_mono + self.spec["timeout_duration"]

    def child_signalled(self) -> None:
        """On SIGCHLD: collect the program's exit, if that is what it was."""
        if self.exited:
            return
        if self.stopped or self.timed_out:
            # Note the exit but leave the zombie: see settle.
            if exited_unreaped(self.pid):
                self._note_exit()
        else:
            self.reap(blocking=False)

    def _note_exit(self) -> None:
        self.exited = True
        self.end_wall, self.end_mono = time.time(), time.monotonic()

    def reap(self, blocking: bool) -> None:
        """Collect the program's wait status (if it has exited, unless ``blocking``)."""
        if self.status is not None:
            return
        pid, status, rusage = os.wait4(self.pid, 0 if blocking else os.WNOHANG)
        if pid == 0:
            return
        self.status, self.rusage = status, rusage
        if not self.exited:
            self._note_exit()

    def kill(self) -> None:
        """SIGKILL the group and reap the program, when nobody would collect
        its output any more; errors are ignored."""
        if self.pid is not None and self.status is None:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                self.reap(blocking=True)

    def stop(self, sig: signal.Signals, grace: float) -> None:
        """Send the group ``sig``, and SIGKILL after ``grace`` seconds."""
        log.info("%s: stopping with %s, grace %.1fs", self.spec["run_id"], sig.name, grace)
        self.stopped = True
        self._signal_group(sig)
        self._arm_kill(grace)
        self.check_deadlines()  # A zero grace period kills right away.

    def check_deadlines(self) -> None:
        """Act on the timeout and on the end of a grace period, if due."""
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
        # (see settle). Until then the program, alive or a zombie, holds its
        # pid, so the group's number is ours.
        if self.status is None:
            # Through sudo, the group's processes but sudo itself are the
            # user's: signalled as that user, and sudo too only by SIGKILL
            # (or when that failed), which it cannot pass on.
            if self.sudo_user is not None and run_sudo.signal_group(self.sudo_user, self.pid, sig) \
                    and sig != signal.SIGKILL:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def settle(self, wait) -> None:
        """The program exited during a stop or a timeout: wait until the rest
        of its process group is gone, sending it SIGKILL when the grace period
        ends, before the result says the run is over; then reap the program.
        ``wait(timeout_ms)`` waits for the shepherd's events (output, signals)
        and handles them.

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
        """
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
            pause_for = pause
            for deadline in (self.kill_deadline,
                             None if self.killed_at is None else self.killed_at + KILL_WAIT):
                if deadline is not None:
                    pause_for = min(pause_for, max(0.0, deadline - now))
            killed_at = self.killed_at
            wait(int(pause_for * 1000) + 1)
            self.check_deadlines()
            pause = SETTLE_POLL_MIN if self.killed_at != killed_at else min(pause * 2, SETTLE_POLL_MAX)
        if waited:  # The run ends when its group does.
            self.end_wall, self.end_mono = time.time(), time.monotonic()
        self.reap(blocking=True)

    def times(self) -> tuple[float, float, float]:
        """Start and end (wall clock) and elapsed seconds, for the result;
        a run not over yet (a shepherd that failed) ends now."""
        end_wall = self.end_wall if self.end_wall is not None else time.time()
        end_mono = self.end_mono if self.end_mono is not None else time.monotonic()
        return self.start_wall, end_wall, max(0.0, end_mono - self.start_mono)

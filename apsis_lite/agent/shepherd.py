"""A shepherd: one run's supervision, from the claim of its spec to its
result, and a shepherd process's life of runs one after another."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import select
import signal
import socket
import time

from apsis_lite.agent.files import fsync_dir
from apsis_lite.agent.full_disk import Backoff, no_room
from apsis_lite.agent.log import log
from apsis_lite.agent.processes import proc_start_time
from apsis_lite.agent.program import ExecFailed, Program
from apsis_lite.agent.protocol import (
    IDLE, NOTICE_DONE, NOTICE_RUNNING, OUTPUT, PID, RESULT, SHEPHERD, SPEC, SPEC_CLAIMED, STOP, SpecError,
    atomic_write_json, notice_line, parse_spec, program_info, read_json, read_stop_request,
    result_document, shepherd_info, unix_address,
)
from apsis_lite.agent.sink import OutputSink
from apsis_lite.agent.state_files import StateFiles

#: A shepherd retires after this many runs, bounding anything it might leak.
MAX_RUNS_PER_SHEPHERD = 500
#: After the program exits, how long to keep reading output that background
#: grandchildren may still be writing before giving up on EOF.
DRAIN_TIMEOUT = 0.2
#: Largest single read from the output pipe; also the most output held in RAM.
READ_CHUNK = 65536


class Shepherd:
    """Looks after one run from claim to result.json.

    Every path out of ``run`` after a successful claim writes result.json:
    that file (or a dead shepherd without it) is how the server learns the
    outcome. The shepherd waits in ``poll`` on the output pipe and a wakeup
    pipe fed by SIGCHLD/SIGTERM, with a timeout set to the next deadline, so
    an idle shepherd costs no CPU. The program and its process group are
    ``program``'s (stops, timeouts, the group's end); the output is the
    ``sink``'s; shepherd.json and pid.json are ``files``'.
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.lock_fd: int | None = None
        self.spec: dict | None = None
        self.sink: OutputSink | None = None
        self.pending: set[int] = set()  # Signals caught, not yet handled.
        self.wake_r = self.wake_w = -1
        self.out_r: int | None = None
        self.program = Program()
        self.files = StateFiles(run_dir, self._written_late)

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
            self.program.kill()  # Nobody would collect its output any more.
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
            self.spec = parse_spec(read_json(self.run_dir, SPEC_CLAIMED), self.run_dir)
        except SpecError as exc:
            return self._finish(f"bad spec: {exc}")
        # Handlers go in before shepherd.json exists: once it does, the server
        # may send SIGTERM, which must not kill us with the default action.
        self._install_signal_handlers()
        me = os.getpid()
        self.files.write(SHEPHERD, shepherd_info(me, proc_start_time(me), time.time()))
        error = self._start_program()
        if error is not None:
            return self._finish(error)
        # Only now: the output waits in the pipe meanwhile, and the program
        # starts one file creation sooner.
        self.sink = OutputSink(self.run_dir, self.spec["output_head"], self.spec["output_tail"])
        self._notify(NOTICE_RUNNING)
        if os.path.exists(self._path(STOP)):
            # A stop requested before we had a program to signal.
            self._stop()
        self._supervise()
        if self.program.status is None:  # It exited during a stop or a timeout.
            self._settle_group()
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

    def _start_program(self) -> str | None:
        """Spawn the program and record it; returns an error message or None."""
        try:
            out_r = self.program.spawn(self.spec)
        except ExecFailed as exc:
            return str(exc)
        pid = self.program.pid
        # Record the program before anything else: if we die from here on,
        # the server must still be able to find (and kill) it.
        self.files.write(PID, program_info(pid, proc_start_time(pid), self.program.start_wall))
        os.set_blocking(out_r, False)
        self.out_r = out_r
        log.debug("%s: started pid %d: %s", self.spec["run_id"], pid, self.spec["argv"])
        return None

    def _written_late(self, name: str) -> None:
        program = self.program
        if (name == SHEPHERD and program.pid is not None and program.status is None
                and not program.stopped and os.path.exists(self._path(STOP))):
            # A stop asked for while shepherd.json was missing did not
            # signal us: it counts on this look.
            self._stop()

    def _supervise(self) -> None:
        """Copy output and enforce stop/timeout until the program exits."""
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        poller.register(self.out_r, select.POLLIN)
        while not self.program.exited:
            self._poll_once(poller, self._poll_timeout_ms())
            self._handle_signals()
            self.program.check_deadlines()
            self.files.retry_due()

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
        deadlines = [d for d in (self.program.timeout_deadline, self.program.kill_deadline,
                                 self.files.retry_at()) if d is not None]
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
        if (signal.SIGTERM in pending and self.program.status is None
                and os.path.exists(self._path(STOP))):
            self._stop()
        if signal.SIGCHLD in pending:
            self.program.child_signalled()

    def _stop(self) -> None:
        """Carry out stop.json (or the spec's stop) on the process group."""
        self.program.stop(*read_stop_request(self.run_dir, self.spec["stop_signal"], self.spec["stop_grace"]))

    def _settle_group(self) -> None:
        """Wait for the program's group to end (see ``Program.settle``),
        reading the output meanwhile: a member may still write to it."""
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        if self.out_r is not None:
            poller.register(self.out_r, select.POLLIN)

        def wait(timeout_ms):
            self._poll_once(poller, timeout_ms)
            self._handle_signals()

        self.program.settle(wait)

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
        """
        program = self.program
        start, end, elapsed = program.times()
        result = result_document(
            error=error, status=program.status, rusage=program.rusage,
            start=start, end=end, elapsed=elapsed,
            timed_out=program.timed_out, stopped=program.stopped,
            group_killed=program.group_killed, group_left=program.group_left,
            shepherd_maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        )
        run_id = self.spec["run_id"] if self.spec else os.path.basename(self.run_dir)
        self._write_result(result, run_id)
        self.sink = None
        log.debug(
            "%s: finished: exit %s signal %s error %s in %.3fs",
            run_id, result["exit_code"], result["signal"], error, result["elapsed"],
        )
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # The run is over for anyone probing the lock.
            self.lock_fd = None
        if not self._notify(NOTICE_DONE):
            self._flush_outcome()
        return 0

    def _write_result(self, result: dict, run_id: str) -> None:
        """End the output, then write what is still unwritten and result.json.

        With no room on the disk, the result waits in memory and is tried
        again (RETRY_MIN to RETRY_MAX apart) for as long as it takes, the
        run's lock held meanwhile: to the server the run is still running,
        and it records the outcome once there is room. This shepherd is not
        idle meanwhile, so the agent hands it no other run.
        """
        retry = Backoff()
        while True:
            try:
                result["output"] = (self.sink.finish() if self.sink is not None
                                    else {"bytes_total": 0, "bytes_kept": 0, "bytes_dropped": 0})
                self.files.write_unwritten()
                atomic_write_json(self._path(RESULT), result, durable=False)
                break
            except OSError as exc:
                if not no_room(exc):
                    raise
                if not retry.delay:
                    log.warning("%s: no room for the result (%s); holding it, trying again until there is",
                                run_id, exc)
                retry.failed()
                time.sleep(retry.delay)
        if retry.delay:
            log.info("%s: result written", run_id)

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
            fsync_dir(self.run_dir)
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
                with unix_address(path) as address:
                    sock.connect(address)
                sock.sendall(notice_line(word, self.spec["run_id"]))
        except OSError as exc:
            log.debug("%s: notify %s failed: %s", self.spec["run_id"], word, exc)
            return False
        return True


def shepherd_loop(ctl: socket.socket, run_dir: str | None) -> int:
    """A shepherd's life: supervise ``run_dir`` (none, for a shepherd forked
    ahead of its runs), then tell the agent it is idle and wait on ``ctl`` for
    the next run folder, until the agent closes ``ctl`` (it has enough idle
    shepherds, or it is gone) or the shepherd has done MAX_RUNS_PER_SHEPHERD runs."""
    buf = b""
    for _ in range(MAX_RUNS_PER_SHEPHERD):
        if run_dir is not None:
            shepherd = Shepherd(run_dir)
            try:
                shepherd.run()
            finally:
                shepherd.close()
        try:
            ctl.sendall(IDLE)
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

"""Runs on a remote host: requests to the agent installed there, over ssh.

Requests go, a line each, to ``python3 agent-HASH.pyz remote STATE_DIR
--serve`` running on the host through the multiplexed connection (see
``apsis_lite.agent.remote`` for the requests), so a request costs a round
trip, not a Python start there; when that session cannot be had or breaks,
a request is one ssh call of its own. The agent is installed first at the
host's first use. A call that
fails says whether the request can have reached the host: a refused
connection, a refused key or an unknown host key mean it never ran, which is
what lets a start that failed be called "not started" rather than "may have
started".
"""

import hashlib
import json
import os
import posixpath
import select
import shlex
import socket
import subprocess
import tempfile
import threading
import time

from apsis_lite.hosts.install import AgentInstaller
from apsis_lite.hosts.ssh import CONNECT_TIMEOUT, HostError, Result, Target, failure, run, ssh_argv

#: The remote user's folder for this server's runs, under the agent's folder.
STATE_FOLDER = "state"
CALL_TIMEOUT = 60.0
#: How long a new session may take to say it is ready (ssh may have to connect first).
SESSION_START_TIMEOUT = CONNECT_TIMEOUT + 10.0

# What ssh says when it gave up before the remote command could start.
_BEFORE_LOGIN = ("connection refused", "could not resolve hostname", "no route to host",
                 "network is unreachable", "permission denied", "host key verification failed",
                 "remote host identification has changed", "too many authentication failures",
                 "connection timed out", "operation timed out", "kex_exchange_identification")


class CallFailed(HostError):
    """A request to a host's agent failed; ``never_ran`` when it provably never reached the host."""

    def __init__(self, message, never_ran=False):
        super().__init__(message)
        self.never_ran = never_ran


def instance_name(data_dir: str) -> str:
    """This server's folder name on hosts: two servers with one login user never share run folders."""
    key = f"{socket.gethostname()}:{os.path.abspath(data_dir)}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class _Session:
    """``remote STATE_DIR --serve`` on the host, over one ssh channel: a request and its
    reply a line each, with no Python start per request. Broken is final: make another."""

    def __init__(self, argv: list[str]):
        # ssh's complaints go to a file, read only if the session does not start: a pipe
        # nobody reads could fill and stall the session.
        self._errors = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._errors, close_fds=True)
        self._out = self._proc.stdout.fileno()
        os.set_blocking(self._out, False)
        self._buffer = b""
        self.broken = False

    def ready(self, timeout: float):
        """None once the session said it is ready; otherwise what ssh did (a ``Result``)."""
        try:
            if json.loads(self._line(timeout)).get("ready"):
                return None
        except (OSError, ValueError, AttributeError):
            pass
        self._end()
        self._errors.seek(0)
        said = self._errors.read()
        self.close()
        return Result(self._proc.returncode, b"", said)

    def request(self, payload: bytes, timeout: float) -> dict:
        """The reply to ``payload``; OSError if the session broke or took longer than ``timeout``."""
        try:
            self._proc.stdin.write(payload + b"\n")
            self._proc.stdin.flush()
            return json.loads(self._line(timeout))
        except (OSError, ValueError):
            self.close()
            raise OSError("the session broke") from None

    def _line(self, timeout: float) -> bytes:
        # A reply with output in it is megabytes, read in pipe-sized pieces: the pieces are
        # kept apart and only each new one is searched for the end of the line, since
        # growing and searching one buffer would cost the square of the reply's size.
        deadline = time.monotonic() + timeout
        pieces = [self._buffer]
        while b"\n" not in pieces[-1]:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                self._buffer = b"".join(pieces)
                raise OSError("no reply in time")
            try:
                data = os.read(self._out, 1 << 20)
            except BlockingIOError:
                continue
            if not data:
                self._buffer = b"".join(pieces)
                raise OSError("the session ended")
            pieces.append(data)
        line, _, self._buffer = b"".join(pieces).partition(b"\n")
        return line

    def _end(self):
        self.broken = True
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()

    def close(self):
        self._end()
        for pipe in (self._proc.stdin, self._proc.stdout, self._errors):
            try:
                pipe.close()
            except OSError:
                pass


class RemoteAgent:
    """The agent on one host, for this server's runs there.

    Requests go through a session (``remote --serve``) kept open while it
    works; when none can be had, or it breaks, the request is sent as a call
    of its own, which is also what says why ssh failed (see ``call``).
    """

    def __init__(self, target: Target, installer: AgentInstaller, instance: str):
        self.target = target
        self._installer = installer
        self._instance = instance
        self._session: _Session | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.target.name

    def state_dir(self, agent_path: str) -> str:
        return posixpath.join(posixpath.dirname(agent_path), STATE_FOLDER, self._instance)

    def call(self, op: str, timeout: float = CALL_TIMEOUT, **request) -> dict:
        """Send one request; its reply. Raises CallFailed naming the host and why.

        A request whose session broke is sent again on its own: every request
        may be done twice (a start sent again finds its run claimed)."""
        payload = json.dumps({"op": op, **request}, separators=(",", ":")).encode()
        with self._lock:
            session = self._open_session()
            if session is not None:
                try:
                    reply = session.request(payload, timeout)
                except OSError:
                    self._session = None
                else:
                    if "error" in reply:
                        raise CallFailed(f"host {self.name}: the agent refused the {op} request: {reply['error']}")
                    return reply
        return self._call_once(op, payload, timeout)

    def _open_session(self):
        """The session, opened if need be; None to send the request on its own instead.
        Raises CallFailed when ssh said why it cannot reach the host (so a host that does
        not answer costs one ConnectTimeout, not two)."""
        if self._session is not None and not self._session.broken:
            return self._session
        self._session = None
        try:
            installed = self._installer.ensure(self.target)
        except HostError as exc:
            raise CallFailed(str(exc), never_ran=True) from None
        command = " ".join(shlex.quote(word) for word in
                           ["python3", installed.path, "remote", self.state_dir(installed.path), "--serve"])
        try:
            session = _Session(ssh_argv(self.target, command))
        except OSError:
            return None
        failed = session.ready(SESSION_START_TIMEOUT)
        if failed is None:
            self._session = session
        elif (problem := self._problem(failed)) is not None:
            raise problem
        return self._session

    def _problem(self, result: Result) -> CallFailed | None:
        """CallFailed for what ssh said when it failed (or found no python3), else None."""
        message = failure(self.target, result)
        if not message:
            return None
        said = result.stderr.decode(errors="replace").lower()
        never = result.status == 127 or any(marker in said for marker in _BEFORE_LOGIN)
        return CallFailed(message, never_ran=never)

    def close(self):
        """End the session, if any (the runs go on)."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def _call_once(self, op: str, payload: bytes, timeout: float) -> dict:
        reinstalled = False
        while True:
            try:
                installed = self._installer.ensure(self.target)
            except HostError as exc:
                raise CallFailed(str(exc), never_ran=True) from None
            try:
                result = run(self.target, ["python3", installed.path, "remote", self.state_dir(installed.path)],
                             stdin=payload, timeout=timeout)
            except HostError as exc:
                raise CallFailed(str(exc)) from None
            said = result.stderr.decode(errors="replace")
            if result.status == 2 and "can't open file" in said and not reinstalled:
                self._installer.forget(self.target)  # its agent file was removed: install it again
                reinstalled = True
                continue
            problem = self._problem(result)
            if problem is not None:
                raise problem
            if result.status != 0:
                lines = [line for line in said.splitlines() if line.strip()]
                raise CallFailed(f"host {self.name}: the agent refused the {op} request: "
                                 f"{lines[-1] if lines else f'exit status {result.status}'}")
            try:
                reply = json.loads(result.stdout)
            except ValueError:
                raise CallFailed(f"host {self.name}: the agent's reply to {op} is not JSON: "
                                 f"{result.stdout[:80]!r}") from None
            return reply

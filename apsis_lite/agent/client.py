"""What the server side uses to reach runs: ``AgentClient`` talks to the
agent (starting it when absent); ``request_stop`` and ``send_signal`` act on
a running run through its folder and its shepherd."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import time
from collections import deque

from apsis_lite.agent.log import log
from apsis_lite.agent.processes import same_process
from apsis_lite.agent.protocol import (
    AGENT_LOCK, AGENT_LOG, AGENT_SOCK, PID, PING, SHEPHERD, decode_reply, encode_message, is_alive,
    read_json, signal_from_name, start_request, unix_address, warm_request, write_stop_request,
)


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
    write_stop_request(run_dir, sig, grace_period)
    if not is_alive(run_dir):
        return False
    info = read_json(run_dir, SHEPHERD)
    if info is None:
        # Alive but not yet past its claim: it checks stop.json after spawning.
        return True
    pid = same_process(info)
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
    if same_process(info) is None:
        return False
    try:
        os.killpg(int(info["pgid"]), sig)
    except (ProcessLookupError, KeyError, TypeError, ValueError):
        return False
    return True


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
        # Starts sent by ``send_starts``: run dirs whose reply is still to be read
        # (in the order sent), replies read and not yet collected, and run dirs
        # whose request went with a broken connection (sent again when collected).
        self._unanswered: deque[str] = deque()
        self._answers: dict[str, object] = {}
        self._resend: list[str] = []
        import threading  # Here, not at the top: the agent process must not import it.
        self._lock = threading.Lock()

    @property
    def socket_path(self) -> str:
        return os.path.join(self.state_dir, AGENT_SOCK)

    def ping(self) -> int:
        """The agent's pid (starting an agent if there is none)."""
        return int(self._request(PING)["pid"])

    def warm(self, count: int) -> None:
        """Runs are due soon: have the agent fork up to ``count`` shepherds ahead of them."""
        self._request(warm_request(count))

    def start(self, run_dir: str) -> int:
        """Have the agent fork a shepherd for ``run_dir`` (spec.json must be
        written already); returns the shepherd pid without waiting for the
        program. The authoritative pid is shepherd.json's."""
        reply = self._request(start_request(os.path.abspath(run_dir)))
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
            self._read_unanswered()
            attempt = 0
            while pending:
                attempt += 1
                lines = b"".join(encode_message(start_request(os.path.abspath(run_dirs[i])))
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

    def send_starts(self, run_dirs) -> None:
        """``start`` for many runs, without waiting for the answers: the agent
        starts them while the caller goes on (committing the next runs, say),
        and ``collect_starts`` reads what it said. Never raises: a request
        whose connection broke is sent again when collected.
        """
        dirs = [os.path.abspath(d) for d in run_dirs]
        if not dirs:
            return
        with self._lock:
            if self._resend:  # The connection broke in this batch already: keep the order.
                self._resend += dirs
                return
            try:
                sock = self._connection()
                sock.sendall(b"".join(encode_message(start_request(d)) for d in dirs))
            except (OSError, ValueError, AgentError):
                self._disconnect()
                self._resend += dirs
                return
            self._unanswered.extend(dirs)

    def collect_starts(self) -> dict:
        """The agent's answers to the starts sent by ``send_starts`` since the
        last call: {run_dir: shepherd pid or AgentError}. Those whose
        connection broke are sent again first (see ``start_many``)."""
        with self._lock:
            self._read_unanswered()
            answers, self._answers = self._answers, {}
            resend, self._resend = self._resend, []
        if resend:
            answers.update(zip(resend, self.start_many(resend)))
        return answers

    def _read_unanswered(self) -> None:
        """Read the replies still owed to ``send_starts`` (lock held): before
        any other request, whose reply comes after them."""
        try:
            while self._unanswered:
                reply = self._read_reply(self._sock)
                run_dir = self._unanswered.popleft()
                if isinstance(reply, dict) and reply.get("ok"):
                    self._answers[run_dir] = int(reply["pid"])
                else:
                    error = reply.get("error") if isinstance(reply, dict) else reply
                    self._answers[run_dir] = AgentError(str(error))
        except (OSError, ValueError):
            self._disconnect()

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
        line = encode_message(message)
        deadline = time.monotonic() + self.spawn_timeout
        with self._lock:
            self._read_unanswered()
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
        return decode_reply(line)

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""
        # Their replies are lost with the connection: asked again when collected.
        self._resend += self._unanswered
        self._unanswered.clear()

    def _try_connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.reply_timeout)
        try:
            with unix_address(self.socket_path) as address:
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

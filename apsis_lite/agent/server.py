"""The agent process: serves the requests on ``agent.sock`` and hands each
run to its shepherd pool; ``main`` is its command line."""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import socket
import struct
import time

from apsis_lite.agent.files import atomic_write_bytes, go_private
from apsis_lite.agent.log import log
from apsis_lite.agent.processes import reset_signals
from apsis_lite.agent.protocol import (
    AGENT_LOCK, AGENT_PID, AGENT_SOCK, OP_PING, OP_START, OP_WARM, SPEC, decode_request, encode_message,
    error_reply, ok_reply, unix_address,
)
from apsis_lite.agent.pool import IDLE_SHEPHERD_TTL, ShepherdPool

DEFAULT_IDLE_TIMEOUT = 300.0


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
        self.pool: ShepherdPool | None = None
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
        with unix_address(sock_path) as address:
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
        self.pool = ShepherdPool(self.selector, self.shepherd_ttl, self._become_shepherd)

    def _on_signal(self, signum, frame) -> None:
        self.pending.add(signum)

    def _loop(self) -> None:
        idle_since: float | None = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            timeout = None  # Busy: wait for events only.
            if self.conns or self.pool.busy():
                idle_since = None
            else:
                if idle_since is None:
                    idle_since = now
                timeout = idle_since + self.idle_timeout - now
                if timeout <= 0:
                    log.info("idle for %gs; exiting", self.idle_timeout)
                    break
            expiry = self.pool.next_expiry()
            if expiry is not None:
                expires = expiry - now
                timeout = expires if timeout is None else min(timeout, expires)
            backlog = [conn for conn in self.conns.values() if conn.backlog]
            if backlog or self.pool.to_warm:
                timeout = 0.0
            for key, mask in self.selector.select(max(0.0, timeout) if timeout is not None else None):
                key.data(key, mask)
            for conn in backlog:
                if conn.backlog and self.conns.get(conn.sock.fileno()) is conn:
                    self._serve(conn)
            self._handle_signals()
            self.pool.retire_expired()
            self.pool.warm_some()

    def _handle_signals(self) -> None:
        pending, self.pending = self.pending, set()
        if signal.SIGCHLD in pending:
            self.pool.reap()
        if pending & {signal.SIGTERM, signal.SIGINT}:
            log.info("signalled; exiting (shepherds keep running)")
            self.stopping = self.pool.closing = True

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
                conn.outbuf += encode_message(reply)
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
            request = decode_request(line)
        except ValueError as exc:
            return error_reply(f"bad request: {exc}")
        op = request.get("op")
        try:
            if op == OP_PING:
                return ok_reply(os.getpid())
            if op == OP_START:
                return ok_reply(self._start(request.get("run_dir")))
            if op == OP_WARM:
                count = request.get("count")
                if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                    raise ValueError(f"count must be a whole number of shepherds: {count!r}")
                self.pool.warm(count)
                return ok_reply(os.getpid())
            return error_reply(f"unknown op: {op!r}")
        except (OSError, ValueError) as exc:
            return error_reply(str(exc))

    def _start(self, run_dir) -> int:
        if not isinstance(run_dir, str) or not os.path.isabs(run_dir):
            raise ValueError(f"run_dir must be an absolute path: {run_dir!r}")
        if not os.path.isdir(run_dir):
            raise ValueError(f"no such run dir: {run_dir}")
        if not os.path.exists(os.path.join(run_dir, SPEC)):
            raise ValueError(f"no {SPEC} in {run_dir} (already claimed or revoked)")
        return self.pool.start(run_dir)

    def _become_shepherd(self) -> None:
        """In the forked child: shed everything that belongs to the agent.

        A new session makes the shepherd immune to whatever ends the agent or
        the server. Closing the agent's descriptors matters: a shepherd still
        holding agent.lock would stop a new agent from ever serving. (Close,
        never unregister or shutdown: those would act on the agent's shared
        epoll set and connections.)
        """
        os.setsid()
        reset_signals()
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # A dead notify socket must not kill us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        self.selector.close()
        self.listener.close()
        for conn in self.conns.values():
            conn.sock.close()
        # Or a sibling would never see EOF on its control socket when the
        # agent goes away.
        for _, ctl in self.pool.shepherds.values():
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
    SIGTERM/SIGINT. Exits at once with 0 if another agent serves it.

    Everything the agent and its shepherds create is owner-only (umask 077);
    programs get the umask their run's spec names.
    """
    go_private()
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

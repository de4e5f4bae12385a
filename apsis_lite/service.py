"""``apsis-lite serve``: wire the store, engine, notify socket and web server together.

Runs in one process under gevent (monkey-patched by ``__main__`` before
anything else is imported): the engine is a greenlet, the web server
another, and each shepherd's "running"/"done" notice arrives on a Unix
socket in the data folder.
"""

import fcntl
import logging
import os
import signal
import socket
import sys

import gevent
import gevent.event
from gevent.server import StreamServer

from .actions import ActionRunner
from .auth import Auth, ensure_local_token, is_loopback, one_time_link_for, users_path
from .engine import Engine
from .httpserver import gevent_server, waitress_server
from .config import default_data_dir
from .errors import ConfigError
from .reload import JobsWatcher
from .launcher import LocalLauncher
from .registry import load_extensions
from .runs import parse_run_id
from .store import Store
from .web import create_app

log = logging.getLogger("apsis_lite")

MAX_UNIX_PATH = 107


def _unix_listener(path):
    if len(path.encode()) > MAX_UNIX_PATH:
        raise ConfigError(f"data folder path too long for a Unix socket ({path}); choose a shorter --data")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(1024)
    return sock


def _notice_handler(engine):
    def handle(sock, _addr):
        with sock:
            data = b""
            while len(data) < 4096:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                data += chunk
        for line in data.decode("utf-8", "replace").splitlines():
            kind, _, run_id = line.strip().partition(" ")
            try:
                engine.notice(kind, parse_run_id(run_id))
            except Exception:
                log.warning("ignored a malformed notice: %r", line)
    return handle


def lock_data_dir(config):
    """Hold an exclusive lock on the data folder: one scheduler per database."""
    os.makedirs(config.data_dir, exist_ok=True)
    path = os.path.join(config.data_dir, "apsis-lite.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = ""
        try:
            with open(os.path.join(config.data_dir, "server.pid")) as f:
                pid = f" (pid {f.read().strip()})"
        except OSError:
            pass
        raise ConfigError(f"another apsis-lite server{pid} is already using {config.data_dir}; "
                          "two schedulers must never share one database") from None
    with open(os.path.join(config.data_dir, "server.pid"), "w") as f:
        f.write(str(os.getpid()))
    return fd


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(config):
    """Log to stderr, or to ``log_file`` rotated at ``log_file_max_size`` with ``log_file_backups`` kept."""
    if config.log_file:
        from logging.handlers import RotatingFileHandler
        os.makedirs(os.path.dirname(config.log_file) or ".", exist_ok=True)
        handler = RotatingFileHandler(config.log_file, maxBytes=config.log_file_max_size,
                                      backupCount=config.log_file_backups, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO),
                        handlers=[handler])


# -- authentication (see auth.py and webauth.py) --------------------------------


def start_auth(config):
    """The server's ``Auth``: the local token written (0600, folder 0700), the users file read.

    Refuses to listen beyond loopback without a user: other machines could
    reach the server, and nobody there could log in but by sharing the token.
    """
    auth = Auth(ensure_local_token(config.data_dir), users_path(config))
    if not is_loopback(config.host) and not auth.has_users():
        raise ConfigError(
            f"refusing to listen on {config.host}: other machines can reach it, so it needs users, "
            f"and {users_path(config)} has none; add one with "
            f"'apsis-lite user add NAME --role operator --data {config.data_dir}', or listen on 127.0.0.1")
    return auth


def browser_url(config, url):
    """The address a desktop start opens in the browser, given the server's ``url``.

    A one-time login link (see ``auth.one_time_link``): the browser gets a
    session as the local operator without typing anything.
    """
    return one_time_link_for(config.data_dir, url) or url + "/"


def bind_listener(host, port, tries=1):
    """A listening TCP socket on ``port``, else on the next free one (``tries`` ports in all)."""
    last = None
    for candidate in range(port, min(port + max(tries, 1), 65536)):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
            sock.listen(1024)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
            if port == 0:
                break
    raise ConfigError(f"cannot listen on {host} port {port}"
                      + (f" nor the {tries - 1} after it" if tries > 1 else "")
                      + f": {last.strerror if last else 'no port to try'}")


def serve(config, since_now=False, lock_fd=None, port_tries=1, on_ready=None):
    """Run the scheduler and the web server until SIGTERM or SIGINT.

    ``lock_fd``: the data folder's lock, when the caller took it already.
    ``port_tries`` > 1 moves to the next free port when ``config.port`` is
    taken. ``on_ready(url)`` is called once the server answers on ``url``.
    """
    setup_logging(config)
    try:
        load_extensions(config.extensions)
    except ImportError as exc:
        raise ConfigError(f"config: extensions: cannot import {exc.name or exc}: {exc}") from None
    if lock_fd is None:
        lock_fd = lock_data_dir(config)
    auth = start_auth(config)
    listener = bind_listener(config.host, config.port, port_tries)
    store = Store(config.db_path)
    reader = Store(config.db_path, readonly=True)
    launcher = LocalLauncher(config)
    engine = Engine(config, store, launcher, since_now=since_now)
    engine.yield_busy = gevent.idle
    actions = ActionRunner(config, store, engine)
    actions.start()
    watcher = JobsWatcher(config, engine)
    loaded = watcher.reload()
    log.info("loaded %d jobs from %s (%d problems)", loaded["jobs"], config.jobs_dir, len(loaded["errors"]))

    notify = StreamServer(_unix_listener(config.notify_path), _notice_handler(engine))
    notify.start()

    watcher.start()
    app = create_app(config, reader, engine, launcher, reload_jobs=watcher.reload, auth=auth)
    stop_event = gevent.event.Event()
    if config.server == "waitress":
        web = waitress_server(listener, app, config)
        web_greenlet = gevent.spawn(web.run)
        stop_web = web.close
        bound = web.effective_port
    else:
        tls = {"certfile": config.tls_cert, "keyfile": config.tls_key} if config.tls_cert else {}
        web = gevent_server(listener, app, config, log=None, error_log=log, **tls)
        web.start()
        web_greenlet = None
        stop_web = web.stop
        bound = web.server_port
    url = f"{'https' if config.tls_cert else 'http'}://{config.host}:{bound}"
    with open(os.path.join(config.data_dir, "server.url"), "w") as f:
        f.write(url)
    log.info("serving on %s (data %s)", url, config.data_dir)
    print(f"apsis-lite serving on {url}", flush=True)
    if is_loopback(config.host):
        link = one_time_link_for(config.data_dir, url)
        if link:
            print(f"log in from a browser on this machine: {link}\n"
                  "(good once, for two minutes; 'apsis-lite login-link"
                  f"{'' if config.data_dir == default_data_dir() else ' --data ' + config.data_dir}'"
                  " prints another)", flush=True)
    if on_ready is not None:
        gevent.spawn(on_ready, url)

    def shutdown(signum):
        log.info("received %s; stopping (runs in flight keep running)", signal.Signals(signum).name)
        stop_event.set()
        engine.wake()

    gevent.signal_handler(signal.SIGTERM, shutdown, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, shutdown, signal.SIGINT)

    engine_greenlet = gevent.spawn(engine.serve_forever, stop_event)
    stop_event.wait()
    stop_web()
    notify.stop()
    actions.stop()
    watcher.stop()
    engine_greenlet.join(timeout=5)
    if web_greenlet is not None:
        web_greenlet.kill(block=False)
    launcher.close()
    store.checkpoint()
    reader.close()
    store.close()
    for name in ("notify.sock", "server.url", "server.pid"):
        try:
            os.unlink(os.path.join(config.data_dir, name))
        except OSError:
            pass
    os.close(lock_fd)
    log.info("stopped")

"""``apsis-lite serve``: wire the store, engine, notify socket and web server together.

Runs in one process under gevent (monkey-patched by ``__main__`` before
anything else is imported): the engine is a greenlet, the web server
another, and each shepherd's "running"/"done" notice arrives on a Unix
socket in the data folder.
"""

import errno
import fcntl
import html
import json
import logging
import os
import signal
import socket
import stat
import sys

import gevent
import gevent.event
from gevent.server import StreamServer

from apsis_lite.agent.files import go_private
from apsis_lite.agent.protocol import parse_notices
from apsis_lite.config import default_data_dir
from apsis_lite.engine.action_runner import ActionRunner
from apsis_lite.engine.core import Engine
from apsis_lite.engine.health import Backoff
from apsis_lite.engine.housekeeping import InThread, Policy, RetentionTask
from apsis_lite.engine.remote_launcher import HostLauncher
from apsis_lite.engine.reload import JobsWatcher
from apsis_lite.engine.sanity import SanityChecker, parse_sanity_actions
from apsis_lite.errors import ConfigError, StoreUnavailable
from apsis_lite.model.registry import add_type_aliases, load_extensions
from apsis_lite.model.runs import parse_run_id
from apsis_lite.store.database import Store
from apsis_lite.web.app import create_app
from apsis_lite.web.auth import (
    Auth,
    ensure_local_token,
    is_loopback,
    one_time_link_for,
    read_metrics_token,
    used_links_path,
    users_path,
)
from apsis_lite.web.httpserver import gevent_server, waitress_server
from apsis_lite.web.metrics import Metrics

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
        for kind, run_id in parse_notices(data):
            try:
                engine.notice(kind, parse_run_id(run_id))
            except Exception:
                log.warning("ignored a malformed notice: %r", f"{kind} {run_id}".strip())
    return handle


def lock_data_dir(config):
    """Hold an exclusive lock on the data folder: one scheduler per database."""
    os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
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
    _write_small_file(os.path.join(config.data_dir, "server.pid"), str(os.getpid()))
    return fd


#: In the data folder once ``tighten_data_dir`` has been through it.
TIGHTENED_MARKER = ".owner-only"


def tighten_data_dir(data_dir):
    """Take group and other permissions off whatever is ours under ``data_dir`` (an
    older version made the database and run files 0644): owner-only, as new files are.

    Once: a full pool of spare run folders is some 20,000 files, half a
    second to go through, and everything made since is owner-only anyway.
    """
    marker = os.path.join(data_dir, TIGHTENED_MARKER)
    if os.path.exists(marker):
        return
    uid = os.geteuid()
    for folder, _dirs, files in os.walk(data_dir):
        for path in [folder, *(os.path.join(folder, name) for name in files)]:
            try:
                st = os.lstat(path)
                if st.st_mode & 0o077 and st.st_uid == uid and not stat.S_ISLNK(st.st_mode):
                    os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
            except OSError as exc:  # gone meanwhile, or not ours to change: say so and go on
                log.warning("cannot make %s owner-only: %s", path, exc.strerror or exc)
    _write_small_file(marker, "group and other permissions taken off everything here once\n")


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
    # A log line that cannot be written (a full disk) is dropped, not printed
    # to stderr with a traceback.
    logging.raiseExceptions = False
    logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO),
                        handlers=[handler])


# -- authentication (see auth.py and webauth.py) --------------------------------


def start_auth(config):
    """The server's ``Auth``: the local token written (0600, folder 0700), the users file read.

    Refuses to listen beyond loopback without a user: other machines could
    reach the server, and nobody there could log in but by sharing the token.
    """
    auth = Auth(ensure_local_token(config.data_dir), users_path(config),
                used_links=used_links_path(config.data_dir), metrics_token=read_metrics_token(config))
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


class PortTaken(ConfigError):
    """The port to listen on is in use (by another server, or another program)."""


def bind_listener(host, port, tries=1):
    """A listening TCP socket on ``port``, else on the next free one (``tries`` ports in all).

    Raises PortTaken when every port tried is in use, ConfigError for other failures.
    """
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
    error = PortTaken if last is not None and last.errno == errno.EADDRINUSE else ConfigError
    raise error(f"cannot listen on {host} port {port}"
                + (f" nor the {tries - 1} after it" if tries > 1 else "")
                + f": {last.strerror if last else 'no port to try'}")


class _Switchboard:
    """The WSGI app the web server runs: a placeholder until the real app is ready.

    The web server starts before the database is opened, so that a server
    whose disk is full answers, saying so, while it waits for space.
    """

    def __init__(self):
        self.app = None
        self.reason = "starting"

    def __call__(self, environ, start_response):
        if self.app is not None:
            return self.app(environ, start_response)
        return _unavailable(environ, start_response, self.reason)


def _unavailable(environ, start_response, reason):
    """503 while the database cannot be opened: JSON under /api/, else a page that reloads itself."""
    message = f"apsis-lite is starting: {reason}"
    headers = [("Retry-After", "5"), ("Cache-Control", "no-store")]
    if environ.get("PATH_INFO", "").startswith("/api/"):
        body = json.dumps({"ok": False, "error": message}).encode()
        headers.append(("Content-Type", "application/json"))
    else:
        body = ("<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5>"
                f"<title>apsis-lite is starting</title><p>{html.escape(message)}</p>").encode()
        headers.append(("Content-Type", "text/html; charset=utf-8"))
    headers.append(("Content-Length", str(len(body))))
    start_response("503 Service Unavailable", headers)
    return [body]


def open_stores(config, stop_event, on_wait):
    """The writer and reader stores, once the database can be opened.

    On a full disk (or another storage failure) it waits, retrying with a
    growing delay, and tells ``on_wait(reason)``; None if stopped meanwhile.
    """
    backoff = Backoff(first=1.0, cap=10.0)
    logged = None
    while not stop_event.is_set():
        store = None
        try:
            store = Store(config.db_path)
            reader = Store(config.db_path, readonly=True)
            if logged is not None:
                log.warning("the database could be opened after all; starting")
            return store, reader
        except StoreUnavailable as exc:
            if store is not None:
                store.close()
            if logged is None:
                log.error("%s (%s); waiting for it, trying again every few seconds", exc, config.db_path)
            logged = str(exc)
            on_wait(f"{exc}; trying again every few seconds")
        stop_event.wait(backoff.next())
    return None


def _write_small_file(path, text):
    """Write a small file the CLI reads (server.url, server.pid); on a full disk, say so and go on."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "w") as f:
            f.write(text)
        return True
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc.strerror or exc)
        return False


def serve(config, since_now=False, lock_fd=None, port_tries=1, on_ready=None):
    """Run the scheduler and the web server until SIGTERM or SIGINT.

    ``lock_fd``: the data folder's lock, when the caller took it already.
    ``port_tries`` > 1 moves to the next free port when ``config.port`` is
    taken. ``on_ready(url)`` is called once the server answers on ``url``.
    """
    go_private()  # every file and folder it (and its agent) creates is owner-only
    setup_logging(config)
    try:
        load_extensions(config.extensions)
    except ImportError as exc:
        raise ConfigError(f"config: extensions: cannot import {exc.name or exc}: {exc}") from None
    for line in (*config.notes, *add_type_aliases(config)):
        log.warning("%s", line)
    parse_sanity_actions(config.sanity_actions)  # a bad setting stops the start, before anything runs
    if lock_fd is None:
        lock_fd = lock_data_dir(config)
    tighten_data_dir(config.data_dir)
    auth = start_auth(config)
    listener = bind_listener(config.host, config.port, port_tries)
    switchboard = _Switchboard()
    stop_event = gevent.event.Event()
    engine = None

    def shutdown(signum):
        log.info("received %s; stopping (runs in flight keep running)", signal.Signals(signum).name)
        stop_event.set()
        if engine is not None:
            engine.wake()

    gevent.signal_handler(signal.SIGTERM, shutdown, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, shutdown, signal.SIGINT)

    web_greenlet, stop_web, bound = _start_web(config, listener, switchboard)
    url = f"{'https' if config.tls_cert else 'http'}://{config.host}:{bound}"
    url_path = os.path.join(config.data_dir, "server.url")
    url_written = False

    def set_reason(reason):
        # Waiting for the database: the CLI may already find the server, to hear why.
        nonlocal url_written
        switchboard.reason = reason
        if not url_written:
            url_written = _write_small_file(url_path, url)
            print(f"apsis-lite listening on {url}, waiting for its database: {reason}", flush=True)

    stores = open_stores(config, stop_event, set_reason)
    if stores is None:  # stopped while waiting for the database
        _stop_all(config, lock_fd, stop_web, web_greenlet)
        return
    store, reader = stores
    launcher = HostLauncher(config)
    engine = Engine(config, store, launcher, since_now=since_now)
    launcher.on_notice = engine.notice  # remote runs' notices come from polling their hosts
    engine.yield_busy = gevent.idle
    actions, watcher, notify = _start_engine_helpers(config, store, engine)
    sanity = SanityChecker(config, reader, engine, launcher, clock=engine.clock, pause=gevent.idle)
    metrics = Metrics(config, reader, engine, sanity)
    metrics.watch(store, engine=engine, actions=actions, sanity=sanity)
    switchboard.app = create_app(config, reader, engine, launcher, reload_jobs=watcher.reload, auth=auth,
                                 sanity=sanity, metrics=metrics)
    url_written = _write_small_file(url_path, url)
    _say_serving(config, url)
    if on_ready is not None:
        gevent.spawn(on_ready, url)

    engine_greenlet = gevent.spawn(engine.serve_forever, stop_event)
    engine_greenlet.link_exception(lambda g: log.error("the engine stopped: %r", g.exception))
    gevent.spawn(sanity.run_forever, stop_event)
    gevent.spawn(metrics.run_forever, stop_event)
    retention = _start_retention(config, store, engine)
    while not stop_event.wait(5.0):
        if not url_written:  # a full disk at start-up: the CLI finds the server once there is room
            url_written = _write_small_file(url_path, url)
    _stop_all(config, lock_fd, stop_web, web_greenlet, notify=notify, actions=actions, watcher=watcher,
              engine_greenlet=engine_greenlet, launcher=launcher, stores=(store, reader), retention=retention)


def _start_retention(config, store, engine):
    """The background retention task, if the config keeps runs or output for a limited time."""
    if config.runs_retention is None and config.output_retention is None:
        return None
    # Its own connection, used in a worker thread: a batch's disk reads and fsync
    # then leave the event loop running (see engine/housekeeping.py).
    try:
        own = InThread(Store(config.db_path, migrate=False))
    except StoreUnavailable as exc:
        log.warning("retention: %s; its batches use the engine's connection", exc)
        own = store
    task = RetentionTask(own, Policy.from_config(config), config.retention_interval,
                         next_start=engine.next_start)
    task.start()
    return task


def _start_web(config, listener, switchboard):
    """Start the configured web server on ``listener``: (its greenlet or None, how to stop it, its port)."""
    if config.server == "waitress":
        web = waitress_server(listener, switchboard, config)
        return gevent.spawn(web.run), web.close, web.effective_port
    tls = {"certfile": config.tls_cert, "keyfile": config.tls_key} if config.tls_cert else {}
    web = gevent_server(listener, switchboard, config, log=None, error_log=log, **tls)
    web.start()
    return None, web.stop, web.server_port


def _start_engine_helpers(config, store, engine):
    """Start what works beside the engine: the action runner, the jobs folder (loaded
    now, then watched) and the socket where shepherds' notices arrive."""
    actions = ActionRunner(config, store, engine)
    actions.start()
    watcher = JobsWatcher(config, engine)
    loaded = watcher.reload()
    log.info("loaded %d jobs from %s (%d problems)", loaded["jobs"], config.jobs_dir, len(loaded["errors"]))

    notify = StreamServer(_unix_listener(config.notify_path), _notice_handler(engine))
    notify.start()

    watcher.start()
    return actions, watcher, notify


def _say_serving(config, url):
    """Log and print that the server is ready, with a login link when it listens on loopback."""
    log.info("serving on %s (data %s)", url, config.data_dir)
    print(f"apsis-lite serving on {url}", flush=True)
    if is_loopback(config.host):
        link = one_time_link_for(config.data_dir, url)
        if link:
            print(f"log in from a browser on this machine: {link}\n"
                  "(good once, for two minutes; 'apsis-lite login-link"
                  f"{'' if config.data_dir == default_data_dir() else ' --data ' + config.data_dir}'"
                  " prints another)", flush=True)


def _stop_all(config, lock_fd, stop_web, web_greenlet, notify=None, actions=None, watcher=None,
              engine_greenlet=None, launcher=None, stores=(), retention=None):
    """Stop everything and remove the files that say a server runs, whatever fails on the way
    (a full disk must not leave a traceback, nor server.url behind)."""
    steps = [("web server", stop_web)]
    if retention is not None:
        steps.append(("retention", retention.stop))
    if notify is not None:
        steps += [("notify socket", notify.stop), ("actions", actions.stop), ("jobs watcher", watcher.stop),
                  ("engine", lambda: engine_greenlet.join(timeout=5))]
    if web_greenlet is not None:
        steps.append(("web server", lambda: web_greenlet.kill(block=False)))
    if launcher is not None:
        steps.append(("agent client", launcher.close))
    if stores:
        store, reader = stores
        steps += [("database checkpoint", store.checkpoint), ("database", reader.close), ("database", store.close)]
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # the rest must still be done
            log.warning("stopping: %s: %s", what, exc)
    for name in ("notify.sock", "server.url", "server.pid"):
        try:
            os.unlink(os.path.join(config.data_dir, name))
        except OSError:
            pass
    os.close(lock_fd)
    log.info("stopped")

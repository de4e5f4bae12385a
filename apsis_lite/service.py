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
from .engine import Engine
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


def setup_logging(config):
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def serve(config, since_now=False):
    """Run the scheduler and the web server until SIGTERM or SIGINT."""
    setup_logging(config)
    try:
        load_extensions(config.extensions)
    except ImportError as exc:
        raise ConfigError(f"config: extensions: cannot import {exc.name or exc}: {exc}") from None
    lock_fd = lock_data_dir(config)
    store = Store(config.db_path)
    reader = Store(config.db_path, readonly=True)
    launcher = LocalLauncher(config)
    engine = Engine(config, store, launcher, since_now=since_now)
    actions = ActionRunner(config, store, engine)
    actions.start()
    watcher = JobsWatcher(config, engine)
    loaded = watcher.reload()
    log.info("loaded %d jobs from %s (%d problems)", loaded["jobs"], config.jobs_dir, len(loaded["errors"]))

    notify = StreamServer(_unix_listener(config.notify_path), _notice_handler(engine))
    notify.start()

    watcher.start()
    app = create_app(config, reader, engine, launcher, reload_jobs=watcher.reload)
    stop_event = gevent.event.Event()
    if config.server == "waitress":
        import waitress
        web = waitress.create_server(app, host=config.host, port=config.port, threads=config.threads)
        web_greenlet = gevent.spawn(web.run)
        stop_web = web.close
        bound = web.effective_port
    else:
        from gevent.pywsgi import WSGIServer
        web = WSGIServer((config.host, config.port), app, log=None, error_log=log)
        web.start()
        web_greenlet = None
        stop_web = web.stop
        bound = web.server_port
    url = f"http://{config.host}:{bound}"
    with open(os.path.join(config.data_dir, "server.url"), "w") as f:
        f.write(url)
    log.info("serving on %s (data %s)", url, config.data_dir)
    print(f"apsis-lite serving on {url}", flush=True)

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

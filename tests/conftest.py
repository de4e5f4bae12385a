"""Fixtures that run the real thing: a real server process on a free port, the real CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A suite started in the background by a non-interactive shell (nohup, some CI
# runners) inherits SIGINT ignored, and so would every CLI it starts: the
# Ctrl-C tests would test nothing. Give the suite the disposition a terminal gives.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def short_tmpdir(prefix):
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


class Server:
    """An ``apsis-lite serve`` subprocess with its own jobs and data folders."""

    def __init__(self, jobs_dir, data_dir, extra_args=(), env=None):
        self.env = env
        self.jobs_dir = Path(jobs_dir)
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args)
        self.proc = None
        self.url = None
        self.log_path = self.data_dir / "server-test.log"

    def start(self, *args, timeout=30):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        url_file = self.data_dir / "server.url"
        if url_file.exists():
            url_file.unlink()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "apsis_lite", "serve", "--jobs", str(self.jobs_dir),
             "--data", str(self.data_dir), "--port", "0", *self.extra_args, *args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
            env=None if self.env is None else {**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if url_file.exists() and url_file.read_text():
                self.url = url_file.read_text().strip()
                try:
                    self.get("/api/v1/alive")
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not come up:\n{self.log()}")

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        self.proc = None

    def kill(self):
        self.stop(signal.SIGKILL)

    def token(self):
        """The server's local token, read from its data folder as the CLI on this machine does."""
        path = self.data_dir / "token"
        return path.read_text().strip() if path.exists() else ""

    def login_link(self):
        """A one-time login link, as the desktop start opens in the browser."""
        from apsis_lite.web.auth import one_time_link
        return one_time_link(self.url, self.token())

    def request(self, method, path, jso=None, headers=None, token=True):
        """``(status, body, headers)``; with the local token unless ``token`` is False or another token."""
        data = None if jso is None else json.dumps(jso).encode()
        sent = {"Content-Type": "application/json"}
        if token:
            sent["Authorization"] = f"Bearer {self.token() if token is True else token}"
        sent.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def get(self, path):
        status, body, _ = self.request("GET", path)
        assert status == 200, (status, body)
        return json.loads(body)

    def post(self, path, jso=None):
        status, body, _ = self.request("POST", path, jso if jso is not None else {})
        assert status in (200, 201), (status, body)
        return json.loads(body)

    def wait_run(self, run_id, states=("success", "failure", "error", "skipped"), timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"/api/v1/runs/{run_id}")
            if run["state"] in states:
                return run
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} still {run['state']} after {timeout} s\n{self.log()}")

    def wait_for(self, predicate, timeout=20, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.log()}")

    def runs(self, q=""):
        items, cursor = [], None
        while True:
            path = f"/api/v1/runs?limit=1000&q={urllib.parse.quote(q)}"
            if cursor:
                path += f"&cursor={cursor}"
            page = self.get(path)
            items += page["items"]
            cursor = page["next"]
            if not cursor:
                return items

    def cli(self, *args, timeout=60, input=None):
        env = dict(os.environ, APSIS_LITE_URL=self.url or "", APSIS_LITE_TOKEN=self.token())
        return subprocess.run([sys.executable, "-m", "apsis_lite", *args], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=ROOT, input=input)


def write_job(jobs_dir, job_id, text):
    path = Path(jobs_dir) / f"{job_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def jobs_dir():
    d = short_tmpdir("al-jobs-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def data_dir():
    d = short_tmpdir("al-data-")
    yield Path(d)
    _kill_agents(d)
    shutil.rmtree(d, ignore_errors=True)


def _kill_agents(data_dir):
    pid_file = Path(data_dir) / "agent" / "agent.pid"
    try:
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        pass


@pytest.fixture
def server(jobs_dir, data_dir):
    srv = Server(jobs_dir, data_dir)
    yield srv
    try:
        srv.stop()
    except Exception:
        srv.kill()


@pytest.fixture
def running(jobs_dir, data_dir):
    """A factory: ``running(**settings)`` starts a server with those config
    settings (written to a config file in the data folder); all are stopped
    at the end. Called again, it starts a server on the same folders."""
    servers = []

    def start(**settings):
        import yaml
        config = data_dir / "test-config.yaml"
        data_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(settings))
        servers.append(Server(jobs_dir, data_dir, ["--config", str(config)]).start())
        return servers[-1]
    yield start
    for s in servers:
        s.stop()


class Clock:
    """The engine's clock in in-process tests: it stands still unless a test sets ``t``."""

    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def app_world(tmp_path):
    """A factory: ``make(jobs, t0, recover=True)`` -> (test client, engine,
    writer store, clock) over job files given as {id: yaml}, with the web app
    in this process and the engine's clock at ``t0``."""
    from apsis_lite.config import load_config
    from apsis_lite.engine.core import Engine
    from apsis_lite.model.jobs import load_jobs_dir
    from apsis_lite.engine.launcher import LocalLauncher
    from apsis_lite.store.database import Store
    from apsis_lite.web.app import create_app

    made = []

    def make(jobs, t0, recover=True):
        jobs_dir = tmp_path / "jobs"
        for job_id, text in jobs.items():
            path = jobs_dir / f"{job_id}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        jobs_dir.mkdir(exist_ok=True)
        config = load_config(None, data_dir=str(tmp_path / "data"), jobs_dir=str(jobs_dir),
                             horizon=30, sweep_interval=1000)
        store = Store(config.db_path)
        reader = Store(config.db_path, readonly=True)
        made.append((store, reader))
        clock = Clock(t0)
        launcher = LocalLauncher(config)
        engine = Engine(config, store, launcher, clock=clock)
        engine.set_jobs(*load_jobs_dir(config.jobs_dir))
        if recover:
            engine.recover()
        app = create_app(config, reader, engine, launcher)
        client = app.test_client()
        # As the CLI on this machine: the local token the app keeps in the data folder.
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {app.extensions['apsis_auth'].local_token}"
        return client, engine, store, clock

    yield make
    for store, reader in made:
        reader.close()
        store.close()
    _kill_agents(tmp_path / "data")

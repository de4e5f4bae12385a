"""The one-file executable ``dist/apsis-lite``, used as a user would.

``make test`` builds it once (``make build``) and names it in
$APSIS_LITE_EXE; without that variable the executable is built here, once
per session, when it is missing or older than any source it is made from.
"""

import http.cookiejar
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, _kill_agents, short_tmpdir, write_job

EXE_ENV = "APSIS_LITE_EXE"
BUILT_FROM = ["apsis_lite", "templates", "static", "jobs", "build.spec", "pyproject.toml"]
MAX_SIZE = 40 * 1024 * 1024


def newest_source_mtime():
    newest = 0.0
    for name in BUILT_FROM:
        path = ROOT / name
        files = [path] if path.is_file() else [p for p in path.rglob("*")
                                               if p.is_file() and "__pycache__" not in p.parts]
        newest = max([newest] + [p.stat().st_mtime for p in files])
    return newest


def build():
    """Build into a folder of our own, then move the executable into place in one step.

    Another test session may be running the old one, or building too: neither
    sees a half-written file.
    """
    pyinstaller = Path(sys.executable).with_name("pyinstaller")
    work = ROOT / "build" / f"test-{os.getpid()}"
    started = time.monotonic()
    try:
        result = subprocess.run([str(pyinstaller), "--noconfirm", "--log-level", "WARN",
                                 "--workpath", str(work / "work"), "--distpath", str(work / "dist"),
                                 "build.spec"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, f"pyinstaller build.spec failed:\n{result.stderr[-5000:]}"
        (ROOT / "dist").mkdir(exist_ok=True)
        os.replace(work / "dist" / "apsis-lite", ROOT / "dist" / "apsis-lite")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nbuilt dist/apsis-lite in {time.monotonic() - started:.0f} s")


@pytest.fixture(scope="session")
def exe():
    given = os.environ.get(EXE_ENV)
    if given:
        path = Path(given)
        assert path.is_file() and os.access(path, os.X_OK), f"${EXE_ENV}={given}: no executable there"
        return path
    path = ROOT / "dist" / "apsis-lite"
    if not path.exists() or path.stat().st_mtime < newest_source_mtime():
        build()
    return path


class User:
    """A home with its own data folder (found by the CLI through $XDG_DATA_HOME) and jobs folder."""

    def __init__(self, exe, home):
        self.exe = str(exe)
        self.home = Path(home)
        self.jobs_dir = self.home / "jobs"
        self.data_dir = self.home / "d" / "apsis-lite"
        self.opened_file = self.home / "opened"
        browser = self.home / "browser"
        browser.write_text(f'#!/bin/sh\necho "$1" >> {self.opened_file}\n')
        browser.chmod(0o755)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("APSIS_LITE") and k not in ("DISPLAY", "WAYLAND_DISPLAY",
                                                                    "LD_LIBRARY_PATH")}
        self.env.update(HOME=str(self.home), XDG_DATA_HOME=str(self.home / "d"),
                        XDG_CONFIG_HOME=str(self.home / "c"), BROWSER=str(browser))
        self.server = None

    def start(self, *args, timeout=30):
        """Start ``apsis-lite ARGS``; returns the seconds until ``/api/v1/alive`` answered."""
        url_file = self.data_dir / "server.url"
        if url_file.exists():
            url_file.unlink()
        self.log = open(self.home / "server.log", "ab")
        started = time.monotonic()
        self.server = subprocess.Popen([self.exe, *args], stdout=self.log, stderr=subprocess.STDOUT,
                                       env=self.env, cwd=self.home)
        deadline = started + timeout
        while time.monotonic() < deadline:
            assert self.server.poll() is None, f"exited with {self.server.returncode}:\n{self.output()}"
            try:
                self.url = url_file.read_text().strip()
                with urllib.request.urlopen(self.url + "/api/v1/alive", timeout=5) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except (OSError, ValueError):  # not written yet, or not answering yet
                pass
            time.sleep(0.02)
        raise AssertionError(f"no answer from /api/v1/alive:\n{self.output()}")

    def serve(self):
        return self.start("serve", "--jobs", str(self.jobs_dir), "--port", "0")

    def stop(self):
        self.server.send_signal(signal.SIGTERM)
        return self.server.wait(20)

    def output(self):
        return (self.home / "server.log").read_text(errors="replace")

    def opened(self, count, timeout=10):
        """The addresses given to the browser, once there are ``count`` of them (or the time is up)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.opened_file.read_text().split() if self.opened_file.exists() else []
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def cli(self, *args, timeout=60):
        return subprocess.run([self.exe, *args], capture_output=True, text=True, env=self.env,
                              cwd=self.home, timeout=timeout)


@pytest.fixture
def user(exe):
    u = User(exe, short_tmpdir("al-exe-"))
    yield u
    if u.server is not None and u.server.poll() is None:
        u.server.kill()
        u.server.wait()
    _kill_agents(u.data_dir)
    shutil.rmtree(u.home, ignore_errors=True)


def test_size_and_cold_start(exe, user):
    size = exe.stat().st_size
    write_job(user.jobs_dir, "hello", """\
        program: "echo hello"
    """)
    seconds = user.serve()
    print(f"\ndist/apsis-lite: {size / 1024 / 1024:.1f} MB, cold start to /api/v1/alive {seconds:.2f} s")
    assert size < MAX_SIZE, f"{size} bytes"
    assert seconds < 10
    assert user.stop() == 0


def test_serve_run_stop_restart_find_the_run(user):
    write_job(user.jobs_dir, "hello", """\
        program: "echo hello"
    """)
    user.serve()
    # The API's description rides along in the bundle (the API reads it for every request).
    with urllib.request.urlopen(user.url + "/api/v1/openapi.json", timeout=5) as resp:
        assert json.loads(resp.read())["paths"]["/runs"]
    # The CLI finds the server and its token through the data folder, as on a user's machine.
    ran = user.cli("run", "--", "echo", "hi")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hi\n"
    failed = user.cli("run", "--", "sh -c 'echo no; exit 3'")
    assert failed.returncode == 3 and failed.stdout == "no\n"
    # Programs get the user's environment, not the bundle's unpacked libraries.
    env = user.cli("run", "--", "sh -c 'echo LD=$LD_LIBRARY_PATH'")
    assert env.stdout == "LD=\n", env.stdout
    assert user.stop() == 0
    assert "Traceback" not in user.output()

    user.serve()
    runs = user.cli("runs")
    assert runs.returncode == 0, runs.stderr
    line = next(l for l in runs.stdout.splitlines() if "adhoc/" in l and "success" in l)
    run_id = line.split()[0]
    shown = user.cli("show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "success" in shown.stdout
    output = user.cli("output", run_id)
    assert output.stdout in ("hi\n", "no\n", "LD=\n")
    assert user.stop() == 0


def test_check_jobs_on_the_example_jobs(user):
    result = user.cli("check-jobs", str(ROOT / "jobs"))
    assert result.returncode == 0, result.stderr
    count = sum(1 for _ in (ROOT / "jobs").rglob("*.yaml"))
    assert re.search(rf"^{count} jobs loaded, 0 problems", result.stdout, re.M), result.stdout


def test_bad_command_line_is_one_clear_line(user):
    result = user.cli("check-jobs", str(user.home / "nowhere"))
    assert result.returncode == 1
    assert "jobs folder not found" in result.stderr and "Traceback" not in result.stderr


def test_double_click_opens_the_browser_and_a_second_click_reuses_it(user):
    user.start()  # no arguments, as a double-click
    assert (user.home / "c" / "apsis-lite" / "jobs" / "hello.yaml").exists()
    first = user.opened(1)
    assert len(first) == 1 and first[0].startswith(user.url + "/")
    # The browser's address logs it in; the pages come from the bundled templates.
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    with browser.open(first[0], timeout=10) as resp:
        assert resp.status == 200
    with browser.open(user.url + "/jobs/hello", timeout=10) as resp:
        page = resp.read().decode()
    assert "Says hello every morning" in page  # the example job's Markdown description
    with browser.open(user.url + "/static/app.css", timeout=10) as resp:
        assert resp.status == 200
    again = user.cli()
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"already running at {user.url}" in again.stdout
    assert len(user.opened(2)) == 2
    assert user.server.poll() is None
    assert user.stop() == 0


def test_time_zones_and_shipped_holiday_calendars(user):
    write_job(user.jobs_dir, "morning", """\
        program: "true"
        schedule:
          type: daily
          daytime: "09:00"
          tz: America/New_York
          calendar: Mon-Fri - US-holidays
    """)
    result = user.cli("schedule", str(user.jobs_dir), "morning", "--next", "2", "--tz", "Asia/Tokyo",
                      "--from", "2026-01-01T00:00:00Z")
    assert result.returncode == 0, result.stderr
    # 1 January is a holiday; 09:00 in New York (UTC-5 in January) is 23:00 in Tokyo (UTC+9).
    due = [l for l in result.stdout.splitlines() if not l.startswith("#")]
    assert due == ["2026-01-02 Fri 23:00:00 JST", "2026-01-05 Mon 23:00:00 JST"], result.stdout


def test_team_server_with_waitress_users_and_a_log_file(user):
    write_job(user.jobs_dir, "hello", """\
        program: "echo hello"
    """)
    data = user.home / "team-data"
    added = subprocess.run([user.exe, "user", "add", "ops", "--role", "operator", "--password-stdin",
                            "--data", str(data)], input="a long pass phrase\n", capture_output=True,
                           text=True, env=user.env, timeout=60)
    assert added.returncode == 0, added.stderr
    issued = user.cli("user", "token", "ops", "--data", str(data))
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip().split()[-1]
    log_file = user.home / "logs" / "apsis-lite.log"
    user.data_dir = data  # where this server writes server.url
    user.start("serve", "--host", "0.0.0.0", "--server", "waitress", "--threads", "4",
               "--jobs", str(user.jobs_dir), "--data", str(data), "--port", "0",
               "--log-file", str(log_file))
    url = user.url.replace("0.0.0.0", "127.0.0.1")
    anonymous = user.cli("runs", "--url", url)
    assert anonymous.returncode != 0
    ran = user.cli("run", "--url", url, "--token", token, "--", "echo", "from the team")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "from the team\n"
    assert user.stop() == 0
    assert "serving on" in log_file.read_text()

"""The no-argument (double-click) start, through the Python package, and the server's log file.

Each test gets its own HOME and XDG folders; the browser is a small script
named by $BROWSER (which ``webbrowser`` honours) that records the address.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, Server, _kill_agents, short_tmpdir, write_job

from apsis_lite.cli.desktop import own_loopback_address

URL_LINE = re.compile(r"open (http://[\d.]+:(\d+)) in your browser")


def port_free(port, host="127.0.0.1"):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def first_free(start, host="127.0.0.1"):
    return next(p for p in range(start, start + 20) if port_free(p, host))


class Desktop:
    """A user's home with its own data and config folders, and a recording browser."""

    def __init__(self, home):
        self.home = Path(home)
        self.data_dir = self.home / "d" / "apsis-lite"
        self.config_dir = self.home / "c" / "apsis-lite"
        self.jobs_dir = self.config_dir / "jobs"
        self.opened_file = self.home / "opened"
        browser = self.home / "browser"
        browser.write_text(f'#!/bin/sh\necho "$1" >> {self.opened_file}\n')
        browser.chmod(0o755)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("DISPLAY", "WAYLAND_DISPLAY", "APSIS_LITE_NO_BROWSER", "APSIS_LITE_URL")}
        self.env.update(HOME=str(self.home), XDG_DATA_HOME=str(self.home / "d"),
                        XDG_CONFIG_HOME=str(self.home / "c"), BROWSER=str(browser))
        self.procs = []
        # The loopback address of its own the start listens on (Linux answers on all of 127/8).
        self.address = own_loopback_address(self.data_dir)

    def write_config(self, text):
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "config.yaml").write_text(text)

    def launch(self, *args, env=None):
        """Start ``apsis-lite ARGS`` (none: the double-click start) in the background."""
        log = open(self.home / f"out{len(self.procs)}", "w+b")
        proc = subprocess.Popen([sys.executable, "-m", "apsis_lite", *args], stdout=log,
                                stderr=subprocess.STDOUT, cwd=ROOT, env={**self.env, **(env or {})})
        proc.log_path = log.name
        self.procs.append(proc)
        return proc

    def run(self, *args, env=None, timeout=30):
        return subprocess.run([sys.executable, "-m", "apsis_lite", *args], capture_output=True,
                              text=True, cwd=ROOT, env={**self.env, **(env or {})}, timeout=timeout)

    @staticmethod
    def output(proc):
        return Path(proc.log_path).read_text(errors="replace")

    def wait_url(self, proc, timeout=30):
        """The address the start printed, once the server there answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"exited with {proc.returncode}:\n{self.output(proc)}")
            m = URL_LINE.search(self.output(proc))
            if m:
                with urllib.request.urlopen(m.group(1) + "/api/v1/alive", timeout=10) as resp:
                    assert resp.status == 200
                return m.group(1), int(m.group(2))
            time.sleep(0.05)
        raise AssertionError(f"no address printed:\n{self.output(proc)}")

    def opened(self, wait_for=0, timeout=10):
        """The addresses given to the browser, waiting until there are ``wait_for`` of them."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.opened_file.read_text().split() if self.opened_file.exists() else []
            if len(lines) >= wait_for or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.fixture
def desktop():
    home = short_tmpdir("al-home-")
    d = Desktop(home)
    yield d
    d.stop_all()
    _kill_agents(d.data_dir)
    subprocess.run(["rm", "-rf", home])


def api(url, path, data_dir, method="GET"):
    """An API call with the local token the server keeps in its data folder."""
    token = (Path(data_dir) / "token").read_text().strip()
    req = urllib.request.Request(url + path, method=method, data=b"{}" if method == "POST" else None,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_first_launch_creates_folders_serves_and_opens_browser(desktop):
    assert desktop.address.startswith("127.") and desktop.address != "127.0.0.1"
    expected_port = first_free(5005, desktop.address)
    proc = desktop.launch()
    url, port = desktop.wait_url(proc)
    assert url == f"http://{desktop.address}:{expected_port}"
    example = (desktop.jobs_dir / "hello.yaml").read_text()
    assert example.lstrip().startswith("#")
    assert (desktop.data_dir / "apsis-lite.db").exists()
    assert (desktop.data_dir / "server.url").read_text().strip() == url
    jobs = api(url, "/api/v1/jobs", desktop.data_dir)
    assert "hello" in str(jobs)
    opened = desktop.opened(wait_for=1)
    assert len(opened) == 1 and opened[0].startswith(url + "/")
    assert f"created your jobs folder {desktop.jobs_dir}" in desktop.output(proc)
    # Not started from a terminal: the log goes to the data folder, where it can be found.
    assert f"serving on {url}" in (desktop.data_dir / "apsis-lite.log").read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert "Traceback" not in desktop.output(proc)


def test_example_job_passes_check_jobs(desktop):
    proc = desktop.launch("desktop", "--no-browser")
    desktop.wait_url(proc)
    result = desktop.run("check-jobs", "--strict", str(desktop.jobs_dir))
    assert result.returncode == 0, result.stderr
    assert "1 job loaded, 0 problems" in result.stdout


def test_taken_port_moves_to_the_next_free_one(desktop):
    base = next(p for p in range(20000, 30000, 7) if port_free(p) and port_free(p + 1))
    desktop.write_config(f"port: {base}\n")
    with socket.socket() as taken:
        taken.bind((desktop.address, base))
        taken.listen(1)
        proc = desktop.launch()
        url, port = desktop.wait_url(proc)
    assert url == f"http://{desktop.address}:{base + 1}"


def test_a_host_in_the_config_is_used_rather_than_an_address_of_its_own(desktop):
    port = next(p for p in range(20000, 30000, 7) if port_free(p))
    desktop.write_config(f"host: 127.0.0.1\nport: {port}\n")
    proc = desktop.launch("desktop", "--no-browser")
    url, _ = desktop.wait_url(proc)
    assert url == f"http://127.0.0.1:{port}"


def test_second_launch_opens_the_running_instance(desktop):
    first = desktop.launch()
    url, _ = desktop.wait_url(first)
    desktop.opened(wait_for=1)
    pid = (desktop.data_dir / "server.pid").read_text().strip()
    second = desktop.run()
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"already running at {url}" in second.stdout
    opened = desktop.opened(wait_for=2)
    assert len(opened) == 2 and all(u.startswith(url + "/") for u in opened)
    # Still one scheduler: the first one, still answering.
    assert (desktop.data_dir / "server.pid").read_text().strip() == pid == str(first.pid)
    assert first.poll() is None
    assert api(url, "/api/v1/alive", desktop.data_dir)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_no_browser_when_asked(desktop, how):
    if how == "flag":
        proc = desktop.launch("desktop", "--no-browser")
    else:
        proc = desktop.launch(env={"APSIS_LITE_NO_BROWSER": "1"})
    desktop.wait_url(proc)
    second = desktop.run("desktop", "--no-browser") if how == "flag" else \
        desktop.run(env={"APSIS_LITE_NO_BROWSER": "1"})
    assert second.returncode == 0
    time.sleep(0.5)
    assert desktop.opened() == []


def test_existing_jobs_folder_is_used_as_it_is(desktop):
    write_job(desktop.jobs_dir, "mine", """\
        program: "true"
    """)
    proc = desktop.launch("desktop", "--no-browser")
    url, _ = desktop.wait_url(proc)
    assert sorted(p.name for p in desktop.jobs_dir.iterdir()) == ["mine.yaml"]
    assert "created your jobs folder" not in desktop.output(proc)


def test_serve_on_the_desktop_data_folder_refuses(desktop):
    proc = desktop.launch("desktop", "--no-browser")
    desktop.wait_url(proc)
    other = desktop.run("serve", "--data", str(desktop.data_dir), "--jobs", str(desktop.jobs_dir),
                        "--port", "0")
    assert other.returncode == 1
    assert "already using" in other.stderr and "two schedulers must never share" in other.stderr
    assert "Traceback" not in other.stderr


def test_bad_config_is_one_clear_line(desktop):
    desktop.write_config("port: lots\n")
    result = desktop.run()
    assert result.returncode == 1
    assert "port" in result.stderr and "Traceback" not in result.stderr


def test_waitress_with_threads_and_a_rotating_log_file(jobs_dir, data_dir):
    log_file = Path(data_dir) / "logs" / "apsis-lite.log"
    config = Path(data_dir) / "server.yaml"
    config.write_text(f"log_file: {log_file}\nlog_file_max_size: 1024\nlog_file_backups: 2\n")
    write_job(jobs_dir, "a", """\
        program: "true"
    """)
    server = Server(jobs_dir, data_dir, ["--config", str(config), "--server", "waitress",
                                         "--threads", "2"])
    server.start()
    try:
        for i in range(30):  # each reload of a changed job writes a log line
            write_job(jobs_dir, "a", f"""\
                program: "echo {i}"
            """)
            api(server.url, "/api/v1/jobs/reload", data_dir, "POST")
        server.wait_for(lambda: Path(f"{log_file}.1").exists(), what="a rotated log file")
        assert not Path(f"{log_file}.3").exists()
        assert "jobs reloaded" in log_file.read_text() + Path(f"{log_file}.1").read_text()
        assert "jobs reloaded" not in server.log()  # the file, not stderr
    finally:
        server.stop()

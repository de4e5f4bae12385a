"""A taken port: ``serve`` says which and how to pick another; ``make run PORT=N`` picks another.

The real ``make run`` of the repository's Makefile, on the example jobs, with
the data folder moved aside through ``ARGS``.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, _kill_agents, short_tmpdir

VENV = Path(sys.prefix)  # the environment running the suite: `make run` must not install another


@pytest.fixture
def taken_port():
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def data():
    d = Path(short_tmpdir("al-port-"))
    yield d
    _kill_agents(d)
    shutil.rmtree(d, ignore_errors=True)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _make_run(*variables):
    # -o: the environment is installed already; never rebuild it here, whatever the file times.
    return ["make", "--no-print-directory", "-C", str(ROOT), "-o", f"{VENV}/.installed", "run",
            f"VENV={VENV}", *variables]


def test_serve_on_a_taken_port_names_it_and_says_how_to_pick_another(taken_port, data):
    done = subprocess.run([sys.executable, "-m", "apsis_lite", "serve", "--jobs", str(ROOT / "jobs"),
                           "--data", str(data), "--port", str(taken_port)],
                          capture_output=True, text=True, timeout=60, cwd=data)
    assert done.returncode == 1
    assert done.stderr == (
        f"Error: cannot listen on 127.0.0.1 port {taken_port}: Address already in use "
        "(another program is listening there); pick another port with --port N "
        "(--port 0 picks a free one), or set port: in the config file\n")
    assert not (data / "server.url").exists()


def test_make_run_takes_another_port(taken_port, data):
    failed = subprocess.run(_make_run(f"PORT={taken_port}", f"ARGS=--data {data}"),
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0
    assert f"port {taken_port}: Address already in use" in failed.stderr and "--port N" in failed.stderr
    assert "Traceback" not in failed.stderr

    port = _free_port()
    log = open(data / "make-run.log", "wb")
    proc = subprocess.Popen(_make_run(f"PORT={port}", f"ARGS=--data {data}"), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url_file, deadline = data / "server.url", time.monotonic() + 40
        while not (url_file.exists() and url_file.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, (data / "make-run.log").read_text()
            time.sleep(0.05)
        assert url_file.read_text().strip() == f"http://127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)

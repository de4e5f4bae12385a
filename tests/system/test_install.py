"""An installed wheel works on its own: no checkout beside it.

``make`` installs in editable mode, which reads templates/, static/ and
jobs/ from the repository; ``pip install apsis-lite`` (or of a checkout)
must carry them too. The wheel is built for real and unpacked into a folder
of its own; the server and the CLI run from there, away from the checkout.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A folder holding the package as the wheel installs it."""
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of the sources: setuptools builds in the tree, and a build/
    # folder left there by an earlier build must not stand in for this one.
    source = out / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".data"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
                   check=True, capture_output=True, timeout=600)
    wheel, = out.glob("apsis_lite-*.whl")
    target = out / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return wheel, target


def _env(target):
    return {**os.environ, "PYTHONPATH": str(target)}


def test_the_wheel_carries_every_part_and_the_files_beside_the_code(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for part in ("model", "store", "engine", "web", "cli"):
        assert f"apsis_lite/{part}/__init__.py" in names
    assert "apsis_lite/resources/templates/base.html" in names
    assert "apsis_lite/resources/static/htmx.min.js" in names
    assert any(n.startswith("apsis_lite/resources/jobs/") and n.endswith(".yaml") for n in names)
    assert any(n.startswith("apsis_lite/model/calendars_data/") and n.endswith(".cal") for n in names)
    assert not any(n.startswith(("templates/", "static/", "jobs/")) for n in names), \
        "nothing outside the package: it would land loose in site-packages"


def test_an_installed_server_serves_its_pages(installed, tmp_path):
    _, target = installed
    where = subprocess.run([sys.executable, "-c", "import apsis_lite; print(apsis_lite.__file__)"],
                           env=_env(target), cwd=tmp_path, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(target)), "the test must run the unpacked wheel, not the checkout"
    jobs, data = tmp_path / "jobs", tmp_path / "data"
    jobs.mkdir()
    (jobs / "hello.yaml").write_text("program: {type: no-op}\nschedule: {type: interval, interval: 1h}\n")
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "apsis_lite", "serve", "--jobs", str(jobs), "--data",
                             str(data), "--port", "0"], cwd=tmp_path, env=_env(target),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        url_file = data / "server.url"
        deadline = time.monotonic() + 30
        while not (url_file.exists() and url_file.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.05)
        url = url_file.read_text().strip()
        token = (data / "token").read_text().strip()

        def get(path):
            req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
            for _ in range(100):
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        return resp.status, resp.read().decode()
                except ConnectionError:
                    time.sleep(0.05)
            raise AssertionError("server never answered")

        status, page = get("/jobs")
        assert status == 200 and "hello" in page and "htmx" in page
        status, css = get("/static/app.css")
        assert status == 200 and css
        status, body = get("/api/v1/jobs")
        assert status == 200 and [j["job_id"] for j in json.loads(body)["items"]] == ["hello"]
    finally:
        proc.terminate()
        proc.wait(15)


def test_an_installed_cli_checks_the_example_jobs_it_ships(installed, tmp_path):
    _, target = installed
    examples = target / "apsis_lite" / "resources" / "jobs"
    done = subprocess.run([sys.executable, "-m", "apsis_lite", "check-jobs", str(examples)],
                          env=_env(target), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr

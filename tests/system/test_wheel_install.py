"""An installed wheel works on its own: installed into a fresh virtual environment outside the repository.

``make`` installs in editable mode, which reads templates/, static/ and jobs/
from the repository; ``pip install .``, a wheel or ``pipx install .`` must
carry them inside the package. The wheel is built for real from a copy of
the sources and installed by pip into a new environment in a temporary
folder; its own ``apsis-lite`` command serves the example jobs it ships, and
every page it links to (and every fragment and static file they load) answers.

The dependencies are not downloaded: the fresh environment sees the suite's
own environment's packages through a ``.pth`` file, and ``pip check`` proves
they satisfy what the wheel declares. A download would make the test slow
and dependent on the network; what is tested is what the wheel carries.
"""

import html.parser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, _kill_agents, short_tmpdir

# Pages every installation has; the crawl from / must reach each (and may find more).
PAGES = ("/", "/jobs", "/calendar", "/calendar/day", "/adhoc", "/sanity")
MAX_PAGES = 80


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """``(wheel, environment)``: a fresh virtual environment with the wheel installed by pip."""
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of the sources: setuptools builds in the tree, and a build/
    # folder left there by an earlier build must not stand in for this one.
    source = out / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".data", "tests",
        "bench", ".hypothesis"))
    # Built as `pip install .` builds: in an isolated environment with the
    # setuptools pyproject.toml asks for (from pip's configured index or cache).
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)])
    wheel, = out.glob("apsis_lite-*.whl")
    env = out / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)])
    _run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q",
          "--no-deps", "--no-index", str(wheel)])
    # Then the dependencies (after the install, which would otherwise find the
    # suite's editable apsis-lite among them and try to replace it).
    site = Path(subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "suite-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    checked = subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "check"],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return wheel, env


def _run(argv):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def outside():
    """A working folder outside the repository, for the installed commands to run in."""
    d = Path(short_tmpdir("al-wheel-"))
    yield d
    _kill_agents(d / "data")
    shutil.rmtree(d, ignore_errors=True)


def installed(venv, outside, *args, **kw):
    """``apsis-lite ARGS...`` from the fresh environment's own script, in a folder outside the repository."""
    _, env = venv
    return subprocess.run([str(env / "bin" / "apsis-lite"), *args], cwd=outside, capture_output=True,
                          text=True, timeout=120, env=_clean_env(), **kw)


def _clean_env():
    # Nothing may point back at the checkout.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_the_wheel_carries_every_part_and_the_files_beside_the_code(venv):
    wheel, _ = venv
    names = set(zipfile.ZipFile(wheel).namelist())
    for part in ("model", "store", "engine", "web", "cli", "agent"):
        assert f"apsis_lite/{part}/__init__.py" in names
    for name in ("templates/base.html", "static/htmx.min.js", "static/app.css", "jobs/hello.yaml"):
        assert f"apsis_lite/resources/{name}" in names
    repo_jobs = {p.relative_to(ROOT / "jobs").as_posix() for p in (ROOT / "jobs").rglob("*.yaml")}
    shipped = {n.removeprefix("apsis_lite/resources/jobs/") for n in names
               if n.startswith("apsis_lite/resources/jobs/")}
    assert repo_jobs <= shipped, "every example job ships"
    assert any(n.startswith("apsis_lite/model/calendars_data/") and n.endswith(".cal") for n in names)
    assert "apsis_lite/web/api/openapi.yaml" in names
    assert not any(n.startswith(("templates/", "static/", "jobs/")) for n in names), \
        "nothing outside the package: it would land loose in site-packages"


def test_the_installed_command_runs_the_installed_package(venv, outside):
    _, env = venv
    where = subprocess.run([str(env / "bin" / "python"), "-c", "import apsis_lite; print(apsis_lite.__file__)"],
                           cwd=outside, env=_clean_env(), capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(env)), "the test must run the installed wheel, not the checkout"
    examples = installed(venv, outside, "examples")
    assert examples.returncode == 0 and examples.stdout.strip().startswith(str(env)), examples
    version = installed(venv, outside, "--version")
    assert version.returncode == 0 and "apsis-lite, version" in version.stdout, version


def test_the_installed_cli_checks_and_copies_the_example_jobs_it_ships(venv, outside):
    shipped = installed(venv, outside, "examples").stdout.strip()
    done = installed(venv, outside, "check-jobs", shipped)
    assert done.returncode == 0 and "0 problems" in done.stdout, done.stdout + done.stderr
    copied = installed(venv, outside, "examples", "my-jobs")
    assert copied.returncode == 0, copied.stderr
    assert (outside / "my-jobs" / "hello.yaml").read_text() == (ROOT / "jobs" / "hello.yaml").read_text()
    again = installed(venv, outside, "examples", "my-jobs")
    assert again.returncode == 2 and "my-jobs exists already" in again.stderr and "Traceback" not in again.stderr


class _Links(html.parser.HTMLParser):
    """The URLs a page links to or loads: links, htmx requests, scripts, style sheets, images."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("href", "src", "hx-get"):
            if attrs.get(name):
                self.urls.append(attrs[name])
        if tag == "form" and attrs.get("action") and (attrs.get("method") or "get").lower() == "get":
            self.urls.append(attrs["action"])


def test_an_installed_server_serves_every_page_with_the_example_jobs(venv, outside):
    shipped = installed(venv, outside, "examples").stdout.strip()
    data = outside / "data"
    _, env = venv
    log = open(outside / "server.log", "wb")
    proc = subprocess.Popen([str(env / "bin" / "apsis-lite"), "serve", "--jobs", shipped, "--data", str(data),
                             "--port", "0"], cwd=outside, env=_clean_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        url = _wait_url(proc, data, outside / "server.log")
        token = (data / "token").read_text().strip()

        def get(path, auth=True):
            headers = {"Authorization": f"Bearer {token}"} if auth else {}
            req = urllib.request.Request(urllib.parse.urljoin(url, path), headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return resp.status, resp.read().decode(errors="replace"), resp.headers.get("Content-Type", "")
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode(errors="replace"), exc.headers.get("Content-Type", "")

        jobs = json.loads(get("/api/v1/jobs")[1])["items"]
        assert len(jobs) > 10 and "hello" in {j["job_id"] for j in jobs}, "the example jobs it ships load"
        assert not json.loads(get("/api/v1/jobs")[1]).get("errors")
        status, page, _ = get("/login", auth=False)
        assert status == 200 and "TemplateNotFound" not in page

        seen, queue, statics = set(), list(PAGES), set()
        while queue and len(seen) < MAX_PAGES:
            path = queue.pop(0)
            key = _page_key(path)
            if key in seen:
                continue
            seen.add(key)
            status, page, kind = get(path)
            assert status == 200, (path, status, page[:2000])
            assert "TemplateNotFound" not in page and "Traceback" not in page, path
            if "html" not in kind:
                continue
            links = _Links()
            links.feed(page)
            for link in links.urls:
                target = urllib.parse.urlsplit(urllib.parse.urljoin(url + path, link))
                if target.netloc != urllib.parse.urlsplit(url).netloc or "{" in link:
                    continue  # elsewhere, or a URL template filled in by the page's script
                local = target.path + (f"?{target.query}" if target.query else "")
                if target.path.startswith("/static/"):
                    statics.add(target.path)
                elif not target.path.startswith(("/api/", "/metrics", "/logout")):
                    queue.append(local)
        paths = {p for p, _ in seen}
        assert set(PAGES) <= paths
        assert any(p.startswith("/jobs/") for p in paths), "a job's page"
        assert any(p.startswith("/runs/r") for p in paths), "a run's page"
        assert "/static/htmx.min.js" in statics and "/static/app.css" in statics
        for path in sorted(statics):
            status, body, _ = get(path)
            assert status == 200 and body, path
    finally:
        proc.terminate()
        proc.wait(20)


def _page_key(path):
    """One fetch per page and set of query keys: /runs?q=a and /runs?q=b render the same templates."""
    parts = urllib.parse.urlsplit(path)
    return parts.path, tuple(sorted(k for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)))


def _wait_url(proc, data, log_path):
    url_file, deadline = data / "server.url", time.monotonic() + 40
    while not (url_file.exists() and url_file.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    url = url_file.read_text().strip()
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "/api/v1/alive", timeout=5):
                return url
        except urllib.error.HTTPError:
            return url  # answering, if only to say who may ask
        except OSError:
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)

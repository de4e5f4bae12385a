"""The client CLI's pure parts, URL resolution, argument errors caught before
any request, and the HTTP client's messages for a dead port, a foreign (non
apsis-lite) HTTP server and the real server.

End-to-end tests of every command against the real server are in test_cli.py.
"""

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import click
import pytest
from click.testing import CliRunner
from conftest import write_job

from apsis_lite.cli.server_commands import (
    exit_status, format_args, format_rusage, format_table, format_time, normalize_run_id,
    parse_assignments, program_from_argv, register,
)
from apsis_lite.cli.client import DEFAULT_URL, Client, ClientError, base_url, quote_id, resolve_url


@pytest.fixture
def cli():
    @click.group()
    def main():
        pass

    register(main)
    return main


@pytest.fixture
def dead_url():
    """A URL on a free local port with nothing listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- arguments -------------------------------------------------------------


def test_parse_assignments():
    assert parse_assignments([]) == {}
    assert parse_assignments(["date=2026-11-25", "x=", "q=a=b", "my arg=v w"]) == {
        "date": "2026-11-25", "x": "", "q": "a=b", "my arg": "v w",
    }


@pytest.mark.parametrize("word", ["date", "=x", ""])
def test_parse_assignments_bad(word):
    with pytest.raises(click.UsageError, match="expected ARG=VALUE"):
        parse_assignments([word])


def test_program_from_argv():
    assert program_from_argv(["echo", "hi"]) == ["echo", "hi"]
    assert program_from_argv(["ls"]) == ["ls"]
    assert program_from_argv(["echo hi | wc -c"]) == "echo hi | wc -c"
    assert program_from_argv(["echo", "a b"]) == ["echo", "a b"]


def test_normalize_run_id():
    assert normalize_run_id("12") == "r12"
    assert normalize_run_id(" r12 ") == "r12"


@pytest.fixture
def xdg(monkeypatch, tmp_path):
    """An empty default data folder; no $APSIS_LITE_URL. Returns its server.url path."""
    monkeypatch.delenv("APSIS_LITE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    (tmp_path / "apsis-lite").mkdir()
    return tmp_path / "apsis-lite" / "server.url"


def test_base_url(xdg, monkeypatch):
    assert base_url() == DEFAULT_URL == "http://127.0.0.1:5005"
    monkeypatch.setenv("APSIS_LITE_URL", "http://example:1234/")
    assert base_url() == "http://example:1234"
    assert base_url("localhost:9") == "http://localhost:9"


def test_resolve_url_order(xdg, monkeypatch):
    assert resolve_url() == (DEFAULT_URL, "default")
    xdg.write_text("http://127.0.0.1:4321")  # as the server writes it: no newline
    assert resolve_url() == ("http://127.0.0.1:4321", str(xdg))
    xdg.write_text("127.0.0.1:4322/\n")
    assert resolve_url() == ("http://127.0.0.1:4322", str(xdg))
    monkeypatch.setenv("APSIS_LITE_URL", "http://env:1")
    assert resolve_url() == ("http://env:1", "$APSIS_LITE_URL")
    assert resolve_url("http://flag:2") == ("http://flag:2", "--url")
    monkeypatch.setenv("APSIS_LITE_URL", "")
    assert resolve_url()[0] == "http://127.0.0.1:4322"


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_resolve_url_without_a_usable_file(xdg, content):
    if content is not None:
        xdg.write_text(content)
    assert resolve_url() == (DEFAULT_URL, "default")


def test_resolve_url_unreadable_file(xdg):
    xdg.mkdir()  # a folder where the file should be: unreadable, not an error
    assert resolve_url() == (DEFAULT_URL, "default")


def test_quote_id():
    assert quote_id("etl/load prices") == "etl/load%20prices"
    assert quote_id("a?b#c%") == "a%3Fb%23c%25"


# --- formatting ------------------------------------------------------------


def test_format_table_aligns():
    text = format_table(("RUN", "STATE"), [("r1", "success"), ("r123", "running")])
    assert text.splitlines() == [
        "RUN   STATE",
        "r1    success",
        "r123  running",
    ]


def test_format_table_fits_width():
    rows = [("r1", "etl/a very long job id that goes on and on", "x" * 60, "success")]
    text = format_table(("RUN", "JOB", "ARGS", "STATE"), rows, width=80, shrink=(1, 2))
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[1].startswith("r1   etl/a very long")
    assert lines[1].endswith("…  success")
    assert "…" in lines[1].split("  ")[1]


def test_format_table_no_width_keeps_everything():
    rows = [("r1", "x" * 200)]
    assert format_table(("RUN", "ARGS"), rows, shrink=(1,)).splitlines()[1] == "r1   " + "x" * 200


def test_format_table_no_trailing_spaces():
    text = format_table(("A", "B"), [("long value", ""), ("x", None)])
    assert all(line == line.rstrip() for line in text.splitlines())


def test_format_args_round_trips_through_filter():
    from apsis_lite.store.runfilter import compile_filter

    args = {"date": "2026-11-25", "my arg": 'say "hi"', "e": ""}
    text = format_args(args)
    assert text == 'date=2026-11-25 "my arg"="say \\"hi\\"" e=""'
    _, params = compile_filter(text)
    assert params == ["date", "2026-11-25", "my arg", 'say "hi"', "e", ""]


def test_format_rusage():
    assert format_rusage({"utime": 0.0, "stime": 0.0029579999999999997, "maxrss_kb": 11680}) == (
        "user 0.000 s, system 0.003 s, max RSS 11680 kB")
    assert format_rusage({"maxrss_kb": 5, "minflt": 3}) == "max RSS 5 kB, minflt=3"
    assert format_rusage({"utime": "n/a"}) == "utime=n/a"
    assert format_rusage(None) == ""


def test_format_time():
    assert format_time("2026-11-25T09:00:00Z", utc=True) == "2026-11-25 09:00:00Z"
    assert format_time(None) == ""
    local = format_time("2026-11-25T09:00:00Z")
    assert len(local) == len("2026-11-25 09:00:00")


# --- exit statuses ---------------------------------------------------------


@pytest.mark.parametrize("run, code, note", [
    ({"run_id": "r1", "state": "success", "exit_code": 0}, 0, None),
    ({"run_id": "r1", "state": "success", "signal": "SIGTERM", "message": "killed by SIGTERM (stopped): it was "
      "asked to stop with that signal"}, 0, "r1: success: killed by SIGTERM (stopped): it was asked to stop "
                                           "with that signal"),
    ({"run_id": "r1", "state": "failure", "exit_code": 3}, 3, None),
    ({"run_id": "r1", "state": "failure", "exit_code": None, "signal": "SIGKILL"}, 137,
     "r1: failure: killed by SIGKILL"),
    ({"run_id": "r1", "state": "failure", "signal": 15}, 143, "r1: failure: killed by SIGTERM"),
    ({"run_id": "r1", "state": "failure", "signal": "TERM"}, 143, "r1: failure: killed by SIGTERM"),
    ({"run_id": "r1", "state": "failure", "exit_code": 0, "message": "no output"}, 1,
     "r1: failure: no output"),
    ({"run_id": "r1", "state": "error", "message": "program not found: foo"}, 1,
     "r1: error: program not found: foo"),
    ({"run_id": "r1", "state": "skipped", "message": None}, 1, "r1: skipped"),
])
def test_exit_status(run, code, note):
    assert exit_status(run) == (code, note)


# --- unreachable server ----------------------------------------------------


def test_client_unreachable(dead_url):
    with pytest.raises(ClientError) as exc:
        Client(dead_url).get("/runs")
    assert str(exc.value) == (
        f"cannot reach apsis-lite at {dead_url}: connection refused "
        "(is the server running? start it with 'apsis-lite serve')"
    )
    assert exc.value.status is None


@pytest.mark.parametrize("argv", [
    ["runs"], ["jobs"], ["job", "a/b"], ["show", "r1"], ["output", "1"],
    ["stop", "r1"], ["rerun", "r1"], ["signal", "r1", "SIGTERM"], ["mark", "r1", "success"],
    ["run", "myjob", "x=1"], ["run", "--", "echo", "hi"],
])
def test_cli_unreachable(cli, dead_url, argv):
    result = CliRunner().invoke(cli, argv + ["--url", dead_url] if "--" not in argv
                                else argv[:1] + ["--url", dead_url] + argv[1:])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"Error: cannot reach apsis-lite at {dead_url}: connection refused" in result.output


def test_cli_url_from_env(cli, dead_url):
    result = CliRunner().invoke(cli, ["runs"], env={"APSIS_LITE_URL": dead_url})
    assert result.exit_code == 1
    assert dead_url in result.output


def test_cli_unreachable_url_from_file(cli, xdg, dead_url):
    xdg.write_text(dead_url)
    result = CliRunner().invoke(cli, ["runs"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: cannot reach apsis-lite at {dead_url} (read from {xdg}): connection refused "
        "(is the server running? start it with 'apsis-lite serve')\n")


# --- errors caught before any request -----------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["run"], "give a job id, or a program after '--'"),
    (["run", "--"], "no program after '--'"),
    (["run", "myjob", "--", "echo"], "not both"),
    (["run", "myjob", "date"], "expected ARG=VALUE, got 'date'"),
    (["run", "myjob", "--at", "not a time at all"], "not a time"),
    (["runs", "--since", "sometime"], "Invalid value"),
    (["runs", "--limit", "0"], "Invalid value"),
])
def test_usage_errors(cli, dead_url, argv, message):
    # A dead URL: a usage error must be reported before any request is made.
    result = CliRunner().invoke(cli, argv[:1] + ["--url", dead_url] + argv[1:])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "cannot reach" not in result.output


# --- HTTP errors ---------------------------------------------------------------


class _ForeignHandler(BaseHTTPRequestHandler):
    """Some other HTTP server where apsis-lite was expected (a proxy, a wrong port)."""

    routes = {
        "/api/v1/runs": (502, "text/html", b"<html>bad gateway</html>"),
        "/api/v1/jobs": (200, "text/html", b"<html>welcome</html>"),
    }

    def do_GET(self):
        status, ctype, body = self.routes.get(self.path.split("?")[0], (404, "text/plain", b"nope"))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def foreign_server():
    server = HTTPServer(("127.0.0.1", 0), _ForeignHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_client_foreign_server(foreign_server):
    client = Client(foreign_server)
    with pytest.raises(ClientError) as exc:
        client.get("/runs", q="x")
    assert exc.value.status == 502
    assert exc.value.message == f"HTTP 502 Bad Gateway from {foreign_server}/api/v1/runs?q=x"
    with pytest.raises(ClientError) as exc:
        client.get("/jobs")
    assert exc.value.message == f"bad response from {foreign_server}: not JSON"
    with pytest.raises(ClientError) as exc:
        client.get("/runs/r1")
    assert (exc.value.status, exc.value.message) == (404, f"HTTP 404 Not Found from {foreign_server}/api/v1/runs/r1")


def test_cli_foreign_server(cli, foreign_server):
    result = CliRunner().invoke(cli, ["jobs", "--url", foreign_server])
    assert result.exit_code == 1
    assert result.output == f"Error: bad response from {foreign_server}: not JSON\n"


def test_client_against_the_real_server(cli, server, jobs_dir):
    write_job(jobs_dir, "greet", """
        params: [name]
        program: "echo hello {{ name }}"
    """)
    server.start()
    client = Client(server.url + "/", token=server.token())
    assert client.get("/alive") == {"ok": True}
    rid = client.post("/runs", {"job_id": "greet", "args": {"name": "ann"}})["run_id"]
    server.wait_run(rid)
    data, headers = client.get_bytes(f"/runs/{rid}/output", offset=0, wait=1)
    assert data == b"hello ann\n"
    # Header names look up case-insensitively.
    assert headers.get("x-output-complete") == "1" and headers.get("X-Run-State") == "success"
    with pytest.raises(ClientError) as exc:
        client.get("/runs/r999999")
    assert (exc.value.status, exc.value.message) == (404, "no run r999999")
    with pytest.raises(ClientError) as exc:
        client.get("/runs", q="state:s")
    assert exc.value.status == 400 and "ambiguous" in exc.value.message
    with pytest.raises(ClientError) as exc:
        client.post("/runs", {"job_id": "greet"})
    assert (exc.value.status, exc.value.message) == (400, "job 'greet': missing arg 'name'")
    with pytest.raises(ClientError) as exc:
        client.post(f"/runs/{rid}/stop")
    assert exc.value.status == 409 and "only a running run can be stopped" in exc.value.message
    result = CliRunner().invoke(cli, ["show", "999999", "--url", server.url, "--token", server.token()])
    assert (result.exit_code, result.output) == (1, "Error: no run r999999\n")

"""The client CLI's pure parts, and the HTTP client against tiny local servers.

End-to-end tests against the real server live elsewhere.
"""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import click
import pytest
from click.testing import CliRunner

from apsis_lite import cli_client
from apsis_lite.cli_client import (
    exit_status, format_args, format_table, format_time, normalize_run_id,
    parse_assignments, program_from_argv, register,
)
from apsis_lite.client import Client, ClientError, base_url, quote_id


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


def test_base_url(monkeypatch):
    monkeypatch.delenv("APSIS_LITE_URL", raising=False)
    assert base_url() == "http://127.0.0.1:5005"
    monkeypatch.setenv("APSIS_LITE_URL", "http://example:1234/")
    assert base_url() == "http://example:1234"
    assert base_url("localhost:9") == "http://localhost:9"


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
    from apsis_lite.runfilter import compile_filter

    args = {"date": "2026-11-25", "my arg": 'say "hi"', "e": ""}
    text = format_args(args)
    assert text == 'date=2026-11-25 "my arg"="say \\"hi\\"" e=""'
    _, params = compile_filter(text)
    assert params == ["date", "2026-11-25", "my arg", 'say "hi"', "e", ""]


def test_format_time():
    assert format_time("2026-11-25T09:00:00Z", utc=True) == "2026-11-25 09:00:00Z"
    assert format_time(None) == ""
    local = format_time("2026-11-25T09:00:00Z")
    assert len(local) == len("2026-11-25 09:00:00")


# --- exit statuses ---------------------------------------------------------


@pytest.mark.parametrize("run, code, note", [
    ({"run_id": "r1", "state": "success", "exit_code": 0}, 0, None),
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


# --- HTTP errors -----------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    routes = {
        "/api/v1/runs/r9": (404, "application/json", b'{"error": "no run r9"}'),
        "/api/v1/runs": (502, "text/html", b"<html>bad gateway</html>"),
        "/api/v1/jobs": (200, "application/json", b'{"items": [], "next": null}'),
    }

    def do_GET(self):
        status, ctype, body = self.routes.get(self.path.split("?")[0], (500, "text/plain", b""))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def tiny_server():
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_client_http_errors(tiny_server):
    client = Client(tiny_server)
    assert client.get("/jobs", q=None) == {"items": [], "next": None}
    with pytest.raises(ClientError) as exc:
        client.get("/runs/r9")
    assert (exc.value.message, exc.value.status) == ("no run r9", 404)
    with pytest.raises(ClientError) as exc:
        client.get("/runs", q="x")
    assert exc.value.status == 502
    assert exc.value.message.startswith("HTTP 502 Bad Gateway from ")


def test_cli_http_error(cli, tiny_server):
    result = CliRunner().invoke(cli, ["show", "9", "--url", tiny_server])
    assert result.exit_code == 1
    assert result.output == "Error: no run r9\n"


# --- `run` argument handling and exit status (a fake client, no server) -----


class FakeClient:
    """Stands in for Client: records the POST, plays back output, ends in ``final``."""

    def __init__(self, final, chunks=(b"hello\n",)):
        self.final, self.chunks, self.posted = final, list(chunks), None

    def __call__(self, url=None):
        return self

    def post(self, path, jso=None):
        self.posted = (path, jso)
        return {"run_id": "r7", "state": "starting", "times": {}}

    def get_bytes(self, path, **params):
        assert path == "/runs/r7/output"
        if self.chunks:
            return self.chunks.pop(0), {}
        return b"", {"X-Output-Complete": "1", "X-Run-State": self.final["state"]}

    def get(self, path, **params):
        return {"run_id": "r7", **self.final}


@pytest.fixture
def fake(monkeypatch):
    def make(final, **kw):
        client = FakeClient(final, **kw)
        monkeypatch.setattr(cli_client, "Client", client)
        return client
    return make


def test_run_program_after_dashes(cli, fake):
    client = fake({"state": "success", "exit_code": 0})
    result = CliRunner().invoke(cli, ["run", "--", "grep", "--help", "x=1"])
    assert result.exit_code == 0, result.output
    assert client.posted == ("/runs", {"program": ["grep", "--help", "x=1"], "time": "now"})
    assert result.stdout == "hello\n"


def test_run_shell_command(cli, fake):
    client = fake({"state": "failure", "exit_code": 4})
    result = CliRunner().invoke(cli, ["run", "--no-wait", "--", "false || exit 4"])
    assert result.exit_code == 0
    assert result.stdout == "r7\n"
    assert client.posted[1]["program"] == "false || exit 4"


def test_run_job_with_args(cli, fake):
    client = fake({"state": "failure", "exit_code": 4})
    result = CliRunner().invoke(cli, ["run", "etl/load prices", "date=2026-11-25", "--at", "now"])
    assert client.posted[1]["job_id"] == "etl/load prices"
    assert client.posted[1]["args"] == {"date": "2026-11-25"}
    assert client.posted[1]["time"].endswith("Z")
    assert result.exit_code == 4


def test_run_killed_by_signal(cli, fake):
    fake({"state": "failure", "exit_code": None, "signal": "SIGTERM"})
    result = CliRunner().invoke(cli, ["run", "--", "sleep", "100"])
    assert result.exit_code == 143
    assert "r7: failure: killed by SIGTERM" in result.stderr


def test_run_error_state(cli, fake):
    fake({"state": "error", "message": "program not found: nope"}, chunks=())
    result = CliRunner().invoke(cli, ["run", "--", "nope"])
    assert result.exit_code == 1
    assert result.stderr == "r7: error: program not found: nope\n"


@pytest.mark.parametrize("argv, message", [
    (["run"], "give a job id, or a program after '--'"),
    (["run", "--"], "no program after '--'"),
    (["run", "myjob", "--", "echo"], "not both"),
    (["run", "myjob", "date"], "expected ARG=VALUE, got 'date'"),
    (["run", "myjob", "--at", "not a time at all"], "not a time"),
])
def test_run_usage_errors(cli, fake, argv, message):
    fake({"state": "success"})
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2
    assert message in result.output

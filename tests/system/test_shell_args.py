"""Hostile run args through the real server: ``shquote`` and ``"$APSIS_ARG_x"`` keep them inert.

A run's args come from whoever calls the API. Each job here prints its arg
with ``printf %s``; the arg tries to run ``touch FILE`` in every way bash
knows. The file must never appear, and the program must print the arg's
exact text. The unquoted ``{{ value }}`` job shows the danger is real.
"""

import json

import pytest

from conftest import write_job


def hostile_values(marker):
    """Args that run ``touch marker`` if pasted into a shell command as they are."""
    return [
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"x; touch {marker}",
        f"x' ; touch {marker}; echo '",
        f'x" ; touch {marker}; echo "',
        f"x\ntouch {marker}",
        f"'$(touch {marker})'",
        f"\"$(touch {marker})\"",
        f"x && touch {marker} || touch {marker}",
        f"x | touch {marker}",
        f"$'\\x41' > {marker}",
        f"{{a,b}} ~ * ? [x] # \\ $HOME ${{HOME}} {marker}",
        "",
        "'",
    ]


def output(server, run_id):
    status, body, _ = server.request("GET", f"/api/v1/runs/{run_id}/output")
    assert status == 200, body
    return body


@pytest.fixture
def printer(server, jobs_dir):
    write_job(jobs_dir, "quoted", """
        params: [value]
        program: "printf %s {{ value | shquote }}"
    """)
    write_job(jobs_dir, "from-env", """
        params: [value]
        program: 'printf %s "$APSIS_ARG_value"'
    """)
    write_job(jobs_dir, "raw", """
        params: [value]
        program: "printf %s {{ value }}"
    """)
    write_job(jobs_dir, "dated", """
        params:
          - {name: date, pattern: '\\d{4}-\\d{2}-\\d{2}'}
        program: "echo {{ date }}"
    """)
    return server.start()


@pytest.mark.parametrize("job_id", ["quoted", "from-env"])
def test_hostile_args_are_printed_literally_and_never_run(printer, tmp_path, job_id):
    marker = tmp_path / "ran"
    for value in hostile_values(marker):
        started = printer.post("/api/v1/runs", {"job_id": job_id, "args": {"value": value}})
        run = printer.wait_run(started["run_id"])
        assert run["state"] == "success", (value, run)
        assert output(printer, run["run_id"]) == value.encode(), value
        assert not marker.exists(), f"{value!r} ran a command"


def test_the_unquoted_form_does_run_what_an_arg_holds(printer, tmp_path):
    marker = tmp_path / "ran"
    run = printer.post("/api/v1/runs", {"job_id": "raw", "args": {"value": f"$(touch {marker})"}})
    printer.wait_run(run["run_id"])
    assert marker.exists()


def test_the_bound_command_shows_the_quoted_arg(printer):
    run = printer.post("/api/v1/runs", {"job_id": "quoted", "args": {"value": "it's $(x)"}})
    assert run["program"]["command"] == "printf %s 'it'\"'\"'s $(x)'"


def test_an_arg_that_does_not_match_its_params_pattern_is_refused(printer):
    before = printer.runs()
    status, body, _ = printer.request("POST", "/api/v1/runs",
                                      {"job_id": "dated", "args": {"date": "2026-12-03 $(id)"}})
    assert status == 400
    error = json.loads(body)["error"]
    assert error == ("job 'dated': arg 'date' does not match the param's pattern "
                     "'\\d{4}-\\d{2}-\\d{2}': '2026-12-03 $(id)'"), error
    assert printer.runs() == before
    started = printer.post("/api/v1/runs", {"job_id": "dated", "args": {"date": "2026-12-03"}})
    run = printer.wait_run(started["run_id"])
    assert run["state"] == "success" and output(printer, run["run_id"]) == b"2026-12-03\n"

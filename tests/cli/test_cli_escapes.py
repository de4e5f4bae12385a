"""The CLI prints job ids, args and messages as text: control characters come out escaped.

A job file named with an escape sequence and a run whose arg holds others,
through the real server and the real CLI (subprocesses reading its bytes).
Only ``apsis-lite output`` prints the program's bytes as they are.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, write_job

TITLE = "\x1b]0;pwned\x07"          # retitles the terminal
JOB_ID = f"evil{TITLE}job"
ARG = f"who{TITLE}\r\u202e"          # and returns the cursor, and reverses the text
SHOWN_ID = "evil\\x1b]0;pwned\\x07job"
SHOWN_ARG = "who\\x1b]0;pwned\\x07\\x0d\\u202e"


def cli(server, *args):
    env = dict(os.environ, APSIS_LITE_URL=server.url, APSIS_LITE_TOKEN=server.token())
    done = subprocess.run([sys.executable, "-m", "apsis_lite", *args], capture_output=True,
                          timeout=60, env=env, cwd=ROOT)
    assert b"Traceback" not in done.stderr, done.stderr
    return done


def no_controls(data: bytes) -> bool:
    return all(b >= 0x20 or b in b"\t\n" for b in data) and b"\x7f" not in data and \
        "\u202e" not in data.decode()


@pytest.fixture
def evil(server, jobs_dir):
    write_job(jobs_dir, JOB_ID, "params: [who]\nprogram: 'printf %s \"$APSIS_ARG_who\"'\n")
    server.start()
    run = server.post("/api/v1/runs", {"job_id": JOB_ID, "args": {"who": ARG}})
    server.wait_run(run["run_id"])
    return server, run["run_id"]


@pytest.mark.parametrize("command", [["jobs"], ["runs"], ["show"], ["job"], ["explain"]])
def test_listings_and_details_escape_control_characters(evil, command):
    server, run_id = evil
    args = {"show": [run_id], "explain": [run_id], "job": [JOB_ID]}.get(command[0], [])
    done = cli(server, *command, *args)
    assert done.returncode == 0, done.stderr
    assert no_controls(done.stdout) and no_controls(done.stderr), done.stdout
    text = done.stdout.decode()
    assert SHOWN_ID in text or command[0] == "explain", text


def test_args_are_shown_escaped(evil):
    server, run_id = evil
    shown = cli(server, "show", run_id).stdout.decode()
    assert SHOWN_ARG in shown, shown


def test_error_messages_escape_control_characters(evil):
    server, _ = evil
    done = cli(server, "run", JOB_ID, f"other={TITLE}")
    assert done.returncode == 1
    assert no_controls(done.stderr), done.stderr
    assert "evil\\x1b]0;pwned\\x07job" in done.stderr.decode()


def test_json_output_is_escaped_json(evil):
    server, _ = evil
    done = cli(server, "runs", "--json")
    assert done.returncode == 0 and no_controls(done.stdout)
    runs = json.loads(done.stdout)
    runs = runs["items"] if isinstance(runs, dict) else runs
    assert [r["args"] for r in runs] == [{"who": ARG}]


def test_output_prints_the_programs_bytes_as_they_are(evil):
    server, run_id = evil
    done = cli(server, "output", run_id)
    assert (done.returncode, done.stdout) == (0, ARG.encode())


def test_check_jobs_names_the_file_escaped(jobs_dir):
    write_job(jobs_dir, JOB_ID, "program: {type: nope}\n")
    done = subprocess.run([sys.executable, "-m", "apsis_lite", "check-jobs", str(jobs_dir)],
                          capture_output=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1 and no_controls(done.stderr), done.stderr
    assert f"{jobs_dir}/{SHOWN_ID}.yaml: program.type:".encode() in done.stderr

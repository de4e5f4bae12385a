"""apsis's argument orders and several run ids per operation, with the real CLI
against one real server; the word sorting itself, without one."""

import json
import re
from datetime import datetime, timedelta, timezone

import click
import pytest
from hypothesis import given, strategies as st

from apsis_lite.cli.arguments import parse_when, runs_and_word
from conftest import Server, _kill_agents, short_tmpdir, write_job

RUN = re.compile(r"r\d+")


@pytest.fixture(scope="module")
def srv():
    jobs, data = short_tmpdir("al-jobs-"), short_tmpdir("al-data-")
    write_job(jobs, "slow", "params: [n]\nprogram: 'sleep 30'\n")
    write_job(jobs, "quick", "program: 'echo quick'\n")
    server = Server(jobs, data).start()
    yield server
    server.stop()
    _kill_agents(data)


def run_cli(srv, *args):
    result = srv.cli(*args)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def started(srv, count):
    """``count`` running runs of 'slow', made with apsis's ``schedule TIME JOB ARGS --count``."""
    result = run_cli(srv, "schedule", "now", "slow", "n=1", "--count", str(count))
    assert result.returncode == 0, result.stderr
    ids = RUN.findall(result.stdout)
    assert len(ids) == count and all("scheduled for" in line for line in result.stdout.splitlines())
    for rid in ids:
        srv.wait_run(rid, ("running",))
    return ids


def test_signal_and_stop_take_several_runs_in_either_order(srv):
    a, b, c = started(srv, 3)
    result = run_cli(srv, "signal", "USR1", a, b)  # apsis's order
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{a}: sent USR1 (running)\n{b}: sent USR1 (running)\n"
    assert srv.wait_run(a)["signal"] == "SIGUSR1" and srv.wait_run(b)["state"] == "failure"
    result = run_cli(srv, "stop", a, c)  # a is over: refused; c is stopped all the same
    assert result.returncode == 1
    assert f"{c}: running -> stopping" in result.stdout
    assert re.search(rf"^{a}: run {a} is failure; only a running run can be stopped$", result.stderr, re.M)
    assert srv.wait_run(c)["state"] in ("failure", "success")


def test_mark_takes_the_state_first_or_last(srv):
    run = srv.post("/api/v1/runs", {"job_id": "quick", "args": {}, "time": "now"})
    other = srv.post("/api/v1/runs", {"job_id": "quick", "args": {}, "time": "now"})
    a, b = run["run_id"], other["run_id"]
    srv.wait_run(a), srv.wait_run(b)
    result = run_cli(srv, "mark", "failure", a, b.lstrip("r"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{a}: success -> failure\n{b}: success -> failure\n"
    marked = json.loads(run_cli(srv, "mark", a, b, "success", "--json").stdout)
    assert [m["state"] for m in marked] == ["success", "success"]


@pytest.mark.parametrize("args, message", [
    (["mark", "bogus", "r1", "success"], "expected one state and run ids (r12 or 12), got 'bogus', 'success'"),
    (["mark", "r1", "success", "r2"], "the state goes first or last"),
    (["signal", "15", "r1"], "no signal name given (a number is read as a run id)"),
    (["signal", "TERM"], "no run id given"),
    (["start"], "Missing argument 'RUN...'"),
    (["schedule", "notatime", "quick", "a=b"], "'notatime' is not a time"),
])
def test_a_word_out_of_place_is_a_usage_error_naming_it(srv, args, message):
    result = run_cli(srv, *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_apsis_run_of_a_run_id_points_to_show(srv):
    result = run_cli(srv, "run", "r1")
    assert result.returncode == 1
    assert "to see run r1, use 'apsis-lite show r1'" in result.stderr


IDS = st.lists(st.integers(1, 10**6).map(lambda n: f"r{n}") | st.integers(1, 10**6).map(str), min_size=1, max_size=5)
WORDS = st.sampled_from(["success", "failure", "skipped", "error", "TERM", "SIGUSR1", "KILL", "rx", "r", "r1x"])


@given(ids=IDS, word=WORDS)
def test_the_other_word_may_come_first_or_last(ids, word):
    expected = ([i if i.startswith("r") else f"r{i}" for i in ids], word)
    assert runs_and_word([word, *ids], "state", "") == expected
    assert runs_and_word([*ids, word], "state", "") == expected
    if len(ids) > 1:
        with pytest.raises(click.UsageError):
            runs_and_word([ids[0], word, *ids[1:]], "state", "")


def test_a_time_of_day_for_schedule_is_the_next_one():
    now = datetime.now(timezone.utc)
    for text in ("00:00", "23:59:59", "12:00"):
        when = datetime.fromisoformat(parse_when(text, upcoming=True).replace("Z", "+00:00"))
        assert now - timedelta(seconds=1) <= when <= now + timedelta(days=1, hours=2)

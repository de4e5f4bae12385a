"""The ``apsis-lite`` client commands end to end: the real CLI, as a subprocess,
against a real server process, running real programs. No fakes.

Every CLI call goes through ``cli()``, which checks that nothing the CLI
prints to stderr is a Python traceback.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import ROOT, write_job

GREET = """
    params: [name]
    program: "echo hello {{ name }}"
"""

# A job id with a folder and a space: it must survive URLs and the filter language.
LOAD = """
    params: [date]
    program: "echo loading {{ date }}; exit 4"
"""

DAILY = """
    params: [date]
    program: "echo report {{ date }}"
    schedule:
      type: cron
      expr: "30 16 * * *"
      tz: UTC
    metadata:
      description: The daily report.
"""

RUN_ID = re.compile(r"r\d+")


def cli(server, *args, **kw):
    """``apsis-lite ARGS...`` against ``server``; never a traceback."""
    result = server.cli(*args, **kw)
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    return result


def ok(server, *args, **kw):
    """stdout of ``apsis-lite ARGS...``, which must succeed."""
    result = cli(server, *args, **kw)
    assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
    return result.stdout


def fails(server, *args, code=1, **kw):
    """stderr of ``apsis-lite ARGS...``, which must fail with ``code``."""
    result = cli(server, *args, **kw)
    assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
    return result.stderr


def submit(server, *args):
    """``apsis-lite run --no-wait ...``: the new run's id."""
    rid = ok(server, "run", "--no-wait", *args).strip()
    assert RUN_ID.fullmatch(rid), rid
    return rid


def popen_cli(server, *args):
    """A CLI process to interact with while it runs."""
    env = dict(os.environ, APSIS_LITE_URL=server.url, APSIS_LITE_TOKEN=server.token())
    return subprocess.Popen([sys.executable, "-m", "apsis_lite", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_line(proc):
    """One line of a ``popen_cli`` process's stdout, read a byte at a time: a buffered
    ``readline()`` may take more than the line, which ``finish`` would then never see."""
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(proc.stdout.fileno(), 1)
        if not byte:
            break
        line += byte
    return line.decode()


def finish(proc, timeout=20):
    """Wait for a ``popen_cli`` process: ``(returncode, stdout, stderr)``, checked for tracebacks."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"CLI still running after {timeout} s\n{out}\n{err}") from None
    assert "Traceback" not in err, err
    return proc.returncode, out, err


def wait_output(server, rid, text, timeout=30):
    def has():
        status, body, _ = server.request("GET", f"/api/v1/runs/{rid}/output?offset=0")
        return status == 200 and text.encode() in body
    server.wait_for(has, timeout=timeout, what=f"{text!r} in the output of {rid}")


@pytest.fixture
def srv(server, jobs_dir):
    """A running server with a few jobs."""
    write_job(jobs_dir, "greet", GREET)
    write_job(jobs_dir, "etl/load prices", LOAD)
    write_job(jobs_dir, "daily", DAILY)
    return server.start()


def own_runs(srv):
    """The runs a test made: the job ``daily`` also runs if the suite passes 16:30 UTC."""
    return srv.runs("!job:daily")


@pytest.fixture
def dead_url():
    """A URL on a free local port with nothing listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- run: programs -----------------------------------------------------------


def test_run_program_prints_output_and_exits_0(srv):
    result = cli(srv, "run", "--", "echo", "hello")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello\n", "")
    (run,) = own_runs(srv)
    assert run["state"] == "success" and run["adhoc"]


def test_run_passes_everything_after_dashes_to_the_program(srv):
    # Words that look like CLI options or ARG=VALUE belong to the program.
    assert ok(srv, "run", "--", "echo", "--help", "x=1", "--url", "nowhere", "a b") == "--help x=1 --url nowhere a b\n"


def test_run_exits_with_the_programs_exit_status(srv):
    result = cli(srv, "run", "--", "sh", "-c", "echo oops >&2; exit 3")
    assert result.returncode == 3
    # stdout and stderr are combined into the run's output; the CLI adds nothing.
    assert result.stdout == "oops\n"
    assert result.stderr == ""
    (run,) = own_runs(srv)
    assert (run["state"], run["exit_code"]) == ("failure", 3)


def test_run_shell_command(srv):
    assert ok(srv, "run", "--", "echo a && echo b") == "a\nb\n"
    result = cli(srv, "run", "--", "false || exit 4")
    assert result.returncode == 4


def test_run_killed_by_signal_exits_128_plus_n(srv):
    result = cli(srv, "run", "--", "sh", "-c", "kill -TERM $$")
    assert result.returncode == 128 + signal.SIGTERM
    (run,) = own_runs(srv)
    assert result.stderr == f"{run['run_id']}: failure: killed by SIGTERM\n"
    result = cli(srv, "run", "--", "sh -c 'kill -KILL $$'")
    assert result.returncode == 128 + signal.SIGKILL
    assert "failure: killed by SIGKILL" in result.stderr


def test_run_program_that_cannot_start_exits_1_with_the_reason(srv):
    result = cli(srv, "run", "--", "/no/such/program", "x")
    assert result.returncode == 1
    (run,) = own_runs(srv)
    assert run["state"] == "error"
    assert result.stderr.startswith(f"{run['run_id']}: error: ")
    assert "/no/such/program" in result.stderr


def test_run_reports_a_stop_from_elsewhere(srv):
    """`run` of a program stopped from elsewhere reports the signal and its exit status."""
    proc = popen_cli(srv, "run", "--", "sleep", "100")
    try:
        run = srv.wait_for(lambda: next((r for r in own_runs(srv) if r["state"] == "running"), None),
                           what="a running run")
        rid = run["run_id"]
        assert ok(srv, "stop", rid) in (f"{rid}: running -> stopping\n", f"{rid}: running -> failure\n")
        code, out, err = finish(proc)
    finally:
        proc.kill()
    # Ended by the stop's own signal: a success, as apsis has it, saying so.
    assert code == 0
    assert out == ""
    assert err == f"{rid}: success: killed by SIGTERM (stopped): it was asked to stop with that signal\n"


def test_run_interrupted_leaves_the_run_going(srv):
    proc = popen_cli(srv, "run", "--", "sh", "-c", "echo started; sleep 100")
    try:
        assert read_line(proc) == "started\n"
        proc.send_signal(signal.SIGINT)
        code, _, err = finish(proc)
    finally:
        proc.kill()
    (run,) = own_runs(srv)
    rid = run["run_id"]
    assert code == 130
    assert f"stopped waiting; {rid} carries on (see it with 'apsis-lite output {rid} --follow')" in err
    assert srv.get(f"/api/v1/runs/{rid}")["state"] == "running"
    ok(srv, "stop", rid)
    srv.wait_run(rid)


# --- run: jobs ---------------------------------------------------------------


def test_run_job_with_args(srv):
    result = cli(srv, "run", "greet", "name=ann")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello ann\n", "")
    (run,) = own_runs(srv)
    assert (run["job_id"], run["args"], run["state"]) == ("greet", {"name": "ann"}, "success")


def test_run_job_id_with_folder_and_space_and_exit_status(srv):
    result = cli(srv, "run", "etl/load prices", "date=2026-11-25", "--at", "now")
    assert result.returncode == 4
    assert result.stdout == "loading 2026-11-25\n"
    (run,) = own_runs(srv)
    assert run["job_id"] == "etl/load prices" and run["args"] == {"date": "2026-11-25"}


def test_run_job_bad_args_is_a_readable_error(srv):
    cases = [
        (["run", "greet"], "Error: job 'greet': missing arg 'name'"),
        (["run", "greet", "name=x", "colour=red"], "Error: job 'greet': unknown arg 'colour'"),
        (["run", "no/such/job"], "Error: no job 'no/such/job' (to run a program, put it after '--': "
                                 "apsis-lite run -- no/such/job)"),
    ]
    for argv, message in cases:
        err = fails(srv, *argv)
        assert err.startswith(message), err
        assert len(err.splitlines()) == 1, err
    assert own_runs(srv) == []


def test_run_no_wait_prints_the_run_id(srv):
    rid = submit(srv, "--", "false || exit 4")
    run = srv.wait_run(rid)
    assert (run["state"], run["exit_code"]) == ("failure", 4)
    assert srv.get(f"/api/v1/runs/{rid}")["program"]["command"] == "false || exit 4"


def test_run_at_a_future_time_is_scheduled(srv):
    rid = submit(srv, "--at", "2099-01-01T00:00:00Z", "greet", "name=later")
    run = srv.get(f"/api/v1/runs/{rid}")
    assert run["state"] == "scheduled"
    assert run["times"]["schedule"] == "2099-01-01T00:00:00Z"
    rid = submit(srv, "--at", "+1h", "--", "echo", "later")
    run = srv.get(f"/api/v1/runs/{rid}")
    assert run["state"] == "scheduled"
    due = datetime.fromisoformat(run["times"]["schedule"].replace("Z", "+00:00"))
    assert abs((due - datetime.now(timezone.utc)) - timedelta(hours=1)) < timedelta(minutes=1)
    err = fails(srv, "run", "--at", "not a time at all", "greet", "name=x", code=2)
    assert "not a time" in err
    assert len(own_runs(srv)) == 2


def test_run_at_a_past_time_of_day_runs_tomorrow_and_a_past_date_needs_past_ok(srv, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")  # the CLI reads a time of day in the local zone
    now = datetime.now(timezone.utc)
    earlier = (now - timedelta(minutes=2)).replace(second=0, microsecond=0)
    result = cli(srv, "run", "--no-wait", "--at", f"{earlier:%H:%M}", "--", "echo", "tomorrow")
    assert result.returncode == 0, result.stderr
    rid = result.stdout.strip()
    run = srv.get(f"/api/v1/runs/{rid}")
    due = earlier + timedelta(days=1)  # its next occurrence (today's, when 'earlier' was yesterday)
    assert (run["state"], run["times"]["schedule"]) == ("scheduled", f"{due:%Y-%m-%dT%H:%M:%SZ}")
    day = "tomorrow" if due.date() > now.date() else "today"
    assert result.stderr == f"{rid}: scheduled for {due:%a %Y-%m-%d %H:%M:%S} UTC ({day})\n"

    past = f"{now - timedelta(hours=1):%Y-%m-%d %H:%M:%S}"
    err = fails(srv, "run", "--at", past, "--", "echo", "past", code=2)
    assert f"'{past}' is in the past" in err and "--past-ok" in err
    assert "Error: --past-ok goes with --at" in fails(srv, "run", "--past-ok", "--", "echo", "x", code=2)
    assert len(own_runs(srv)) == 1, "a refused time makes no run"
    result = cli(srv, "run", "--at", past, "--past-ok", "--", "echo", "past")
    assert (result.returncode, result.stdout) == (0, "past\n"), result.stderr
    (late,) = [r for r in own_runs(srv) if r["run_id"] != rid]
    assert late["state"] == "success" and late["times"]["schedule"] == past.replace(" ", "T") + "Z"


# --- runs, show, output ------------------------------------------------------


@pytest.fixture
def three_runs(srv):
    """ann (success), bob (success), and an ad hoc program that failed: newest first."""
    rids = [submit(srv, "greet", "name=ann"), submit(srv, "greet", "name=bob"),
            submit(srv, "--", "exit 3")]
    for rid in rids:
        srv.wait_run(rid)
    return rids[::-1]


def _table(stdout):
    lines = stdout.splitlines()
    return lines[0].split(), [line.split() for line in lines[1:]]


def test_runs_table_and_json(srv, three_runs):
    failed, bob, ann = three_runs
    headers, rows = _table(ok(srv, "runs"))
    assert headers == ["RUN", "JOB", "ARGS", "STATE", "SCHEDULED", "ELAPSED"]
    assert [r[0] for r in rows] == [failed, bob, ann]
    assert rows[0][1].startswith("adhoc/") and rows[0][2] == "failure"
    assert rows[1][:4] == [bob, "greet", "name=bob", "success"]
    assert rows[2][:4] == [ann, "greet", "name=ann", "success"]
    page = json.loads(ok(srv, "runs", "--json"))
    assert [r["run_id"] for r in page["items"]] == three_runs
    assert page["next"] is None
    assert page["items"][1]["args"] == {"name": "bob"}


def test_runs_filters(srv, three_runs):
    failed, bob, ann = three_runs

    def ids(*words):
        return [r["run_id"] for r in json.loads(ok(srv, "runs", "--json", *words))["items"]]

    assert ids("state:success") == [bob, ann]
    assert ids("state:fail") == [failed]
    assert ids("name=ann") == [ann]
    assert ids("name=") == [bob, ann]
    assert ids("!name=ann") == [failed, bob]
    assert ids("job:greet", "state:succ") == [bob, ann]
    assert ids("GREET") == [bob, ann]
    assert ids("--limit", "1") == [failed]
    assert ids("--since", "-1h") == three_runs
    assert ids("--until", "-1h") == []
    # A filter the server refuses is its one-line reason.
    assert "ambiguous" in fails(srv, "runs", "state:s")
    # The table says when there are more runs than fit on a page.
    result = cli(srv, "runs", "--limit", "2")
    assert len(result.stdout.splitlines()) == 3
    assert "more runs" in result.stderr
    assert len(ok(srv, "runs", "--limit", "2", "--all").splitlines()) == 4


def test_runs_filter_on_job_with_space(srv):
    rid = submit(srv, "etl/load prices", "date=2026-11-25")
    submit(srv, "greet", "name=prices")
    srv.wait_run(rid)
    ids = [r["run_id"] for r in json.loads(ok(srv, "runs", "--json", 'job:"etl/load prices"'))["items"]]
    assert ids == [rid]
    # The table's ARGS column reads back as a filter.
    headers, rows = _table(ok(srv, "runs", "date=2026-11-25"))
    assert [r[0] for r in rows] == [rid]


def test_show(srv, three_runs):
    _, bob, _ = three_runs
    out = ok(srv, "show", bob)
    fields = dict(line.split(None, 1) for line in out.split("\n\n")[0].splitlines())
    assert fields["run"] == bob
    assert fields["job"] == "greet"
    assert fields["args"] == "name=bob"
    assert fields["state"] == "success"
    assert fields["exit"] == "code  0"
    assert fields["output"] == "10 bytes"
    assert "\ntimes:\n" in out
    log = out.split("\nlog:\n")[1].splitlines()
    assert log[0].split() == ["TIME", "STATE", "MESSAGE"]
    states = [line.split()[2] for line in log[1:]]
    assert states == ["scheduled", "waiting", "starting", "running", "success"]
    # A bare number is a run id too.
    assert ok(srv, "show", bob[1:]) == out
    shown = json.loads(ok(srv, "show", "--json", bob))
    assert shown["run_id"] == bob and shown["state"] == "success"
    assert [e["state"] for e in shown["log"] if e["state"]][-1] == "success"


def test_output(srv, three_runs):
    failed, bob, _ = three_runs
    assert ok(srv, "output", bob) == "hello bob\n"
    assert ok(srv, "output", bob[1:]) == "hello bob\n"
    assert ok(srv, "output", "--follow", bob) == "hello bob\n"
    assert ok(srv, "output", failed) == ""


def test_output_follow_streams_a_running_program(srv, tmp_path):
    go = tmp_path / "go"
    rid = submit(srv, "--", f"echo line 1; while [ ! -e {go} ]; do sleep 0.01; done; "
                            "for i in 2 3 4 5; do echo line $i; sleep 0.05; done")
    srv.wait_run(rid, states=("running",))
    proc = popen_cli(srv, "output", "--follow", rid)
    try:
        first = read_line(proc)
        # Printed while the program is still going (it waits for us), not after it ended.
        state_then = srv.get(f"/api/v1/runs/{rid}")["state"]
        go.touch()
        code, rest, err = finish(proc)
    finally:
        proc.kill()
    assert state_then == "running"
    assert code == 0 and err == ""
    # Ends with the run, and prints each line once, in order.
    assert first + rest == "".join(f"line {i}\n" for i in range(1, 6))
    assert srv.get(f"/api/v1/runs/{rid}")["state"] == "success"


def test_output_follow_of_a_scheduled_run_waits_for_it(srv):
    rid = submit(srv, "--at", "2099-01-01T00:00:00Z", "greet", "name=early")
    proc = popen_cli(srv, "output", "-f", rid)
    try:
        time.sleep(0.3)
        assert proc.poll() is None
        ok(srv, "start", rid)
        code, out, err = finish(proc)
    finally:
        proc.kill()
    assert (code, out, err) == (0, "hello early\n", "")


# --- operations --------------------------------------------------------------


def test_stop_a_running_run(srv):
    rid = submit(srv, "--", "sleep", "100")
    srv.wait_run(rid, states=("running",))
    out = ok(srv, "stop", rid)
    assert out in (f"{rid}: running -> stopping\n", f"{rid}: running -> failure\n")
    run = srv.wait_run(rid)
    assert (run["state"], run["signal"]) == ("success", "SIGTERM")  # ended by the stop's signal
    # Stopping it again is refused, with the server's reason.
    err = fails(srv, "stop", rid)
    assert err == f"Error: run {rid} is success; only a running run can be stopped\n"
    # --json prints the run as the server returned it.
    rid = submit(srv, "--", "sleep", "100")
    srv.wait_run(rid, states=("running",))
    run = json.loads(ok(srv, "stop", "--json", rid))
    assert run["run_id"] == rid and run["state"] in ("stopping", "failure")
    srv.wait_run(rid)


def test_signal(srv):
    rid = submit(srv, "--", "trap 'echo got usr1; exit 7' USR1; echo ready; while true; do sleep 0.05; done")
    srv.wait_run(rid, states=("running",))
    wait_output(srv, rid, "ready")
    err = fails(srv, "signal", rid, "NOSUCH")
    assert err.startswith("Error: ") and "NOSUCH" in err and len(err.splitlines()) == 1
    assert ok(srv, "signal", rid, "USR1") == f"{rid}: sent USR1 (running)\n"
    run = srv.wait_run(rid)
    assert (run["state"], run["exit_code"]) == ("failure", 7)
    assert "got usr1" in ok(srv, "output", rid)
    assert "only a running run can be signalled" in fails(srv, "signal", rid, "USR1")


def test_rerun(srv):
    old = submit(srv, "greet", "name=ann")
    srv.wait_run(old)
    out = ok(srv, "rerun", old)
    m = re.fullmatch(rf"{old}: rerun as (r\d+) \((\w+)\)\n", out)
    assert m, out
    new = m.group(1)
    assert new != old
    run = srv.wait_run(new)
    assert (run["job_id"], run["args"], run["state"]) == ("greet", {"name": "ann"}, "success")
    assert (run["rerun_of"], run["rerun_group"]) == (old, old)
    assert ok(srv, "output", new) == "hello ann\n"
    # A rerun of the rerun stays in the first run's group.
    newer = json.loads(ok(srv, "rerun", "--json", new))
    assert (newer["rerun_of"], newer["rerun_group"]) == (new, old)
    srv.wait_run(newer["run_id"])


def test_rerun_of_an_unfinished_run_is_refused(srv):
    rid = submit(srv, "--at", "+1h", "greet", "name=x")
    assert "only a finished run can be rerun" in fails(srv, "rerun", rid)


def test_skip_and_start_a_future_run(srv):
    a = submit(srv, "--at", "+1h", "greet", "name=a")
    b = submit(srv, "--at", "+1h", "greet", "name=b")
    assert ok(srv, "skip", a) == f"{a}: scheduled -> skipped\n"
    assert srv.get(f"/api/v1/runs/{a}")["state"] == "skipped"
    assert "only a scheduled or waiting run can be skipped" in fails(srv, "skip", a)
    assert "only a scheduled or waiting run can be started" in fails(srv, "start", a)
    out = ok(srv, "start", b)
    assert re.fullmatch(rf"{b}: scheduled -> (starting|running|success)\n", out), out
    assert srv.wait_run(b)["state"] == "success"
    assert ok(srv, "output", b) == "hello b\n"


def test_mark(srv):
    rid = submit(srv, "greet", "name=ann")
    srv.wait_run(rid)
    assert ok(srv, "mark", rid, "failure") == f"{rid}: success -> failure\n"
    assert srv.get(f"/api/v1/runs/{rid}")["state"] == "failure"
    marked = json.loads(ok(srv, "mark", "--json", rid, "success"))
    assert marked["state"] == "success"
    err = fails(srv, "mark", rid, "running")
    assert err.startswith("Error: ") and "cannot mark a run as running" in err
    assert "unknown state" in fails(srv, "mark", rid, "nosuchstate")


def test_unknown_run(srv):
    for argv in (
        ["show", "r999999"], ["output", "r999999"], ["output", "999999", "--follow"],
        ["stop", "r999999"], ["signal", "r999999", "TERM"], ["rerun", "r999999"],
        ["skip", "r999999"], ["start", "r999999"], ["mark", "r999999", "success"],
    ):
        assert fails(srv, *argv) == "Error: no run r999999\n", argv


def test_not_a_run_id(srv):
    err = fails(srv, "show", "bogus")
    assert err.startswith("Error: ") and "not a run id" in err


# --- jobs --------------------------------------------------------------------


def test_jobs_lists_jobs_and_load_errors(server, jobs_dir):
    write_job(jobs_dir, "greet", GREET)
    write_job(jobs_dir, "daily", DAILY)
    write_job(jobs_dir, "bad/broken", """
        program:
          type: shell
          comand: "typo"
    """)
    server.start()
    result = cli(server, "jobs")
    assert result.returncode == 0
    headers, rows = _table(result.stdout)
    assert headers == ["JOB", "PARAMS", "SCHEDULE"]
    assert [r[0] for r in rows] == ["daily", "greet"]
    assert rows[0][1] == "date" and "cron" in result.stdout
    assert "job file(s) failed to load" in result.stderr
    assert "broken.yaml: program.comand: unknown key" in result.stderr
    # Only the table on stdout, so it can be piped.
    assert "broken" not in result.stdout
    # TEXT matches ids, descriptions and labels.
    assert [r[0] for r in _table(ok(server, "jobs", "gre"))[1]] == ["greet"]
    assert [r[0] for r in _table(ok(server, "jobs", "daily report"))[1]] == ["daily"]
    assert _table(ok(server, "jobs", "nothing-like-this"))[1] == []
    page = json.loads(ok(server, "jobs", "--json"))
    assert [j["job_id"] for j in page["items"]] == ["daily", "greet"]
    assert any(e["path"].endswith("broken.yaml") for e in page["errors"])


def test_job_shows_next_due_times(srv):
    before = datetime.now(timezone.utc)
    out = ok(srv, "job", "daily", "--utc")
    assert "job        daily" in out
    assert "params     date" in out
    assert "cron" in out
    assert "description=The daily report." in out
    nexts = out.split("\nnext runs:\n")[1].splitlines()
    assert len(nexts) == 10
    times = [datetime.strptime(" ".join(line.split()[:2]), "%Y-%m-%d %H:%M:%SZ") for line in nexts]
    assert all(t.strftime("%H:%M:%S") == "16:30:00" for t in times)
    assert times == sorted(times) and len(set(times)) == 10
    first = times[0].replace(tzinfo=timezone.utc)
    assert before < first <= before + timedelta(days=1, minutes=1)  # the first one after now
    for t, line in zip(times, nexts):
        assert f"date={t:%Y-%m-%d}" in line.split()
    detail = json.loads(ok(srv, "job", "--json", "etl/load prices"))
    assert detail["job_id"] == "etl/load prices" and detail["next_times"] == []
    assert fails(srv, "job", "no/such").startswith("Error: no job 'no/such'")


def test_job_next_times_show_the_args_runs_will_get(srv):
    nexts = json.loads(ok(srv, "job", "--json", "daily"))["next_times"]
    assert nexts and all(set(n["args"]) == {"date"} for n in nexts), nexts[0]


# --- finding the server ------------------------------------------------------


def _cli_env(**env):
    """The CLI with exactly these APSIS_LITE_URL / XDG_DATA_HOME settings."""
    full = {k: v for k, v in os.environ.items() if k not in ("APSIS_LITE_URL", "XDG_DATA_HOME")}
    full.update({k: v for k, v in env.items() if v is not None})
    return full


def _run_cli(*args, env):
    result = subprocess.run([sys.executable, "-m", "apsis_lite", *args], capture_output=True,
                            text=True, timeout=30, env=env, cwd=ROOT)
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.mark.parametrize("argv", [
    ["runs"], ["jobs"], ["job", "a/b"], ["show", "r1"], ["output", "1", "-f"], ["stop", "r1"],
    ["run", "greet", "name=x"], ["run", "--", "echo", "hi"],
])
def test_unreachable_server(dead_url, argv):
    result = _run_cli(*argv, env=_cli_env(APSIS_LITE_URL=dead_url))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: cannot reach apsis-lite at {dead_url}: connection refused "
        "(is the server running? start it with 'apsis-lite serve')\n")


def test_url_from_server_url_file(srv, tmp_path, dead_url):
    """With no --url and no $APSIS_LITE_URL, the CLI reads DATA/server.url, as the server writes it."""
    (tmp_path / "apsis-lite").mkdir()
    url_file = tmp_path / "apsis-lite" / "server.url"
    url_file.write_bytes((srv.data_dir / "server.url").read_bytes())
    (tmp_path / "apsis-lite" / "token").write_bytes((srv.data_dir / "token").read_bytes())
    env = _cli_env(XDG_DATA_HOME=str(tmp_path))
    result = _run_cli("run", "greet", "name=file", env=env)
    assert (result.returncode, result.stdout) == (0, "hello file\n"), result.stderr
    # --url and $APSIS_LITE_URL come first.
    result = _run_cli("runs", "--url", dead_url, env=env)
    assert result.returncode == 1 and dead_url in result.stderr
    result = _run_cli("runs", env=_cli_env(XDG_DATA_HOME=str(tmp_path), APSIS_LITE_URL=dead_url))
    assert result.returncode == 1 and dead_url in result.stderr
    # A file left behind by a server that is gone says where the URL came from.
    url_file.write_text(dead_url + "\n")
    result = _run_cli("runs", env=env)
    assert result.returncode == 1
    assert result.stderr == (
        f"Error: cannot reach apsis-lite at {dead_url} (read from {url_file}): connection refused "
        "(is the server running? start it with 'apsis-lite serve')\n")

"""The offline commands, as a user runs them: ``check-jobs`` warnings, ``schedule`` and ``try``.

Every command runs as a real subprocess over a real jobs folder; nothing
needs a server. Expected times are written out by hand from the calendar.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from conftest import ROOT, write_job

from apsis_lite.cli.offline import due_times, find_job, folder_warnings, run_locally, zone_changes
from apsis_lite.model.jobs import load_jobs_dir
from apsis_lite.model.programs import parse_program
from apsis_lite.timeutil import get_tz

UTC = timezone.utc
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def apsis(*args, env=None, timeout=30):
    """``apsis-lite ARGS...`` as a subprocess; never a traceback."""
    result = subprocess.run([sys.executable, "-m", "apsis_lite", *map(str, args)],
                            capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                            env={**os.environ, **(env or {})})
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    return result


def ok(*args, **kw):
    result = apsis(*args, **kw)
    assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
    return result.stdout


def fails(code, *args, **kw):
    """stderr of a command that must exit with ``code``; a usage error is one line."""
    result = apsis(*args, **kw)
    assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
    return result.stderr


# --- check-jobs warnings -----------------------------------------------------

REFERENCES = {
    "etl/load": """
        params: [date]
        program: "echo load {{ date | shquote }}"
        schedule: {type: cron, expr: "0 6 * * *", tz: Europe/London}
    """,
    # A dependency with a typo in the job id, and one passing an arg the other job lacks.
    "etl/report": """
        params: [date]
        program: "echo report {{ date | shquote }}"
        condition:
          - {type: dependency, job_id: etl/laod}
          - {type: dependency, job_id: etl/load, args: {region: eu}}
        successors: [etl/publish]
        action:
          type: schedule
          job_id: "etl/{{ date }}"
    """,
    # A successor with no date of its own to pass to etl/load, which needs one.
    "cleanup": """
        program: "echo cleanup"
        successors:
          - etl/load
          - {job_id: broken}
    """,
    "broken": "program: {type: nope}\n",
    "off": """
        program: "echo off"
        schedule: {type: interval, interval: 1h, enabled: false}
    """,
    "past": """
        program: "echo once"
        schedule: {type: explicit, times: ["2020-01-01T00:00:00Z"]}
    """,
}


def reference_folder(root):
    for job_id, text in REFERENCES.items():
        write_job(root, job_id, text)
    return root


def test_folder_warnings_name_each_file_key_and_problem(jobs_dir):
    root = reference_folder(jobs_dir)
    jobs, errors = load_jobs_dir(root)
    assert [e.path for e in errors] == [str(root / "broken.yaml")]
    found = [(os.path.relpath(w.path, root), w.key, w.msg)
             for w in folder_warnings(jobs, errors, str(root), NOW)]
    assert found == [
        ("cleanup.yaml", "successors[0].args",
         "no value for 'etl/load''s param 'date': give it under args (it is not a param of "
         "this job, so it is not passed through)"),
        ("etl/report.yaml", "condition[0].job_id",
         "no job 'etl/laod' in this folder (did you mean 'etl/load'?)"),
        ("etl/report.yaml", "condition[1].args.region",
         "job 'etl/load' has no param 'region' (params: date)"),
        ("etl/report.yaml", "successors[0]", "no job 'etl/publish' in this folder"),
        ("off.yaml", "schedule", "every schedule is disabled: the job runs only when started by hand"),
        ("past.yaml", "schedule", "no due times left (at 2020-01-01T00:00:00Z)"),
    ]
    # The templated job id (etl/{{ date }}) and the job that failed to load are not "missing".


def test_check_jobs_prints_warnings_without_failing_unless_strict(jobs_dir):
    root = reference_folder(jobs_dir)
    result = apsis("check-jobs", root)
    assert result.returncode == 1  # broken.yaml is an error
    write_job(root, "broken", "program: echo fixed\n")
    result = apsis("check-jobs", root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "6 jobs loaded, 0 problems, 6 warnings"
    lines = result.stderr.splitlines()
    assert f"{root}/etl/report.yaml: condition[0].job_id: warning: no job 'etl/laod' in this " \
           f"folder (did you mean 'etl/load'?)" in lines
    assert f"{root}/etl/report.yaml: successors[0]: warning: no job 'etl/publish' in this folder" in lines
    strict = apsis("check-jobs", "--strict", root)
    assert strict.returncode == 1
    assert strict.stderr == result.stderr


def test_check_jobs_on_a_clean_folder_prints_no_warnings():
    result = apsis("check-jobs", ROOT / "jobs", "--strict")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert re.fullmatch(r"\d+ jobs loaded, 0 problems\n", result.stdout)


def test_a_schedule_that_cannot_fill_a_param_is_already_an_error(jobs_dir):
    # Loading rejects it, so it is reported once, as an error, not again as a warning.
    write_job(jobs_dir, "j", """
        params: [date, region]
        program: "echo {{ date }} {{ region }}"
        schedule: {type: cron, expr: "0 6 * * *"}
    """)
    result = apsis("check-jobs", jobs_dir)
    assert result.returncode == 1
    assert result.stderr == (f"{jobs_dir}/j.yaml: schedule: no value for param 'region': give it "
                             "under args: (cron schedules supply date, time)\n")


# --- schedule ----------------------------------------------------------------

def test_schedule_marks_spring_forward_in_new_york(jobs_dir):
    write_job(jobs_dir, "close", """
        params: [date]
        program: "echo {{ date }}"
        schedule: {type: cron, expr: "30 2 * * *", tz: America/New_York}
    """)
    out = ok("schedule", jobs_dir, "close", "--next", "3", "--from", "2026-03-07T00:00:00-05:00",
             "--tz", "America/New_York")
    # 02:30 does not exist on 8 March: the run is at the first minute after the gap.
    assert out.splitlines() == [
        "# cron '30 2 * * *' in America/New_York",
        "# due times from 2026-03-07 Sat 00:00:00 EST, shown in America/New_York:",
        "2026-03-07 Sat 02:30:00 EST  date=2026-03-07",
        "— clocks go forward 1 h (EST → EDT) on 2026-03-08 at 02:00 —",
        "2026-03-08 Sun 03:00:00 EDT  date=2026-03-08",
        "2026-03-09 Mon 02:30:00 EDT  date=2026-03-09",
    ]


def test_schedule_marks_fall_back_in_london_and_shows_the_chosen_zone(jobs_dir):
    write_job(jobs_dir, "hourly", """
        program: "echo tick"
        schedule: {type: interval, interval: 1h}
    """)
    out = ok("schedule", jobs_dir, "hourly", "--next", "3", "--from", "2026-10-25T00:00:00Z",
             "--tz", "Europe/London")
    assert out.splitlines()[2:] == [
        "2026-10-25 Sun 01:00:00 BST",
        "— clocks go back 1 h (BST → GMT) on 2026-10-25 at 02:00 —",
        "2026-10-25 Sun 01:00:00 GMT",
        "2026-10-25 Sun 02:00:00 GMT",
    ]
    # The same instants in UTC: no clock changes there.
    out = ok("schedule", jobs_dir, "hourly", "--next", "3", "--from", "2026-10-25T00:00:00Z",
             "--tz", "UTC")
    assert out.splitlines()[2:] == ["2026-10-25 Sun 00:00:00 UTC", "2026-10-25 Sun 01:00:00 UTC",
                                    "2026-10-25 Sun 02:00:00 UTC"]


def test_schedule_marks_lord_howe_half_hour_change(jobs_dir):
    write_job(jobs_dir, "lh", """
        program: "echo tick"
        schedule: {type: cron, expr: "0 * * * *", tz: Australia/Lord_Howe}
    """)
    # 5 April 2026, 02:00 +11:00 becomes 01:30 +10:30; "0 * * * *" is elapsed time.
    out = ok("schedule", jobs_dir, "lh", "--next", "2", "--from", "2026-04-05T01:00:00+11:00",
             "--tz", "Australia/Lord_Howe", "--json")
    assert [x["time"] for x in json.loads(out)] == ["2026-04-05T01:00:00+11:00",
                                                    "2026-04-05T02:00:00+10:30"]
    out = ok("schedule", jobs_dir, "lh", "--next", "2", "--from", "2026-04-05T01:00:00+11:00",
             "--tz", "Australia/Lord_Howe")
    assert out.splitlines()[2:] == [
        "2026-04-05 Sun 01:00:00 +11:00",
        "— clocks go back 30 min (+11:00 → +10:30) on 2026-04-05 at 02:00 —",
        "2026-04-05 Sun 02:00:00 +10:30",
    ]


def test_schedule_json_merges_schedules_with_their_args(jobs_dir):
    write_job(jobs_dir, "multi", """
        params: [time, region]
        program: "echo {{ region }} {{ time }}"
        schedule:
          - {type: explicit, times: ["2026-12-01T09:00:00Z", "2026-12-03T09:00:00Z"], args: {region: eu}}
          - {type: cron, expr: "0 9 2 12 *", tz: Asia/Tokyo, args: {region: jp}}
          - {type: explicit, times: ["2026-12-01T09:00:00Z"], args: {region: eu}}
          - {type: interval, interval: 1h, enabled: false, args: {region: off}}
    """)
    out = ok("schedule", jobs_dir, "multi", "--from", "2026-11-30", "--tz", "America/New_York",
             "--json", "--next", "3")
    # The slot given by two schedules is one run; the disabled schedule gives none.
    assert json.loads(out) == [
        {"time": "2026-12-01T04:00:00-05:00",
         "args": {"time": "2026-12-01T09:00:00Z", "region": "eu"}},
        {"time": "2026-12-01T19:00:00-05:00",
         "args": {"time": "2026-12-02T09:00:00+09:00", "region": "jp"}},
        {"time": "2026-12-03T04:00:00-05:00",
         "args": {"time": "2026-12-03T09:00:00Z", "region": "eu"}},
    ]
    text = ok("schedule", jobs_dir, "multi", "--from", "2026-11-30", "--tz", "UTC", "--next", "1")
    assert text.splitlines()[3] == "# every 1 h (disabled)"
    write_job(jobs_dir, "once", "program: echo\nschedule: {type: explicit, times: ['2026-12-01T09:00:00Z']}\n")
    assert ok("schedule", jobs_dir, "once", "--from", "2026-11-30", "--tz", "UTC").splitlines() == [
        "# at 2026-12-01T09:00:00Z",
        "# due times from 2026-11-30 Mon 00:00:00 UTC, shown in UTC:",
        "2026-12-01 Tue 09:00:00 UTC",
        "(no more due times)",
    ]


def test_schedule_defaults_to_the_machines_zone_and_now(jobs_dir):
    write_job(jobs_dir, "hourly", "program: echo\nschedule: {type: interval, interval: 1h}\n")
    out = ok("schedule", jobs_dir, "hourly", "--next", "1", "--from", "2026-01-15 08:00",
             env={"TZ": "America/Chicago"})
    assert out.splitlines()[1:] == [
        "# due times from 2026-01-15 Thu 08:00:00 CST, shown in America/Chicago:",
        "2026-01-15 Thu 08:00:00 CST"]
    before = datetime.now(UTC)
    times = json.loads(ok("schedule", jobs_dir, "hourly", "--next", "1", "--json"))
    first = datetime.fromisoformat(times[0]["time"])
    # From now: the next whole hour.
    assert before <= first <= before + timedelta(hours=1)
    assert (first.minute, first.second) == (0, 0)


def test_schedule_of_a_job_without_schedules(jobs_dir):
    out = ok("schedule", ROOT / "jobs", "examples/noop")
    assert out == "examples/noop has no enabled schedule: it runs only when started by hand or by another job\n"
    assert json.loads(ok("schedule", ROOT / "jobs", "examples/noop", "--json")) == []


def test_schedule_errors_are_one_line_with_the_right_status(jobs_dir):
    write_job(jobs_dir, "etl/load prices", "program: echo\n")
    write_job(jobs_dir, "bad", "program: echo\nschedule: {type: cron, expr: '61 * * * *', color: red}\n")
    assert fails(1, "schedule", jobs_dir, "etl/load price") == (
        f"Error: no job 'etl/load price' in {jobs_dir} (did you mean 'etl/load prices'?)\n")
    assert fails(1, "schedule", jobs_dir, "nothing-like-it") == (
        f"Error: no job 'nothing-like-it' in {jobs_dir}\n")
    err = fails(1, "schedule", jobs_dir, "bad").splitlines()
    assert err[0] == f"{jobs_dir}/bad.yaml: schedule.expr: bad cron expression '61 * * * *': Bad minute"
    assert err[1].startswith(f"{jobs_dir}/bad.yaml: schedule.color: unknown key")
    assert err[2] == "Error: job 'bad' does not load: 2 problems"
    assert fails(2, "schedule", jobs_dir, "bad", "--tz", "Mars/Olympus") == (
        "Error: --tz: unknown time zone: 'Mars/Olympus'\n")
    assert fails(2, "schedule", jobs_dir, "bad", "--from", "soonish") == (
        "Error: --from: not a time: 'soonish'\n")
    assert fails(2, "schedule", jobs_dir / "nope", "bad") == (
        f"Error: jobs folder not found: {jobs_dir / 'nope'}\n")
    assert "Invalid value for '--next'" in fails(2, "schedule", jobs_dir, "bad", "--next", "0")


def test_due_times_and_zone_changes_as_functions():
    job = find_job(str(ROOT / "jobs"), "examples/report")
    start = datetime(2026, 10, 30, 0, 0, tzinfo=UTC)
    got = [(t.isoformat(), a) for t, a in due_times(job, start, 3)]
    # Friday 30 Oct at 16:00 EDT, then Monday 2 and Tuesday 3 Nov at 16:00 EST.
    assert got == [("2026-10-30T20:00:00+00:00", {"date": "2026-10-30"}),
                   ("2026-11-02T21:00:00+00:00", {"date": "2026-11-02"}),
                   ("2026-11-03T21:00:00+00:00", {"date": "2026-11-03"})]
    changes = zone_changes(get_tz("America/New_York"), start, datetime(2027, 12, 31, tzinfo=UTC))
    assert [c.at.isoformat() for c in changes] == [
        "2026-11-01T06:00:00+00:00", "2027-03-14T07:00:00+00:00", "2027-11-07T06:00:00+00:00"]
    assert zone_changes(get_tz("Asia/Tokyo"), start, datetime(2030, 1, 1, tzinfo=UTC)) == []


# --- try ----------------------------------------------------------------------

def test_try_shows_the_bound_program_conditions_and_actions():
    out = ok("try", ROOT / "jobs", "examples/report", "date=2026-11-25")
    assert out == """\
# examples/report with date=2026-11-25
program:
  type: shell
  command: |
    echo "Daily report for 2026-11-25"
    echo "Compared with 2026-11-24"
    echo "Written by $USER in $PWD"
  cwd: /tmp
  env:
    REPORT_FORMAT: text
  timeout:
    duration: 300.0
    signal: SIGTERM
condition:
- type: max_running
  count: 1
action:
- type: schedule
  job_id: examples/noop
  args: {}
  if:
    states:
    - success
"""
    bound = json.loads(ok("try", ROOT / "jobs", "examples/report", "date=2026-11-25", "--json"))
    assert bound["program"]["command"].splitlines()[1] == 'echo "Compared with 2026-11-24"'
    assert bound["conditions"] == [{"type": "max_running", "count": 1}]


def test_try_rejects_missing_unknown_and_malformed_args():
    jobs = ROOT / "jobs"
    assert fails(2, "try", jobs, "examples/report") == (
        "Error: job 'examples/report': missing arg 'date' (params: date)\n")
    assert fails(2, "try", jobs, "examples/report", "date=1", "colour=red") == (
        "Error: job 'examples/report': unknown arg 'colour' (params: date)\n")
    assert "expected ARG=VALUE, got 'date'" in fails(2, "try", jobs, "examples/report", "date")
    assert fails(1, "try", jobs, "example/report", "date=1") == (
        f"Error: no job 'example/report' in {jobs} (did you mean 'examples/report'?)\n")


def test_try_reports_a_bound_value_that_is_invalid(jobs_dir):
    write_job(jobs_dir, "t", """
        params: [secs]
        program: {type: program, argv: [sleep, "1"], timeout: {duration: "{{ secs }}"}}
    """)
    assert fails(1, "try", jobs_dir, "t", "secs=soon") == (
        "Error: job 't': program.timeout.duration: not a duration: 'soon'\n")


ENV_JOB = """
    params: [name]
    program:
      type: program
      argv: [sh, -c, 'echo "hi $APSIS_ARG_name from $(pwd)"; echo "$APSIS_JOB_ID $APSIS_RUN_ID $APSIS_ARGS $MODE" >&2; exit 7']
      env: {MODE: trial}
      cwd: {cwd}
"""


def test_try_run_runs_the_program_as_the_server_would(jobs_dir, tmp_path):
    write_job(jobs_dir, "dir/env", ENV_JOB.replace("{cwd}", str(tmp_path)))
    result = apsis("try", jobs_dir, "dir/env", "name=ann", "--run")
    assert result.returncode == 7
    assert result.stdout == f"hi ann from {tmp_path}\n"
    assert result.stderr.splitlines() == [
        "apsis-lite: running dir/env name=ann (Ctrl-C stops it)",
        'dir/env r0 {"name": "ann"} trial',
        result.stderr.splitlines()[-1],
    ]
    assert result.stderr.splitlines()[-1].startswith("apsis-lite: exit status 7 after ")


def test_try_run_without_cwd_starts_in_home_and_a_no_op_succeeds(jobs_dir, tmp_path):
    write_job(jobs_dir, "pwd", "program: pwd\n")
    assert ok("try", jobs_dir, "pwd", "--run", env={"HOME": str(tmp_path)}) == f"{tmp_path}\n"
    result = apsis("try", ROOT / "jobs", "examples/noop", "--run")
    assert result.returncode == 0
    assert result.stderr.startswith("apsis-lite: examples/noop: no-op\n")


def test_try_run_cannot_start(jobs_dir):
    write_job(jobs_dir, "missing", "program: [no-such-program-here]\n")
    write_job(jobs_dir, "nodir", "program: {command: pwd, cwd: /no/such/folder}\n")
    write_job(jobs_dir, "remote", "program: {command: pwd, host: db1}\n")
    assert fails(1, "try", jobs_dir, "missing", "--run").endswith(
        "Error: cannot run 'no-such-program-here': No such file or directory\n")
    assert fails(1, "try", jobs_dir, "nodir", "--run").endswith(
        "Error: cannot start: no folder '/no/such/folder' (the program's cwd)\n")
    assert fails(1, "try", jobs_dir, "remote", "--run") == (
        "Error: the program runs on host 'db1'; --run runs programs on this machine only\n")


def _gone(pid):
    """True if ``pid`` has exited (a zombie left for init to reap counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: it went while being read
        return True


def _read_line(proc):
    """A line of ``proc``'s stdout, read a byte at a time so that ``communicate()``
    still gets everything after it (a buffered ``readline()`` may take more)."""
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(proc.stdout.fileno(), 1)
        if not byte:
            break
        line += byte
    return line.decode()


def _wait_file(path, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} not written")


def test_try_run_timeout_stops_the_whole_group(jobs_dir, tmp_path):
    pid_file = tmp_path / "grandchild"
    write_job(jobs_dir, "slow", f"""
        program:
          command: "sleep 300 & echo $! > {pid_file}; wait"
          timeout: {{duration: 0.5s, signal: SIGTERM}}
          stop: {{grace_period: 2s}}
    """)
    started = time.monotonic()
    result = apsis("try", jobs_dir, "slow", "--run")
    assert time.monotonic() - started < 10
    assert result.returncode == 128 + signal.SIGTERM
    assert "apsis-lite: timed out after 500 ms: sending SIGTERM to the process group" in result.stderr
    assert "killed by SIGTERM" in result.stderr
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(grandchild)


def test_try_run_timeout_kills_what_ignores_the_stop_signal_after_the_program_exited(jobs_dir, tmp_path):
    pid_file = tmp_path / "grandchild"
    write_job(jobs_dir, "stubborn", f"""
        program:
          command: "(trap '' TERM; exec sleep 300) & echo $! > {pid_file}; wait"
          timeout: {{duration: 0.5s, signal: SIGTERM}}
          stop: {{grace_period: 1.5s}}
    """)
    started = time.monotonic()
    result = apsis("try", jobs_dir, "stubborn", "--run")
    elapsed = time.monotonic() - started
    grandchild = int(pid_file.read_text())
    gone = _gone(grandchild)  # already, when the command returns
    if not gone:
        os.kill(grandchild, signal.SIGKILL)
    assert gone, result.stderr
    assert result.returncode == 128 + signal.SIGTERM  # the program's own end
    assert "killed by SIGTERM" in result.stderr
    assert ("apsis-lite: the program exited; waiting for the 1 process it left in its group"
            in result.stderr)
    assert "apsis-lite: sending SIGKILL to the 1 process the program left in its group" in result.stderr
    assert 2.0 <= elapsed < 10  # the timeout, then the grace period


def test_try_run_ctrl_c_kills_what_ignores_the_stop_signal(jobs_dir, tmp_path):
    # The grandchild writes its pid only once it ignores SIGTERM: the Ctrl-C
    # below may come a moment after the program started.
    pid_file = tmp_path / "grandchild"
    write_job(jobs_dir, "stubborn", f"""
        program:
          command: "(trap '' TERM; exec sh -c 'echo $$ > {pid_file}; exec sleep 300') & echo started; wait"
          stop: {{signal: SIGTERM, grace_period: 60s}}
    """)
    proc = subprocess.Popen([sys.executable, "-m", "apsis_lite", "try", str(jobs_dir), "stubborn", "--run"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    grandchild = None
    try:
        assert _read_line(proc) == "started\n"
        grandchild = int(_wait_file(pid_file))
        proc.send_signal(signal.SIGINT)  # the program exits; the grandchild does not
        deadline = time.monotonic() + 30
        while "waiting for the 1 process" not in (line := proc.stderr.readline()):
            assert line and time.monotonic() < deadline, line
        assert not _gone(grandchild)
        proc.send_signal(signal.SIGINT)  # the second Ctrl-C kills at once
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if grandchild and not _gone(grandchild):
            os.kill(grandchild, signal.SIGKILL)
    assert _gone(grandchild)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "sending SIGKILL to the 1 process the program left in its group" in err


def test_try_run_ctrl_c_stops_the_whole_group_and_streams_output(jobs_dir, tmp_path):
    pid_file = tmp_path / "grandchild"
    write_job(jobs_dir, "long", f"""
        program:
          command: "echo started; sleep 300 & echo $! > {pid_file}; wait"
          stop: {{signal: SIGTERM, grace_period: 5s}}
    """)
    proc = subprocess.Popen([sys.executable, "-m", "apsis_lite", "try", str(jobs_dir), "long", "--run"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _read_line(proc) == "started\n"  # streamed while the program runs
        grandchild = int(_wait_file(pid_file))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out == ""  # nothing after "started": the program was stopped
    assert "Traceback" not in err
    assert proc.returncode == 128 + signal.SIGTERM
    assert "apsis-lite: stopping: sending SIGTERM to the process group" in err
    deadline = time.monotonic() + 30
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(grandchild)


def test_try_run_ctrl_c_while_the_program_starts_still_stops_it(tmp_path, monkeypatch):
    # On a loaded machine Ctrl-C can land after the program has started but before
    # run_locally waits for it; it must stop the program, not leave it running.
    real_popen = subprocess.Popen
    started = []

    def popen_then_ctrl_c(*args, **kw):
        started.append(real_popen(*args, **kw))
        os.kill(os.getpid(), signal.SIGINT)
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen_then_ctrl_c)
    program = parse_program({"argv": ["sleep", "300"], "cwd": str(tmp_path),
                             "stop": {"signal": "SIGTERM", "grace_period": "5s"}})
    said = []
    try:
        result = run_locally(program, "long", {}, say=said.append)
    except KeyboardInterrupt:
        raise AssertionError("Ctrl-C escaped run_locally and left the program running") from None
    finally:
        if started and started[0].poll() is None:
            os.killpg(started[0].pid, signal.SIGKILL)
    assert (result.stopped, result.signal, result.exit_code) == (True, "SIGTERM", 128 + signal.SIGTERM)
    assert said == [("stopping: sending SIGTERM to the process group "
                     "(SIGKILL in 5.0 s; Ctrl-C again to kill now)")]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- daily schedules and calendars --------------------------------------------

def test_schedule_of_a_daily_job_across_both_changes_in_new_york(jobs_dir):
    write_job(jobs_dir, "early", """
        params: [date, daytime]
        program: "echo {{ date }} {{ daytime }}"
        schedule: {type: daily, daytime: ["01:30", "02:30"], tz: America/New_York}
    """)
    out = ok("schedule", jobs_dir, "early", "--from", "2026-03-08", "--tz", "America/New_York",
             "--next", "3")
    # 02:30 does not exist on 8 March: by default it runs when the clocks jump.
    assert out.splitlines()[1:] == [
        "# due times from 2026-03-08 Sun 00:00:00 EST, shown in America/New_York:",
        '2026-03-08 Sun 01:30:00 EST  date=2026-03-08 daytime="01:30:00"',
        "— clocks go forward 1 h (EST → EDT) on 2026-03-08 at 02:00 —",
        '2026-03-08 Sun 03:00:00 EDT  date=2026-03-08 daytime="02:30:00"',
        '2026-03-09 Mon 01:30:00 EDT  date=2026-03-09 daytime="01:30:00"',
    ]
    # 01:30 occurs twice on 1 November: it runs once, at the first.
    out = ok("schedule", jobs_dir, "early", "--from", "2026-11-01", "--tz", "UTC", "--json",
             "--next", "3")
    assert [(x["time"], x["args"]["daytime"]) for x in json.loads(out)] == [
        ("2026-11-01T05:30:00+00:00", "01:30:00"), ("2026-11-01T07:30:00+00:00", "02:30:00"),
        ("2026-11-02T06:30:00+00:00", "01:30:00")]


def test_calendars_come_from_calendars_or_the_configs_calendars_dir(jobs_dir, tmp_path):
    write_job(jobs_dir, "close", """
        params: [date]
        program: "echo {{ date | shquote }}"
        schedule: {type: daily, daytime: "16:00", tz: Europe/London, calendar: Mon-Fri - hols}
    """)
    cals = tmp_path / "cals"
    cals.mkdir()
    (cals / "hols.cal").write_text("# office closed\n2026-12-25\n2026-12-28\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"calendars_dir: {cals}\n")
    err = fails(1, "check-jobs", jobs_dir)
    assert err.startswith(f"{jobs_dir}/close.yaml: schedule.calendar: unknown calendar 'hols'")
    assert ok("check-jobs", jobs_dir, "--calendars", cals) == "1 job loaded, 0 problems\n"
    assert ok("check-jobs", jobs_dir, "--config", config) == "1 job loaded, 0 problems\n"
    # Thursday 24th; not the 25th or 28th (in hols), nor the weekend.
    out = ok("schedule", jobs_dir, "close", "--config", config, "--from", "2026-12-24",
             "--tz", "Europe/London", "--next", "3")
    assert out.splitlines()[2:] == ["2026-12-24 Thu 16:00:00 GMT  date=2026-12-24",
                                    "2026-12-29 Tue 16:00:00 GMT  date=2026-12-29",
                                    "2026-12-30 Wed 16:00:00 GMT  date=2026-12-30"]
    # A broken calendar file is a problem of its own.
    (cals / "bad.cal").write_text("2026-13-45\n")
    result = apsis("check-jobs", jobs_dir, "--calendars", cals)
    assert result.returncode == 1
    assert result.stderr.startswith(f"{cals}/bad.cal")
    assert result.stdout == "1 job loaded, 1 problem\n"

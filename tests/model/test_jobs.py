"""Job files, the jobs directory, args and binding."""

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from apsis_lite.errors import BadRequest, JobFileError
from apsis_lite.model.jobs import templates as job_templates
from apsis_lite.model.jobs import (
    Job, JobErrors, adhoc_job, args_from_schedule, bind, bind_program, check_args,
    job_from_jso, load_jobs_dir,
)
from apsis_lite.model.programs import ArgvProgram, NoOpProgram, ShellProgram, parse_program
from apsis_lite.model.schedules import SpecError

EXAMPLES = Path(__file__).resolve().parents[2] / "jobs"


def write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def errors_of(jso, job_id="j"):
    """Every error for a job's contents, as 'key: message' strings."""
    with pytest.raises(JobErrors) as info:
        job_from_jso(jso, job_id, "jobs/j.yaml")
    for e in info.value.errors:
        assert isinstance(e, JobFileError) and e.path == "jobs/j.yaml"
    return [f"{e.key}: {e.msg}" if e.key else e.msg for e in info.value.errors]


# --- examples ---------------------------------------------------------------

def test_example_jobs_load_cleanly():
    jobs, errors = load_jobs_dir(EXAMPLES)
    assert errors == []
    assert {"hello", "examples/disk usage", "examples/report", "examples/noop",
            "examples/slow"} <= set(jobs)
    for job in jobs.values():
        assert job.to_jso()["job_id"] == job.job_id
    report = jobs["examples/report"]
    assert report.params == ("date",)
    assert report.schedules[0].describe() == "cron '0 16 * * Mon-Fri' in America/New_York"
    bound = bind_program(report, {"date": "2026-11-27"})
    assert "Daily report for 2026-11-27" in bound.command
    assert "Compared with 2026-11-26" in bound.command
    assert bind_program(jobs["examples/noop"], {}).is_noop
    assert bind_program(jobs["examples/disk usage"], {}).argv() == ["df", "-h"]


# --- loading ----------------------------------------------------------------

def test_ids_from_nested_paths_with_spaces(tmp_path):
    write(tmp_path, "data/pipeline/load prices.yaml", "program: echo hi\n")
    write(tmp_path, "top.yml", "program: [ls, -l]\n")
    write(tmp_path, "notes.txt", "not a job")
    write(tmp_path, ".hidden.yaml", "program: echo\n")
    write(tmp_path, ".git/x.yaml", "program: echo\n")
    write(tmp_path, "data/.cache/y.yaml", "{{{")
    jobs, errors = load_jobs_dir(tmp_path)
    assert errors == []
    assert sorted(jobs) == ["data/pipeline/load prices", "top"]
    job = jobs["data/pipeline/load prices"]
    assert job.path == str(tmp_path / "data/pipeline/load prices.yaml")
    assert job.program == {"type": "shell", "command": "echo hi"}
    assert jobs["top"].program == {"type": "program", "argv": ["ls", "-l"]}


def test_a_broken_file_does_not_stop_the_others(tmp_path):
    write(tmp_path, "good.yaml", "program: echo ok\n")
    write(tmp_path, "bad yaml.yaml", "program: echo\nschedule: [\n")
    write(tmp_path, "empty.yaml", "\n# nothing\n")
    write(tmp_path, "list.yaml", "- program: echo\n")
    write(tmp_path, "sub/invalid.yaml", "program: {type: nope}\n")
    jobs, errors = load_jobs_dir(tmp_path)
    assert list(jobs) == ["good"]
    by_file = {Path(e.path).name: e for e in errors}
    assert set(by_file) == {"bad yaml.yaml", "empty.yaml", "list.yaml", "invalid.yaml"}
    bad = by_file["bad yaml.yaml"]
    assert bad.key is None and bad.msg.startswith("not valid YAML: line 3, column 1:")
    assert str(bad).startswith(str(tmp_path / "bad yaml.yaml") + ": not valid YAML")
    assert by_file["empty.yaml"].msg == "empty job file"
    assert by_file["list.yaml"].msg == "a job file must be a mapping, not a list"
    assert by_file["invalid.yaml"].key == "program.type"


def test_duplicate_ids_from_yaml_and_yml(tmp_path):
    write(tmp_path, "a.yaml", "program: echo\n")
    write(tmp_path, "a.yml", "program: echo\n")
    jobs, errors = load_jobs_dir(tmp_path)
    assert list(jobs) == ["a"]
    assert [e.msg for e in errors] == [f"duplicate job id 'a' (also {tmp_path / 'a.yaml'})"]


def test_missing_jobs_dir(tmp_path):
    jobs, errors = load_jobs_dir(tmp_path / "nope")
    assert jobs == {} and len(errors) == 1
    assert errors[0].msg == "cannot read directory: No such file or directory"


def test_yaml_is_loaded_safely(tmp_path):
    write(tmp_path, "evil.yaml", "program: !!python/object/apply:os.system ['true']\n")
    jobs, errors = load_jobs_dir(tmp_path)
    assert jobs == {} and "not valid YAML" in errors[0].msg


# --- validation: every kind of error, with its key ----------------------------

def test_several_errors_in_one_file_are_all_reported():
    got = errors_of({
        "params": ["date", "date", 3],
        "program": {"type": "shell", "command": "echo {{ dat }}",
                    "timeout": {"duration": "soon", "signal": "SIGFOO"}, "env": {"A": None}},
        "schedule": [
            {"type": "interval", "interval": 60, "args": {"date": "x"}},
            {"type": "interval", "interval": "x"},
            {"type": "cron", "expr": "0 0 32 * *"},
            {"type": "daily"},
        ],
        "condition": {"type": "dependency", "states": ["done"]},
        "action": [{"type": "webhook", "url": "ftp://x"}, {"type": "email"}],
        "successors": [{"job": "x"}],
        "metadata": {"labels": [1]},
        "reruns": {"count": -1},
        "conditions": [],
    })
    assert got == [
        "conditions: unknown key (did you mean 'condition'?); expected: params, program, "
        "schedule, condition, action, successors, metadata, resources, reruns, waiting, catch_up, deadline, max_duration",
        "params[1]: duplicate param 'date'",
        "params[2]: a param name must be a non-empty string, not int 3",
        "program.env.A: expected a string, got nothing (null)",
        "program.timeout.duration: not a duration: 'soon'",
        "program.timeout.signal: not a signal: 'SIGFOO'",
        "schedule[1].interval: not a duration: 'x'",
        "schedule[2].expr: bad cron expression '0 0 32 * *': Bad day-of-month",
        "schedule[3].daytime: missing (required)",
        "condition.job_id: missing (required)",
        "condition.states[0]: unknown state 'done' (known: scheduled, waiting, starting, "
        "running, stopping, success, failure, error, skipped)",
        "action[0].url: expected an http or https URL, got 'ftp://x'",
        "action[1].to: missing (required)",
        "successors[0].job_id: missing (required)",
        "successors[0].job: unknown key (did you mean 'job_id'?); expected: job_id, args",
        "reruns.count: expected a whole number of at least 0, got int -1",
        "metadata.labels: expected a list of strings",
    ]


def test_missing_program_and_bad_program_type():
    # As in the server and check-jobs, which register the built-in in-server types.
    import apsis_lite.engine.housekeeping_programs  # noqa: F401
    known = ("apsis-lite-archive, apsis-lite-prune, apsis-lite-stats, apsis-lite-vacuum, no-op, procstar, "
             "procstar-shell, program, shell")
    assert errors_of({"params": ["a"]}) == ["program: missing (required)"]
    assert errors_of({"program": {"type": "docker"}}) == [
        f"program.type: unknown program type 'docker' (known: {known})"]
    assert errors_of({"program": {"user": "x"}}) == [
        f"program.type: missing (required; known: {known})"]
    assert errors_of({"program": 42}) == [
        "program: expected a command, an argv list or a mapping, got int 42"]
    assert errors_of({"program": {"argv": ["ls", {"a": 1}], "cwdir": "/"}}) == [
        "program.argv[1]: expected a string, got a mapping",
        "program.cwdir: unknown key (did you mean 'cwd'?); expected: type, argv, host, user, "
        "env, cwd, timeout, stop",
    ]


def test_schedule_args_must_be_params_and_params_must_get_values():
    got = errors_of({
        "params": ["host", "region"],
        "program": "echo",
        "schedule": {"type": "interval", "interval": 60, "args": {"regoin": "eu"}},
    })
    assert got == [
        "schedule.args.regoin: not a param of this job (params: host, region); apsis would ignore it, "
        "apsis-lite refuses it: remove it or add the param",
        "schedule: no value for param 'host': give it under args: (interval schedules "
        "supply date, daytime, time)",
        "schedule: no value for param 'region': give it under args: (interval schedules "
        "supply date, daytime, time)",
    ]
    job = job_from_jso({"params": ["date"], "program": "echo {{ date }}",
                        "schedule": {"type": "cron", "expr": "@daily"}}, "j")
    assert job.params == ("date",)


def test_template_errors_are_reported_at_load():
    got = errors_of({
        "params": ["date"],
        "program": ["echo", "{{ date", "{{ shift_days(dates, 1) }}", "n=${#arr[@]}"],
        "condition": {"type": "dependency", "job_id": "x", "args": {"date": "{{ today() }}"}},
        "successors": {"job_id": "y", "args": {"date": "{{ nope }}"}},
    })
    assert got[0].startswith("program.argv[1]: template error: unexpected end of template")
    assert got[1] == ("program.argv[2]: template uses 'dates', not a param of this job "
                      "(params: date)")
    assert got[2].startswith("program.argv[3]: template error: ")
    assert "${#var}" in got[2]
    assert got[3] == "successors.args.date: template uses 'nope', not a param of this job (params: date)"
    assert len(got) == 4


def test_condition_and_action_types():
    assert errors_of({"program": "x", "condition": {"type": "max_runing", "count": 1}}) == [
        "condition.type: unknown condition type 'max_runing' (known: const, dependency, max_running, "
        "resource, skip_duplicate)"]
    assert errors_of({"program": "x", "condition": {"max_running": {"count": 1}}}) == [
        "condition.type: missing; write 'type: max_running' with the options beside it, "
        "not under max_running:"]
    assert errors_of({"program": "x", "condition": [{"type": "max_running", "count": 0}]}) == [
        "condition[0].count: expected a whole number of at least 1, got int 0"]
    assert errors_of({"program": "x", "action": {"type": "page"}}) == [
        "action.type: unknown action type 'page' (known: command, email, schedule, webhook)"]
    assert errors_of({"program": "x", "condition": {"type": "skip_duplicate",
                                                    "target_state": "running"}}) == [
        "condition.target_state: must be a finished state (success, failure, error, skipped), "
        "not 'running'"]


def test_conditions_and_actions_are_normalized():
    job = job_from_jso({
        "params": ["date"],
        "program": {"type": "no-op"},
        "condition": [
            {"type": "max_running", "count": 2},
            {"type": "dependency", "job_id": "load", "exist": True},
            {"type": "skip_duplicate"},
        ],
        "action": [
            {"type": "command", "command": "notify {{ date }}", "if": {"states": ["failure", "error"]}},
            {"type": "webhook", "url": "https://example.com/hook"},
            {"type": "email", "to": "ops@example.com", "if": {"states": "failure"}},
        ],
    }, "j")
    assert job.conditions == (
        {"type": "max_running", "count": 2},
        {"type": "dependency", "job_id": "load", "args": {}, "states": ["success"], "exist": True},
        {"type": "skip_duplicate", "check_states": ["waiting", "starting", "running"],
         "target_state": "skipped"},
    )
    assert job.actions == (
        {"type": "command", "command": "notify {{ date }}", "if": {"states": ["failure", "error"]}},
        {"type": "webhook", "url": "https://example.com/hook", "timeout": 10.0},
        {"type": "email", "to": ["ops@example.com"], "if": {"states": ["failure"]}},
    )


def test_successors_become_schedule_actions():
    job = job_from_jso({
        "params": ["date"],
        "program": "echo",
        "action": {"type": "schedule", "job_id": "first"},
        "successors": ["b", {"job_id": "c/d", "args": {"date": "{{ date }}", "n": 1}}],
    }, "a")
    on_success = {"states": ["success"]}
    assert job.actions == (
        {"type": "schedule", "job_id": "first", "args": {}},
        {"type": "schedule", "job_id": "b", "args": {}, "if": on_success},
        {"type": "schedule", "job_id": "c/d", "args": {"date": "{{ date }}", "n": "1"},
         "if": on_success},
    )
    single = job_from_jso({"program": "echo", "successors": "b"}, "a")
    assert single.actions == ({"type": "schedule", "job_id": "b", "args": {}, "if": on_success},)


def test_metadata_is_kept_and_made_json_ready():
    from datetime import date
    job = job_from_jso({"program": "x", "metadata": {
        "description": "**bold**", "labels": "one", "owner": "me", "since": date(2026, 1, 2)}}, "j")
    assert job.metadata == {"description": "**bold**", "labels": ["one"], "owner": "me",
                            "since": "2026-01-02"}
    assert errors_of({"program": "x", "metadata": ["a"]}) == ["metadata: expected a mapping, not a list"]


def test_program_options_normalized():
    job = job_from_jso({"params": ["t"], "program": {
        "command": "run", "host": "h1", "user": "batch", "cwd": "/tmp",
        "env": {"N": 1, "FLAG": True}, "timeout": {"duration": "{{ t }}"},
        "stop": {"signal": 2, "grace_period": "5s"}}}, "j")
    assert job.program == {
        "type": "shell", "command": "run", "host": "h1", "user": "batch", "cwd": "/tmp",
        "env": {"N": "1", "FLAG": "True"}, "timeout": {"duration": "{{ t }}", "signal": "SIGTERM"},
        "stop": {"signal": "SIGINT", "grace_period": 5.0}}
    program = bind_program(job, {"t": "90"})
    assert program.timeout == {"duration": 90.0, "signal": "SIGTERM"}
    assert program.stop == {"signal": "SIGINT", "grace_period": 5.0}
    assert program.argv() == ["/bin/bash", "-c", "run"]


def test_program_defaults_are_readable_on_every_type():
    shell = parse_program("sleep 1")
    assert shell.timeout is None and shell.env == {} and shell.cwd is None and shell.host is None
    assert shell.stop == {"signal": "SIGTERM", "grace_period": 60.0}
    noop = parse_program({"type": "no-op"})
    assert noop.is_noop and not shell.is_noop
    assert noop.stop["signal"] == "SIGTERM" and noop.timeout is None
    with pytest.raises(TypeError):
        noop.argv()
    assert parse_program({"type": "shell", "command": "x", "timeout": "5 min"}).timeout == {
        "duration": 300.0, "signal": "SIGTERM"}
    assert parse_program({"argv": ["x"], "stop": {"signal": "term"}}).stop == {
        "signal": "SIGTERM", "grace_period": 60.0}


def test_program_apsis_aliases():
    assert isinstance(parse_program({"type": "apsis.program.ShellCommandProgram", "command": "x"}),
                      ShellProgram)
    assert isinstance(parse_program({"type": "apsis.program.AgentProgram", "argv": ["x"]}),
                      ArgvProgram)
    assert isinstance(parse_program({"type": "apsis.program.NoOpProgram"}), NoOpProgram)
    with pytest.raises(SpecError):
        parse_program({"type": "os.system"})


# --- args -------------------------------------------------------------------

def test_check_args():
    job = job_from_jso({"params": ["date", "n"], "program": "echo"}, "x")
    assert check_args(job, {"n": 3, "date": "2026-01-01"}) == {"date": "2026-01-01", "n": "3"}
    with pytest.raises(BadRequest, match=r"^job 'x': missing arg 'date'$"):
        check_args(job, {"n": "1"})
    with pytest.raises(BadRequest, match=r"^job 'x': missing args 'date', 'n'$"):
        check_args(job, {})
    with pytest.raises(BadRequest, match=r"^job 'x': unknown arg 'm' \(params: date, n\)$"):
        check_args(job, {"date": "d", "n": "1", "m": "2"})
    with pytest.raises(BadRequest, match="must be a string"):
        check_args(job, {"date": None, "n": "1"})
    noparams = job_from_jso({"program": "echo"}, "y")
    assert check_args(noparams, {}) == {}
    with pytest.raises(BadRequest, match=r"unknown arg 'a' \(params: none\)"):
        check_args(noparams, {"a": "1"})


def test_args_from_schedule_keeps_only_params():
    job = job_from_jso({"params": ["date"], "program": "echo {{ date }}",
                        "schedule": {"type": "cron", "expr": "@daily", "tz": "Europe/Paris"}}, "x")
    start = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)
    _, supplied = next(job.schedules[0].times(start))
    assert supplied == {"time": "2026-06-02T00:00:00+02:00", "date": "2026-06-02"}
    assert args_from_schedule(job, supplied) == {"date": "2026-06-02"}


# --- binding ----------------------------------------------------------------

def test_binding_renders_templates_everywhere():
    job = job_from_jso({
        "params": ["date", "region"],
        "program": {"type": "program", "argv": ["load", "--date={{ date }}", "{{ region | upper }}"],
                    "env": {"D": "{{ date | shift_days(-1) }}"}, "cwd": "/data/{{ region }}",
                    "user": "{{ job_id | replace('/', '-') }}"},
        "condition": {"type": "dependency", "job_id": "prep {{ region }}",
                      "args": {"date": "{{ shift_days(date, -1) }}"}},
        "action": {"type": "command", "command": "echo {{ date }} failed",
                   "if": {"states": ["failure"]}},
        "successors": {"job_id": "next", "args": {"date": "{{ (date | as_date).strftime('%Y%m%d') }}"}},
        "metadata": {"description": "{{ not rendered }}"},
    }, "etl/load")
    bound = bind(job, {"date": "2026-03-01", "region": "eu"})
    assert bound["program"] == {
        "type": "program", "argv": ["load", "--date=2026-03-01", "EU"], "user": "etl-load",
        "env": {"D": "2026-02-28"}, "cwd": "/data/eu"}
    assert bound["conditions"] == [{"type": "dependency", "job_id": "prep eu",
                                    "args": {"date": "2026-02-28"}, "states": ["success"],
                                    "exist": False}]
    assert bound["actions"] == [
        {"type": "command", "command": "echo 2026-03-01 failed", "if": {"states": ["failure"]}},
        {"type": "schedule", "job_id": "next", "args": {"date": "20260301"},
         "if": {"states": ["success"]}}]
    # The job itself is unchanged: a rerun binds again from it.
    assert job.program["argv"][1] == "--date={{ date }}"


def test_binding_keeps_text_and_newlines_verbatim():
    command = "for f in *.csv; do\n  wc -l \"$f\"  # {not a template}\ndone\n"
    job = job_from_jso({"params": ["d"], "program": command + "echo {{ d }}\n"}, "j")
    assert bind_program(job, {"d": "x"}).command == command + "echo x\n"


def test_today_helper_uses_the_clock_at_binding(monkeypatch):
    monkeypatch.setattr(job_templates, "utcnow", lambda: datetime(2026, 11, 27, 3, tzinfo=timezone.utc))
    job = job_from_jso({"program": "echo {{ today('America/New_York') }} {{ today() }}"}, "j")
    assert bind_program(job, {}).command == "echo 2026-11-26 2026-11-27"


def test_bad_templates_at_binding_name_the_key():
    job = job_from_jso({"params": ["n", "t"], "program": {
        "command": "echo {{ shift_days('2026-01-01', n) }}", "timeout": {"duration": "{{ t }}"}}},
        "j")
    with pytest.raises(BadRequest, match=r"^job 'j': program.command: template error: .*'x'"):
        bind(job, {"n": "x", "t": "1"})
    with pytest.raises(BadRequest, match=r"^job 'j': program.timeout.duration: not a duration: 'abc'$"):
        bind(job, {"n": "1", "t": "abc"})
    with pytest.raises(BadRequest, match="missing arg 't'"):
        bind(job, {"n": "1"})


def test_templates_are_sandboxed():
    job = job_from_jso({"program": "echo {{ ''.__class__.__mro__ }}"}, "j")
    with pytest.raises(BadRequest, match="program.command: template error"):
        bind(job, {})


def test_binding_is_fast():
    job = job_from_jso({
        "params": ["date", "region"],
        "program": {"command": "load {{ region }} {{ date | shift_days(-1) }}",
                    "env": {"R": "{{ region }}"}, "timeout": {"duration": 60}},
        "condition": {"type": "dependency", "job_id": "x", "args": {"date": "{{ date }}"}},
        "successors": ["y"],
    }, "j")
    t0 = time.perf_counter()
    for i in range(1000):
        bind_program(job, {"date": "2026-01-01", "region": f"r{i}"})
    assert time.perf_counter() - t0 < 0.5


# --- ad hoc -------------------------------------------------------------------

def test_adhoc_jobs():
    job = adhoc_job(["echo", "hi"], "adhoc/1")
    assert job == Job(job_id="adhoc/1", params=(), program={"type": "program", "argv": ["echo", "hi"]},
                      schedules=(), conditions=(), actions=(), metadata={}, path=None, adhoc=True)
    assert bind_program(job, {}).argv() == ["echo", "hi"]
    # Ad hoc text is literal: no params, so nothing to template.
    shell = adhoc_job("echo '{{ x }}' ${#a}", "adhoc/2")
    assert bind_program(shell, {}).command == "echo '{{ x }}' ${#a}"
    assert adhoc_job({"type": "no-op"}, "adhoc/3").program == {"type": "no-op"}
    with pytest.raises(BadRequest, match=r"^ad hoc program: program.timeout.duration: "):
        adhoc_job({"command": "x", "timeout": {"duration": "x"}}, "adhoc/4")


def test_stored_adhoc_job_round_trips():
    """The engine stores ``Job.to_jso()`` of an ad hoc job and reads it back with adhoc=True."""
    job = adhoc_job({"command": "echo {{ not a template }}", "timeout": 30}, "adhoc/x")
    again = job_from_jso(job.to_jso(), "adhoc/x", adhoc=True)
    assert again == job
    assert bind_program(again, {}).command == "echo {{ not a template }}"
    # A stored job with schedules and actions (to_jso form, with descriptions) reads back too.
    full = job_from_jso({"params": ["time"], "program": "echo {{ time }}",
                         "schedule": {"type": "interval", "interval": 60},
                         "successors": "b"}, "j")
    back = job_from_jso(full.to_jso(), "j", adhoc=True)
    assert back.schedules == full.schedules and back.actions == full.actions
    assert back.adhoc and back.path is None


def test_job_to_jso():
    job = job_from_jso({"params": ["time"], "program": "echo {{ time }}",
                        "schedule": {"type": "interval", "interval": 300}}, "hello", "jobs/hello.yaml")
    assert job.to_jso() == {
        "job_id": "hello", "params": ["time"],
        "program": {"type": "shell", "command": "echo {{ time }}"},
        "schedules": [{"type": "interval", "enabled": True, "args": {}, "interval": 300.0,
                       "phase": 0.0, "description": "every 5 min"}],
        "conditions": [], "actions": [], "metadata": {}, "path": "jobs/hello.yaml", "adhoc": False,
    }

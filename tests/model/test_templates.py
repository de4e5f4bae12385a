"""Job files with the new schedule features, catch-up, and the date and calendar helpers in templates."""

import os

import pytest

from apsis_lite.errors import BadRequest
from apsis_lite.model.calendars import load_calendars
from apsis_lite.model.jobs import JobErrors, bind, job_from_jso, load_jobs_dir


def command(program, args, **job):
    params = list(args)
    j = job_from_jso({"params": params, "program": program, **job}, "t")
    return bind(j, args)["program"]["command"]


# --- template helpers -------------------------------------------------------------

@pytest.mark.parametrize("template, expected", [
    ("{{ calendar('Mon-Fri').before(date) }}", "2026-11-27"),            # Monday -> Friday
    ("{{ calendar('Mon-Fri - US-holidays').before('2026-11-27') }}", "2026-11-25"),
    ("{{ cal('Mon-Fri').after(date) }}", "2026-12-01"),
    ("{{ calendar('UK-holidays').contains('2026-12-28') }}", "True"),
    ("{{ date | cal_shift('Mon-Fri', -2) }}", "2026-11-26"),
    ("{{ date | add_days(-1) }}", "2026-11-29"),
    ("{{ add_days(date, 7) }}", "2026-12-07"),
    ("{{ date | add_months(1) }}", "2026-12-30"),
    ("{{ '2026-01-31' | add_months(1) }}", "2026-02-28"),
    ("{{ date | strftime('%Y%m%d') }}", "20261130"),
    ("{{ date | strftime('%A %d %B') }}", "Monday 30 November"),
    ("{{ date | add_days(-1) | strftime('%y%m%d') }}", "261129"),
    ("{{ time | strftime('%H:%M') }}", "09:30"),
    ("{{ time | in_tz('Asia/Tokyo') | strftime('%Y-%m-%d %H:%M') }}", "2026-11-30 23:30"),
    ("{{ time | as_time }}", "2026-11-30 14:30:00+00:00"),
])
def test_helpers(template, expected):
    assert command(f"echo {template}", {"date": "2026-11-30", "time": "2026-11-30T09:30:00-05:00"}) == \
        f"echo {expected}"


def test_helpers_use_the_jobs_calendars(tmp_path):
    (tmp_path / "cal").mkdir()
    (tmp_path / "cal" / "closed.cal").write_text("2026-11-27\n")
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "load.yaml").write_text(
        "params: [date]\n"
        "program: \"load --prev {{ calendar('Mon-Fri - closed').before(date) }}\"\n"
        "schedule: {type: daily, daytime: '06:00', calendar: Mon-Fri - closed}\n")
    library, errors = load_calendars(tmp_path / "cal")
    jobs, errors = load_jobs_dir(tmp_path / "jobs", library)
    assert errors == []
    assert bind(jobs["load"], {"date": "2026-11-30"})["program"]["command"] == "load --prev 2026-11-26"
    # Without the folder's calendars, the name is unknown and says so.
    jobs, errors = load_jobs_dir(tmp_path / "jobs")
    assert [e.key for e in errors] == ["schedule.calendar"]
    assert "unknown calendar 'closed'" in errors[0].msg


def test_a_param_named_calendar_hides_the_helper_but_cal_still_works():
    assert command("echo {{ cal(calendar).before(date) }}",
                   {"date": "2026-11-30", "calendar": "Mon-Fri"}) == "echo 2026-11-27"


def test_helper_errors_are_bad_requests():
    j = job_from_jso({"params": ["date"], "program": "echo {{ calendar('Narnia').before(date) }}"}, "t")
    with pytest.raises(BadRequest, match="program.command: template error: unknown calendar 'Narnia'"):
        bind(j, {"date": "2026-11-30"})
    j = job_from_jso({"params": ["date"], "program": "echo {{ date | add_days(1) }}"}, "t")
    with pytest.raises(BadRequest, match="not a date"):
        bind(j, {"date": "yesterday"})


# --- job files ----------------------------------------------------------------------

def test_several_schedules_disabled_and_args():
    job = job_from_jso({
        "params": ["date", "region"],
        "program": "report {{ region }} {{ date }}",
        "schedule": [
            {"type": "daily", "daytime": "09:00", "tz": "Europe/London", "args": {"region": "uk"}},
            {"type": "daily", "daytime": "09:00", "tz": "America/New_York", "args": {"region": "us"},
             "enabled": False},
        ]}, "report")
    assert [(s.enabled, s.args) for s in job.schedules] == [(True, {"region": "uk"}), (False, {"region": "us"})]


def test_schedule_args_must_be_params():
    with pytest.raises(JobErrors) as info:
        job_from_jso({"params": ["date"], "program": "x",
                      "schedule": {"type": "daily", "daytime": "09:00", "args": {"region": "uk"}}}, "t")
    assert [(e.key, e.msg) for e in info.value.errors] == [
        ("schedule.args.region", "not a param of this job (params: date); apsis would ignore it, "
                                 "apsis-lite refuses it: remove it or add the param")]


def test_unquoted_daytimes_in_yaml(tmp_path):
    (tmp_path / "j.yaml").write_text(
        "program: 'true'\n"
        "schedule:\n"
        "  start: {type: daily, daytime: [9:30, 17:00:30], tz: Europe/Paris}\n"
        "  stop: {type: daytime, daytime: 18:00, tz: Europe/Paris}\n")
    jobs, errors = load_jobs_dir(tmp_path)
    assert errors == []
    s = jobs["j"].schedules[0]
    assert [d.isoformat() for d in s.daytimes] == ["09:30:00", "17:00:30"]
    assert s.stop.to_jso() == {"type": "daytime", "daytime": "18:00", "tz": "Europe/Paris"}


def test_catch_up_parsing_and_storage():
    base = {"program": "x", "schedule": {"type": "cron", "expr": "@hourly"}}
    assert job_from_jso(base, "t").catch_up is None
    job = job_from_jso({**base, "catch_up": {"missed": "all", "max": 10}}, "t")
    assert job.catch_up == {"missed": "all", "max": 10}
    assert job.to_jso()["catch_up"] == {"missed": "all", "max": 10}
    assert job_from_jso({**base, "catch_up": {"missed": "latest"}}, "t").catch_up == {"missed": "latest", "max": None}
    # Stored as JSON and read back (ad hoc jobs).
    again = job_from_jso(job.to_jso(), "t", adhoc=True)
    assert again.catch_up == job.catch_up and again.schedules == job.schedules


@pytest.mark.parametrize("catch_up, problems", [
    ({"missed": "some"}, [("catch_up.missed", "expected one of all, latest, none, got str 'some'")]),
    ({"missed": "all", "max": 0}, [("catch_up.max", "expected a whole number of at least 1, got int 0")]),
    ({"missed": "none", "max": 3}, [("catch_up.max", "only allowed with missed: all (missed is none)")]),
    ({"max": 3}, [("catch_up.missed", "missing (required)")]),
    ({"missed": "all", "maximum": 3}, [("catch_up.maximum",
                                        "unknown key (did you mean 'max'?); expected: missed, max")]),
    ("all", [("catch_up", "expected a catch_up mapping, got str 'all'")]),
])
def test_catch_up_errors(catch_up, problems):
    with pytest.raises(JobErrors) as info:
        job_from_jso({"program": "x", "catch_up": catch_up}, "t")
    assert [(e.key, e.msg) for e in info.value.errors] == problems


def test_stop_schedule_in_a_job_round_trips_through_storage():
    job = job_from_jso({"program": "x", "schedule": {
        "start": {"type": "daily", "daytime": "09:00", "calendar": "Mon-Fri - US-holidays",
                  "tz": "America/New_York", "jitter": "1m"},
        "stop": {"type": "duration", "duration": "8h"}}}, "t")
    s = job.schedules[0]
    assert s.stop.duration == 8 * 3600 and s.jitter == 60
    stored = job.to_jso()
    assert stored["schedules"][0]["description"] == (
        "daily at 09:00 on Mon-Fri - US-holidays America/New_York; stop after 8 h; jitter 1 min")
    assert job_from_jso(stored, "t", adhoc=True).schedules == job.schedules


def test_example_jobs_load():
    folder = os.path.join(os.path.dirname(__file__), "..", "..", "jobs")
    jobs, errors = load_jobs_dir(folder)
    assert [e for e in errors if "/schedules/" in e.path] == []
    names = {"daily report", "business hours poll", "settlement t+1", "dst choices", "nightly with stop"}
    assert {j.split("/")[-1] for j in jobs if j.startswith("examples/schedules/")} == names
    report = jobs["examples/schedules/daily report"]
    assert report.catch_up == {"missed": "latest", "max": None}
    assert bind(report, {"date": "2026-11-30", "daytime": "09:00:00"})["program"]["command"] == (
        "echo \"Report for 2026-11-30 (09:00:00)\"\n"
        "# The business day before, and the date in another form:\n"
        "echo \"Previous business day: 2026-11-27\"\n"
        "echo \"File suffix: 20261130\"\n")

"""apsis's job files: the folder tests/model/apsis_jobs, one file per feature apsis documents,
loads without a problem and gives the due times, args and stop times apsis's documentation says."""

from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

import pytest

import apsis_lite.engine.housekeeping_programs  # noqa: F401 (apsis's internal programs)
from apsis_lite.model.calendars import load_calendars
from apsis_lite.model.jobs import load_jobs_dir
from apsis_lite.errors import BadRequest
from apsis_lite.model.fields import SpecError
from apsis_lite.model.jobs.binding import bind
from apsis_lite.model.programs import parse_program

FOLDER = Path(__file__).parent / "apsis_jobs"
START = datetime(2027, 1, 1, tzinfo=timezone.utc)  # a Friday


@pytest.fixture(scope="module")
def jobs():
    calendars, problems = load_calendars(FOLDER / "calendars")
    assert problems == []
    loaded, errors = load_jobs_dir(FOLDER / "jobs", calendars)
    assert [str(e) for e in errors] == []
    return loaded


def due(jobs, job_id, n, start=START, schedule=0):
    """The first ``n`` (ISO UTC time, args) of a job's schedule from ``start``."""
    times = jobs[job_id].schedules[schedule].times(start)
    return [(t.strftime("%Y-%m-%dT%H:%M:%SZ"), args) for t, args in islice(times, n)]


def due_times(jobs, job_id, n, start=START):
    return [t for t, _ in due(jobs, job_id, n, start)]


def test_every_file_of_the_folder_loads(jobs):
    files = sorted(str(p.relative_to(FOLDER / "jobs"))[:-5] for p in (FOLDER / "jobs").rglob("*.yaml"))
    assert sorted(jobs) == files and len(files) >= 30


def test_interval_runs_at_multiples_of_the_interval_from_the_epoch(jobs):
    assert due(jobs, "schedules/interval", 3) == [
        ("2027-01-01T00:00:00Z", {"time": "2027-01-01T00:00:00Z", "date": "2027-01-01", "daytime": "00:00:00"}),
        ("2027-01-01T04:00:00Z", {"time": "2027-01-01T04:00:00Z", "date": "2027-01-01", "daytime": "04:00:00"}),
        ("2027-01-01T08:00:00Z", {"time": "2027-01-01T08:00:00Z", "date": "2027-01-01", "daytime": "08:00:00"}),
    ]
    # With a phase; apsis's interval schedule supplies the UTC date and daytime too.
    assert due(jobs, "schedules/interval phase", 2)[1] == (
        "2027-01-01T01:10:00Z", {"time": "2027-01-01T01:10:00Z", "date": "2027-01-01", "daytime": "01:10:00"})


def test_daily_schedules(jobs):
    assert due_times(jobs, "schedules/daily", 2) == ["2027-01-01T09:30:00Z", "2027-01-02T09:30:00Z"]
    several = due(jobs, "schedules/daily several", 3)
    assert [t for t, _ in several] == ["2027-01-01T09:30:00Z", "2027-01-01T11:30:00Z", "2027-01-01T15:30:00Z"]
    assert [a["daytime"] for _, a in several] == ["10:30:00", "12:30:00", "16:30:00"]
    assert {k for _, a in several for k in a} == {"date", "time", "daytime", "tz", "calendar"}
    # Mon-Fri: Friday, then Monday.
    assert due_times(jobs, "schedules/daily calendar", 3) == [
        "2027-01-01T09:30:00Z", "2027-01-04T09:30:00Z", "2027-01-05T09:30:00Z"]


def test_date_and_calendar_shifts_keep_the_nominal_date(jobs):
    # Sunday 20:00 UTC, with the Monday after as the date.
    assert [(t, a["date"]) for t, a in due(jobs, "schedules/daily date shift", 2)] == [
        ("2027-01-03T20:00:00Z", "2027-01-04"), ("2027-01-10T20:00:00Z", "2027-01-11")]
    # Weekdays at 20:00 UTC the same day, but Friday's on the Sunday after.
    assert [(t, a["date"]) for t, a in due(jobs, "schedules/daily cal shift", 3)] == [
        ("2027-01-03T20:00:00Z", "2027-01-01"), ("2027-01-04T20:00:00Z", "2027-01-04"),
        ("2027-01-05T20:00:00Z", "2027-01-05")]


def test_daily_interval_excludes_its_stop_and_follows_its_calendar(jobs):
    times = due_times(jobs, "schedules/daily interval", 11)
    # Noon to 16:30 Tokyo (UTC+9) on Friday; then Monday.
    assert times[0] == "2027-01-01T03:00:00Z" and times[9] == "2027-01-01T07:30:00Z"
    assert times[10] == "2027-01-04T03:00:00Z"
    # A window opened a calendar date before and closed a physical date before its date.
    tuesday = [t for t, a in due(jobs, "schedules/daily interval shifts", 40) if a["date"] == "2027-01-05"]
    assert tuesday == ["2027-01-04T12:00:00Z", "2027-01-04T14:00:00Z", "2027-01-04T16:00:00Z"]


def test_daily_interval_has_no_runs_on_a_date_whose_start_does_not_exist(jobs):
    got = due(jobs, "schedules/daily interval dst gap", 4, datetime(2027, 3, 13, tzinfo=timezone.utc))
    # 2027-03-14 in New York jumps from 02:00 to 03:00: no 03:00 or 03:30 run that day.
    assert [(t, a["date"]) for t, a in got] == [
        ("2027-03-13T07:30:00Z", "2027-03-13"), ("2027-03-13T08:00:00Z", "2027-03-13"),
        ("2027-03-13T08:30:00Z", "2027-03-13"), ("2027-03-15T06:30:00Z", "2027-03-15")]


def test_stop_schedules(jobs):
    for job_id in ("schedules/stop duration", "schedules/stop daytime"):
        schedule = jobs[job_id].schedules[0]
        (start, _), = islice(schedule.times(START), 1)
        assert start.isoformat() == "2027-01-01T09:30:00+00:00"
        assert schedule.stop.stop_time(start).isoformat() == "2027-01-01T10:00:00+00:00"  # 11:00 Berlin


def test_several_schedules_their_args_and_enabled(jobs):
    first, second = jobs["schedules/several and args"].schedules
    assert (first.enabled, first.args) == (True, {"hostname": "server7.example.com"})
    assert (second.enabled, second.args) == (False, {"hostname": "server8.example.com", "time": "noon"})
    assert due(jobs, "schedules/several and args", 1)[0][1]["hostname"] == "server7.example.com"


def test_conditions(jobs):
    types = lambda job_id: [c["type"] for c in jobs[job_id].conditions]  # noqa: E731
    assert types("conditions/max running") == ["max_running"]
    assert types("conditions/dependency") == ["dependency"] * 3
    assert types("conditions/skip duplicate") == ["skip_duplicate"] * 2
    assert jobs["conditions/const"].conditions == ({"type": "const", "value": True},)
    bound = bind(jobs["conditions/dependency"], {"label": "x"})["conditions"]
    assert [(c["job_id"], c["args"]) for c in bound] == [("conditions/previous job", {"label": "foobar"})] * 3
    assert [c["states"] for c in bound][1] == ["success", "failure"]


def test_programs(jobs):
    assert bind(jobs["programs/argv"], {"date": "2027-01-04", "message": "hi"})["program"]["argv"] == [
        "/usr/bin/echo", "Hello, world!", "hi"]
    shell = bind(jobs["programs/shell"], {})["program"]
    assert shell["stop"] == {"signal": "SIGUSR2", "grace_period": 15.0}
    assert jobs["programs/stats"].program["type"] == "apsis-lite-stats"
    assert jobs["programs/vacuum"].program["type"] == "apsis-lite-vacuum"
    assert jobs["programs/no op"].metadata["labels"] == ["test", "blue-team"]


def test_archive_programs_with_an_absolute_path_and_templated_values(jobs):
    plain = bind(jobs["programs/archive"], {})["program"]
    assert plain == {"type": "apsis-lite-archive", "age": 1209600.0, "count": 10000, "chunk_size": 1000,
                     "chunk_sleep": 10.0, "path": "/var/lib/apsis/archive.db", "keep_per_job": 10}
    bound = bind(jobs["programs/archive by label"], {"label": "q4", "age": "3600"})["program"]
    assert (bound["age"], bound["path"], bound["count"]) == (3600.0, "/var/lib/apsis/archive/q4.db", 500)
    # A bad bound value is that run's error, naming the key; the job itself loaded.
    with pytest.raises(BadRequest, match=r"program\.age: not a duration: 'soon'"):
        bind(jobs["programs/archive by label"], {"label": "q4", "age": "soon"})


@pytest.mark.parametrize("jso, key, message", [
    ({"age": 60, "path": "sub/archive.db"}, "path", "not an archive file name or absolute path: 'sub/archive.db'"),
    ({"age": 60, "path": "/var/lib/apsis/"}, "path", "names a folder"),
    ({"path": "x.db"}, "older_than", "missing (required): give older_than, or apsis's age"),
    ({"age": 60, "older_than": "1d"}, "age", "not both"),
    ({"age": "{{ age }}", "count": -1}, "count", "expected a whole number"),
    ({"age": 60, "chunk_size": 0}, "chunk_size", "at least 1"),
])
def test_archive_program_refusals_name_the_key(jso, key, message):
    with pytest.raises(SpecError) as caught:
        parse_program({"type": "apsis.program.internal.archive.ArchiveProgram", **jso},
                      allow_templates=True)
    assert [k for k, _ in caught.value.problems] == [key] and message in caught.value.problems[0][1]


def test_templates_with_apsis_names(jobs):
    bound = bind(jobs["templates/fruit"], {"color": "red", "fruit": "apple"})["program"]
    assert bound["command"] == "echo The color of apple is red."
    # get_calendar with a calendar file in ora's format: Monday's previous workday is Friday.
    cond, = bind(jobs["templates/previous workday"], {"region": "eu", "date": "2027-01-11"})["conditions"]
    assert cond["args"] == {"date": "2027-01-08"}  # region, a shared param, is filled in when checked
    assert set(jobs["templates/load data"].params) == {"region", "date"}  # params as a YAML set
    argv = bind(jobs["templates/ora names"], {"date": "2027-01-08", "time": "2027-01-08T15:00:00Z"}
                )["program"]["argv"]
    assert argv == ["2027-01-09", "2027-01-07", "2027-01-11", "10:00:00", "2027-01-08T09:30:00Z", "7"]

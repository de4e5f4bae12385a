"""What apsis's job files rely on, feature by feature: ora's template names, ora's calendar
files, params as a mapping, schedule args apsis ignores, daily-interval's DST gap rule,
the const condition, and class-path types no extension registers."""

from datetime import datetime, timezone
from itertools import islice

import pytest
from hypothesis import given, settings
from strategies_jobs import ora_dates, ora_day_counts, ora_zones

from apsis_lite.errors import BadRequest
from apsis_lite.model.calendars import CalendarError, CalendarLibrary, parse_calendar_text
from apsis_lite.model.conditions import parse_condition
from apsis_lite.model.jobs import JobErrors, job_from_jso
from apsis_lite.model.jobs.binding import bind
from apsis_lite.model.schedules import parse_schedule


def render(template, calendars=None, **args):
    job = job_from_jso({"params": sorted(args), "program": ["echo", template]}, "j",
                       calendars=calendars)
    return bind(job, args)["program"]["argv"][1]


@pytest.mark.parametrize("template, expected", [
    ("{{ Date(date) + 1 }}", "2027-03-13"),           # a Friday's next day
    ("{{ Date(date) - 12 }}", "2027-02-28"),
    ("{{ Date(date) - Date('2027-01-01') }}", "70"),
    ("{{ Date(2027, 3, 12).weekday }} {{ Date(20270312).ymdi }}", "Fri 20270312"),
    ("{{ (Date(date) + 3) | strftime('%d %b') }}", "15 Mar"),   # ours take ora's values
    ("{{ get_calendar('Mon-Fri').after(date) }}", "2027-03-15"),
    ("{{ get_calendar('Mon-Fri - US-holidays').before('2027-07-06') }}", "2027-07-02"),
    ("{{ get_calendar('Mon-Fri').shift(date, -5) - 1 }}", "2027-03-04"),
    ("{{ Date(date) in get_calendar('Sat,Sun') }} {{ get_calendar('Fri').contains(date) }}", "False True"),
    ("{{ Daytime('09:30') + 90 }} {{ Daytime(17, 0) - Daytime('16:59:30') }}", "09:31:30 30.0"),
    ("{{ Time(time) + 3600 }} {{ Time(time) - Time('2027-03-12T14:00:00Z') }}", "2027-03-12T16:00:00Z 3600.0"),
    ("{{ to_local(time, 'America/New_York') }}", "2027-03-12T10:00:00"),
    ("{{ to_local(Time(time), TimeZone('Asia/Tokyo')).date }}", "2027-03-13"),
    ("{{ from_local((Date(date), Daytime('09:30')), 'Europe/London') }}", "2027-03-12T09:30:00Z"),
    ("{{ from_local(date, '01:30', 'America/New_York') }}", "2027-03-12T06:30:00Z"),
    # The repeated hour when the clocks fall back: its first occurrence, as ora's default.
    ("{{ from_local(('2027-11-07', '01:30'), 'America/New_York') }}", "2027-11-07T05:30:00Z"),
    ("{{ Time(2027, 3, 12, 10, 0, 0, 'America/New_York') }}", "2027-03-12T15:00:00Z"),
])
def test_ora_names_in_templates(template, expected):
    assert render(template, date="2027-03-12", time="2027-03-12T15:00:00Z") == expected


@pytest.mark.parametrize("template, message", [
    ("{{ from_local(('2027-03-14', '02:30'), 'America/New_York') }}",
     "2027-03-14 02:30:00 does not exist in America/New_York (the clocks jump past it)"),
    ("{{ Date(date) + 0.5 }}", "days must be a whole number, not 0.5"),
    ("{{ Date('tomorrow-ish') }}", "not a date: 'tomorrow-ish'"),
    ("{{ TimeZone('Mars/Base') }}", "unknown time zone"),
    ("{{ Date(date).__class__ }}", "unsafe"),       # still the sandbox
])
def test_ora_names_fail_with_a_reason(template, message):
    with pytest.raises(BadRequest, match="template error") as info:
        render(template, date="2027-03-12")
    assert message in str(info.value)


def test_get_calendar_reads_a_calendar_file_in_oras_format():
    workdays = parse_calendar_text("START 2027-01-01\nSTOP 2028-01-01\n\n2027-01-08 Friday\n"
                                   "2027-01-11 a Monday, after a weekend # and a comment\n", "workdays")
    assert sorted(workdays.dates_set) == [datetime(2027, 1, 8).date(), datetime(2027, 1, 11).date()]
    assert render("{{ get_calendar('workdays').before(date) }}", CalendarLibrary({"workdays": workdays}),
                  date="2027-01-11") == "2027-01-08"


@pytest.mark.parametrize("text, message", [
    ("START 2027-01-01\nSTOP 2027-02-01\n2027-02-01 Feb", "line 3: 2027-02-01 is outside START 2027-01-01 "
                                                          "to STOP 2027-02-01 (STOP excluded)"),
    ("START 2027-01-01\n2027-01-02", "START and STOP go together: give both or neither"),
    ("START 2027-01-01\nSTOP 2026-01-01", "STOP 2026-01-01 is not after START 2027-01-01"),
    ("START 2027-01-01\nSTART 2027-01-02\nSTOP 2028-01-01", "line 2: a second START line"),
    ("STOP soon", "line 1: STOP needs a date (YYYY-MM-DD): 'STOP soon'"),
])
def test_bad_ora_calendar_files_name_the_line(text, message):
    with pytest.raises(CalendarError) as info:
        parse_calendar_text(text, "cal")
    assert str(info.value) == message


def test_params_as_a_mapping_are_its_keys_as_in_apsis():
    assert job_from_jso({"params": {"date": None, "region": None}, "program": "x"}, "j").params == (
        "date", "region")
    assert job_from_jso({"params": {"date": "ignored"}, "program": "x"}, "j").params == ("date",)
    # A mapping of name: and pattern: is still one param with a pattern.
    job = job_from_jso({"params": {"name": "date", "pattern": r"\d+"}, "program": "x"}, "j")
    assert (job.params, dict(job.param_patterns)) == (("date",), {"date": r"\d+"})


def test_schedule_args_apsis_would_ignore_stay_an_error_saying_so():
    with pytest.raises(JobErrors) as info:
        job_from_jso({"params": ["host", "time"], "program": "x",
                      "schedule": {"type": "daily", "daytime": "12:00", "args": {"message": "hi", "host": "a"}}},
                     "j")
    assert [(e.key, e.msg) for e in info.value.errors] == [
        ("schedule.args.message", "not a param of this job (params: host, time); apsis would ignore it, "
                                  "apsis-lite refuses it: remove it or add the param")]


def _gap_day(dst):
    jso = {"type": "daily-interval", "start": "02:00", "stop": "04:00", "interval": "1h",
           "tz": "America/New_York", **({"dst": dst} if dst else {})}
    times = parse_schedule(jso).times(datetime(2027, 3, 14, tzinfo=timezone.utc))
    return [(t.strftime("%d %H:%M"), a["daytime"]) for t, a in islice(times, 2)]


def test_daily_interval_gap_skip_drops_a_date_whose_start_does_not_exist():
    # The default: on 2027-03-14 the 02:00 slot runs when the clocks jump (07:00Z, 03:00 EDT),
    # and the 03:00 slot, at the same instant, is the same run.
    assert _gap_day(None) == [("14 07:00", "02:00:00"), ("15 06:00", "02:00:00")]
    # apsis's rule: no runs on 2027-03-14; the next is 02:00 EDT on the 15th.
    assert _gap_day({"gap": "skip"}) == [("15 06:00", "02:00:00"), ("15 07:00", "03:00:00")]


def test_const_condition():
    assert parse_condition({"type": "const", "value": True}).check(None, None).ok
    held = parse_condition({"type": "apsis.cond.base.ConstantCondition", "value": False}).check(None, None)
    assert not held.ok and "never holds" in held.reason
    with pytest.raises(JobErrors) as info:
        job_from_jso({"program": "x", "condition": {"type": "const", "value": "yes"}}, "j")
    assert [e.key for e in info.value.errors] == ["condition.value"]


def test_a_class_path_type_no_extension_registers_says_what_is_missing():
    with pytest.raises(JobErrors) as info:
        job_from_jso({"program": {"type": "acme.scheduling.programs.SparkJob"},
                      "condition": {"type": "apsis.cond.test.TestThreadPolledCondition"}}, "j")
    program, condition = (e.msg for e in info.value.errors)
    assert program.startswith(
        "unknown program type 'acme.scheduling.programs.SparkJob': a class path loads only when an extension "
        "registers it, and none loaded does: the extension for module 'acme.scheduling.programs' is missing "
        "from the config's extensions: (see docs/extensions.md) (known: ")
    assert condition.startswith("unknown condition type 'apsis.cond.test.TestThreadPolledCondition': one of "
                                "apsis's own test classes, which apsis-lite does not provide (known: ")


@settings(max_examples=150, deadline=None)
@given(d=ora_dates, n=ora_day_counts, zone=ora_zones)
def test_ora_names_agree_with_our_helpers(d, n, zone):
    """Date arithmetic, get_calendar and to_local/from_local give what our own helpers give."""
    out = render("{{ Date(date) + n | int }}|{{ date | add_days(n) }}|{{ (Date(date) + n | int) - Date(date) }}|"
                 "{{ get_calendar('Mon-Fri').before(date) }}|{{ calendar('Mon-Fri').before(date) }}|"
                 "{{ from_local(to_local(Time(date ~ 'T12:00:00Z'), zone), zone) }}",
                 date=d.isoformat(), n=str(n), zone=zone)
    ora_shift, our_shift, days, ora_before, our_before, round_trip = out.split("|")
    assert ora_shift == our_shift and int(days) == n
    assert ora_before == our_before
    assert round_trip == f"{d.isoformat()}T12:00:00Z"  # noon UTC is never in a gap or a repeat


def test_ora_values_keep_templates_inside_the_sandbox():
    for template in ("{{ TimeZone('UTC')._zone }}", "{{ get_calendar('Mon-Fri')._calendar }}",
                     "{{ to_local('2027-01-01T00:00:00Z', 'UTC')._asdict() }}"):
        with pytest.raises(BadRequest, match="unsafe"):
            render(template, date="2027-03-12")

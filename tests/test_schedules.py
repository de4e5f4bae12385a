"""Schedule types: exact due times from explicit start times; no clock reads."""

from datetime import datetime, timedelta, timezone
from itertools import islice

import pytest

from apsis_lite.registry import SCHEDULES
from apsis_lite.schedules import (
    CronSchedule, ExplicitSchedule, IntervalSchedule, Schedule, SpecError, parse_schedule,
)

UTC = timezone.utc


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def first(schedule, start, n):
    return list(islice(schedule.times(start), n))


def due(schedule, start, n):
    return [t for t, _ in first(schedule, start, n)]


def iso(schedule, start, n):
    """Due times as ISO text in UTC, for compact tables."""
    return [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in due(schedule, start, n)]


def problems(jso):
    with pytest.raises(SpecError) as info:
        parse_schedule(jso)
    return info.value.problems


# --- interval ---------------------------------------------------------------

def test_interval_with_phase_exact_times():
    s = parse_schedule({"type": "interval", "interval": "5 min", "phase": 60})
    assert isinstance(s, IntervalSchedule)
    assert due(s, utc(2026, 11, 26, 10, 3, 7), 3) == [
        utc(2026, 11, 26, 10, 6), utc(2026, 11, 26, 10, 11), utc(2026, 11, 26, 10, 16)]


def test_interval_includes_a_start_on_a_due_time_and_respects_microseconds():
    s = parse_schedule({"type": "interval", "interval": 60})
    assert due(s, utc(2026, 1, 1, 0, 1), 1) == [utc(2026, 1, 1, 0, 1)]
    assert due(s, utc(2026, 1, 1, 0, 1, 0, 1), 1) == [utc(2026, 1, 1, 0, 2)]


def test_interval_supplies_time_in_utc_and_merges_args():
    s = parse_schedule({"type": "interval", "interval": "1h", "args": {"region": "eu", "n": 3}})
    t, args = first(s, utc(2026, 11, 26, 9, 30), 1)[0]
    assert t == utc(2026, 11, 26, 10)
    assert args == {"time": "2026-11-26T10:00:00Z", "region": "eu", "n": "3"}


def test_interval_fractional_is_exact():
    s = parse_schedule({"type": "interval", "interval": 1.5})
    assert due(s, utc(2026, 1, 1), 3) == [
        utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 1, 500000), utc(2026, 1, 1, 0, 0, 3)]


def test_interval_start_in_another_zone_is_converted():
    s = parse_schedule({"type": "interval", "interval": "1 day"})
    start = datetime(2026, 6, 1, 20, 0, tzinfo=timezone(timedelta(hours=-4)))  # 2026-06-02T00:00Z
    assert due(s, start, 1) == [utc(2026, 6, 2)]
    assert due(s, start, 1)[0].tzinfo is UTC


def test_interval_describe_and_jso():
    s = parse_schedule({"type": "interval", "interval": "5 min", "phase": "1 min"})
    assert s.describe() == "every 5 min at +1 min"
    assert s.to_jso() == {"type": "interval", "enabled": True, "args": {},
                          "interval": 300.0, "phase": 60.0}
    assert parse_schedule(s.to_jso()) == s


def test_interval_errors():
    assert problems({"type": "interval", "interval": "x"}) == [("interval", "not a duration: 'x'")]
    assert problems({"type": "interval"}) == [("interval", "missing (required)")]
    assert problems({"type": "interval", "interval": 0}) == [
        ("interval", "must be more than zero: 0")]
    assert problems({"type": "interval", "interval": 60, "phase": 60})[0][0] == "phase"


def test_times_needs_an_aware_start():
    s = parse_schedule({"type": "interval", "interval": 60})
    with pytest.raises(ValueError):
        next(s.times(datetime(2026, 1, 1)))


# --- cron -------------------------------------------------------------------

def test_cron_or_rule_dom_and_dow():
    """Both day fields restricted: the 13th OR any Friday (April 2026: the 13th is a Monday)."""
    s = parse_schedule({"type": "cron", "expr": "0 0 13 * FRI"})
    assert [t.day for t in due(s, utc(2026, 4, 1), 6)] == [3, 10, 13, 17, 24, 1]


def test_cron_and_rule_when_one_day_field_is_star():
    s = parse_schedule({"type": "cron", "expr": "0 0 * * fri"})
    assert [t.day for t in due(s, utc(2026, 4, 1), 3)] == [3, 10, 17]


def test_cron_in_zone_supplies_local_time_and_date():
    s = parse_schedule({"type": "cron", "expr": "0 16 * * Mon-Fri", "tz": "America/New_York"})
    got = first(s, utc(2026, 11, 26, 12), 3)  # Thursday
    assert [t for t, _ in got] == [utc(2026, 11, 26, 21), utc(2026, 11, 27, 21), utc(2026, 11, 30, 21)]
    assert got[0][1] == {"time": "2026-11-26T16:00:00-05:00", "date": "2026-11-26"}
    assert s.describe() == "cron '0 16 * * Mon-Fri' in America/New_York"


def test_cron_start_is_inclusive_and_times_increase():
    s = parse_schedule({"type": "cron", "expr": "*/5 * * * *"})
    assert iso(s, utc(2026, 1, 1, 0, 5), 2) == ["2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z"]
    assert iso(s, utc(2026, 1, 1, 0, 5, 0, 1), 1) == ["2026-01-01T00:10:00Z"]


def test_cron_seconds_field():
    s = parse_schedule({"type": "cron", "expr": "*/20 * * * * *"})
    assert due(s, utc(2026, 1, 1, 0, 0, 1), 3) == [
        utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 40), utc(2026, 1, 1, 0, 1)]


@pytest.mark.parametrize("macro, expected", [
    ("@hourly", ["2026-03-15T11:00:00Z", "2026-03-15T12:00:00Z"]),
    ("@daily", ["2026-03-16T00:00:00Z", "2026-03-17T00:00:00Z"]),
    ("@midnight", ["2026-03-16T00:00:00Z", "2026-03-17T00:00:00Z"]),
    ("@weekly", ["2026-03-22T00:00:00Z", "2026-03-29T00:00:00Z"]),  # Sundays
    ("@monthly", ["2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"]),
    ("@yearly", ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]),
    ("@ANNUALLY", ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]),
])
def test_cron_macros(macro, expected):
    s = parse_schedule({"type": "cron", "expr": macro})
    assert iso(s, utc(2026, 3, 15, 10, 30), 2) == expected  # a Sunday


def test_cron_lower_case_names():
    s = parse_schedule({"type": "cron", "expr": "0 9 1 jan,jul mon-fri"})
    # OR rule: 1 January or July, or any weekday, in those months.
    assert iso(s, utc(2026, 6, 30), 3) == [
        "2026-07-01T09:00:00Z", "2026-07-02T09:00:00Z", "2026-07-03T09:00:00Z"]
    assert s.to_jso()["expr"] == "0 9 1 jan,jul mon-fri"


def test_cron_errors():
    assert problems({"type": "cron", "expr": "61 * * * *"}) == [
        ("expr", "bad cron expression '61 * * * *': Bad minute")]
    assert problems({"type": "cron", "expr": "* * *"})[0][0] == "expr"
    assert "unknown cron macro" in problems({"type": "cron", "expr": "@reboot"})[0][1]
    assert problems({"type": "cron", "expr": "@daily", "tz": "Mars/Olympus"}) == [
        ("tz", "unknown time zone: 'Mars/Olympus'")]


class TestCronDst:
    """Cron across America/New_York's 2026 transitions (8 March 02:00 EST -> 03:00 EDT,
    1 November 02:00 EDT -> 01:00 EST).

    Fixed minute and hour (neither field starts with ``*``): wall-clock times,
    Debian cron's rule as cronsim implements it for 5-field expressions, and
    apsis-lite applies to 6-field ones too: a time in the spring-forward gap
    runs once, at the first minute after it (02:30 -> 03:00 EDT); a time in
    the repeated hour runs once, at its first occurrence (EDT).
    Otherwise elapsed time: the missing hour has no runs and the repeated
    hour runs at both offsets. No run is lost or doubled beyond that.
    """

    def sched(self, expr):
        return parse_schedule({"type": "cron", "expr": expr, "tz": "America/New_York"})

    def local(self, expr, start, n):
        return [a["time"] for _, a in first(self.sched(expr), start, n)]

    def test_spring_forward_fixed_time_runs_at_end_of_gap(self):
        assert self.local("30 2 * * *", utc(2026, 3, 7, 12), 3) == [
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:30:00-04:00",
            "2026-03-10T02:30:00-04:00",
        ]

    def test_spring_forward_gap_times_collapse_to_one_run(self):
        assert self.local("0,30 2 * * *", utc(2026, 3, 7, 12), 3) == [
            "2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00", "2026-03-09T02:30:00-04:00"]

    def test_fall_back_fixed_time_runs_once_at_first_occurrence(self):
        s = self.sched("30 1 * * *")
        assert due(s, utc(2026, 10, 31, 12), 2) == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
        assert self.local("30 1 * * *", utc(2026, 10, 31, 12), 1) == ["2026-11-01T01:30:00-04:00"]

    def test_fall_back_start_inside_repeated_hour_does_not_rerun(self):
        # 01:45 EST, after the 01:30 EDT run: the next run is the next day.
        assert due(self.sched("30 1 * * *"), utc(2026, 11, 1, 6, 45), 1) == [utc(2026, 11, 2, 6, 30)]
        # 01:15 EST is after 01:30 EDT too.
        assert due(self.sched("30 1 * * *"), utc(2026, 11, 1, 6, 15), 1) == [utc(2026, 11, 2, 6, 30)]

    def test_six_fields_follow_the_same_rule(self):
        assert due(self.sched("0 30 1 * * *"), utc(2026, 10, 31, 12), 2) == [
            utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
        assert self.local("0 30 2 * * *", utc(2026, 3, 7, 12), 1) == ["2026-03-08T03:00:00-04:00"]

    def test_hourly_spring_forward_has_no_run_in_missing_hour(self):
        got = self.local("30 * * * *", utc(2026, 3, 8, 5), 4)  # from 00:00 EST
        assert got == ["2026-03-08T00:30:00-05:00", "2026-03-08T01:30:00-05:00",
                       "2026-03-08T03:30:00-04:00", "2026-03-08T04:30:00-04:00"]

    def test_hourly_fall_back_runs_at_both_offsets(self):
        got = self.local("30 * * * *", utc(2026, 11, 1, 4), 4)  # from 00:00 EDT
        assert got == ["2026-11-01T00:30:00-04:00", "2026-11-01T01:30:00-04:00",
                       "2026-11-01T01:30:00-05:00", "2026-11-01T02:30:00-05:00"]

    def test_dates_are_local(self):
        _, args = first(self.sched("30 23 * * *"), utc(2026, 11, 1), 1)[0]
        assert args == {"time": "2026-10-31T23:30:00-04:00", "date": "2026-10-31"}


def test_cron_is_cheap_to_start_far_from_epoch():
    s = parse_schedule({"type": "cron", "expr": "0 16 * * Mon-Fri", "tz": "America/New_York"})
    assert due(s, utc(2400, 1, 3), 1) == [utc(2400, 1, 3, 21)]


# --- explicit ---------------------------------------------------------------

def test_explicit_sorted_deduplicated_and_from_start():
    s = parse_schedule({"type": "explicit", "times": [
        "2026-11-27T10:00:00Z", utc(2026, 11, 26, 10), "2026-11-26T05:00:00-05:00",
        "2026-11-25T10:00:00+00:00"]})
    assert isinstance(s, ExplicitSchedule)
    assert first(s, utc(2026, 11, 26, 10), 5) == [
        (utc(2026, 11, 26, 10), {"time": "2026-11-26T10:00:00Z"}),
        (utc(2026, 11, 27, 10), {"time": "2026-11-27T10:00:00Z"}),
    ]
    assert s.describe() == ("at 2026-11-25T10:00:00Z, 2026-11-26T10:00:00Z, "
                            "2026-11-27T10:00:00Z")


def test_explicit_needs_a_zone_unless_tz_is_given():
    assert problems({"type": "explicit", "times": ["2026-11-26T10:00:00Z", "2026-11-26 10:00"]}) == [
        ("times[1]", "no time zone in '2026-11-26 10:00'; add one or give tz:")]
    assert problems({"type": "explicit", "times": [datetime(2026, 11, 26, 10)]})[0][0] == "times[0]"
    s = parse_schedule({"type": "explicit", "tz": "America/New_York", "times": ["2026-11-26 10:00"]})
    assert due(s, utc(2026, 1, 1), 1) == [utc(2026, 11, 26, 15)]


def test_explicit_errors():
    assert problems({"type": "explicit", "times": []}) == [("times", "expected at least one time")]
    from datetime import date
    assert "a date, not a time" in problems({"type": "explicit", "times": [date(2026, 1, 1)]})[0][1]
    assert problems({"type": "explicit", "times": ["now"]})[0][0] == "times[0]"
    assert problems({"type": "explicit", "times": ["soon"]})[0] == ("times[0]", "not a time: 'soon'")


def test_explicit_apsis_alias():
    s = parse_schedule({"type": "apsis.schedule.ExplicitSchedule", "times": ["2026-01-01T00:00:00Z"]})
    assert s.to_jso()["type"] == "explicit"


# --- common -----------------------------------------------------------------

def test_unknown_type_lists_known_types():
    assert problems({"type": "hourly"}) == [
        ("type", "unknown schedule type 'hourly' (known: cron, explicit, interval)")]
    key, msg = problems({"interval": 60})[0]
    assert key == "type" and "known: cron, explicit, interval" in msg
    assert "apsis.schedule.IntervalSchedule" in SCHEDULES


def test_unknown_keys_and_common_keys_are_checked_together():
    got = problems({"type": "interval", "interval": "x", "enabld": False, "args": {"a": [1]},
                    "enabled": "no"})
    assert got == [
        ("enabled", "expected true or false, got str 'no'"),
        ("args.a", "expected a string, got a list"),
        ("interval", "not a duration: 'x'"),
        ("enabld", "unknown key (did you mean 'enabled'?); expected: type, enabled, args, "
                   "interval, phase"),
    ]


def test_not_a_mapping():
    assert problems(["interval"]) == [("", "expected a schedule mapping, got a list")]


def test_disabled_and_base_from_jso():
    s = Schedule.from_jso({"type": "cron", "expr": "@daily", "enabled": False})
    assert isinstance(s, CronSchedule) and s.enabled is False
    assert s.to_jso() == {"type": "cron", "enabled": False, "args": {}, "expr": "@daily", "tz": "UTC"}

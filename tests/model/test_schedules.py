"""Schedule types: exact due times from explicit start times; no clock reads."""

import time
from datetime import datetime, timedelta, timezone
from itertools import islice

import pytest

from apsis_lite.model.registry import SCHEDULES
from apsis_lite.model.schedules import (
    CronSchedule, DailyIntervalSchedule, DailySchedule, ExplicitSchedule, IntervalSchedule, Schedule,
    SpecError, parse_schedule,
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
    # apsis's interval schedule supplies the UTC date and daytime too.
    assert args == {"time": "2026-11-26T10:00:00Z", "date": "2026-11-26", "daytime": "10:00:00",
                    "region": "eu", "n": "3"}


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
        ("type", "unknown schedule type 'hourly' (known: cron, daily, daily-interval, explicit, interval)")]
    key, msg = problems({"interval": 60})[0]
    assert key == "type" and "known: cron, daily, daily-interval, explicit, interval" in msg
    assert "apsis.schedule.IntervalSchedule" in SCHEDULES


def test_unknown_keys_and_common_keys_are_checked_together():
    got = problems({"type": "interval", "interval": "x", "enabld": False, "args": {"a": [1]},
                    "enabled": "no"})
    assert got == [
        ("enabled", "expected true or false, got str 'no'"),
        ("args.a", "expected a string, got a list"),
        ("interval", "not a duration: 'x'"),
        ("enabld", "unknown key (did you mean 'enabled'?); expected: type, enabled, args, jitter, "
                   "interval, phase"),
    ]


def test_not_a_mapping():
    assert problems(["interval"]) == [("", "expected a schedule mapping, got a list")]


def test_disabled_and_base_from_jso():
    s = Schedule.from_jso({"type": "cron", "expr": "@daily", "enabled": False})
    assert isinstance(s, CronSchedule) and s.enabled is False
    assert s.to_jso() == {"type": "cron", "enabled": False, "args": {}, "expr": "@daily", "tz": "UTC"}


# --- daily ------------------------------------------------------------------

def test_daily_several_daytimes_with_calendar_and_args():
    s = parse_schedule({"type": "daily", "daytime": ["16:30", "09:00"], "tz": "America/New_York",
                        "calendar": "Mon-Fri - US-holidays", "args": {"region": "us"}})
    assert isinstance(s, DailySchedule)
    got = first(s, utc(2026, 11, 25, 20), 4)  # Wed 15:00 EST; Thu 26th is Thanksgiving
    assert [t for t, _ in got] == [utc(2026, 11, 25, 21, 30), utc(2026, 11, 27, 14),
                                   utc(2026, 11, 27, 21, 30), utc(2026, 11, 30, 14)]
    assert got[1][1] == {"date": "2026-11-27", "time": "2026-11-27T09:00:00-05:00", "daytime": "09:00:00",
                         "tz": "America/New_York", "calendar": "Mon-Fri - US-holidays", "region": "us"}
    assert s.describe() == "daily at 09:00, 16:30 on Mon-Fri - US-holidays America/New_York"


def test_daily_date_shift_keeps_the_nominal_date():
    s = parse_schedule({"type": "daily", "daytime": "02:00", "date_shift": 1})
    t, args = first(s, utc(2026, 1, 1, 3), 1)[0]
    assert t == utc(2026, 1, 2, 2) and args["date"] == "2026-01-01"


def test_daily_time_shift_moves_each_due_time_and_keeps_the_args():
    s = parse_schedule({"type": "daily", "daytime": "13:26:00", "tz": "America/New_York", "time_shift": "15s"})
    got = first(s, utc(2026, 1, 1, 18, 26, 10), 2)  # 10 s after 13:26 EST: that day's is still due
    assert [t for t, _ in got] == [utc(2026, 1, 1, 18, 26, 15), utc(2026, 1, 2, 18, 26, 15)]
    assert got[0][1]["time"] == "2026-01-01T13:26:00-05:00" and got[0][1]["date"] == "2026-01-01"
    assert due(s, utc(2026, 1, 1, 18, 26, 16), 1) == [utc(2026, 1, 2, 18, 26, 15)]
    assert s.describe().endswith("America/New_York +15.0 s")
    back = parse_schedule({"type": "daily", "daytime": "00:00:30", "time_shift": "-1 min"})
    assert due(back, utc(2026, 1, 1), 2) == [utc(2026, 1, 1, 23, 59, 30), utc(2026, 1, 2, 23, 59, 30)]
    assert parse_schedule(s.to_jso()) == s
    for bad, message in [("25h", "at most a day either way"), ("soon", "not a duration"), (True, "not a duration")]:
        with pytest.raises(SpecError, match=message):
            parse_schedule({"type": "daily", "daytime": "09:00", "time_shift": bad})


def test_daily_cal_shift_then_date_shift():
    """Nominal business day D runs on the next business day, at 06:00 the day after that."""
    s = parse_schedule({"type": "daily", "daytime": "06:00", "calendar": "Mon-Fri",
                        "cal_shift": 1, "date_shift": 1})
    got = [(t, a["date"]) for t, a in first(s, utc(2026, 11, 26), 3)]  # Thursday
    assert got == [
        (utc(2026, 11, 26, 6), "2026-11-24"),  # Tue -> Wed -> Thu
        (utc(2026, 11, 27, 6), "2026-11-25"),  # Wed -> Thu -> Fri
        (utc(2026, 11, 28, 6), "2026-11-26"),  # Thu -> Fri -> Sat
    ]
    assert [a["date"] for _, a in first(s, utc(2026, 11, 29), 2)] == ["2026-11-27", "2026-11-30"]
    # Fri 27th -> Mon 30th -> Tue 1 Dec 06:00; nothing runs on Sun 29th or Mon 30th.
    assert due(s, utc(2026, 11, 29), 1) == [utc(2026, 12, 1, 6)]


def test_daily_negative_cal_shift():
    s = parse_schedule({"type": "daily", "daytime": "18:00", "calendar": "Mon-Fri", "cal_shift": -1})
    # Nominal Monday 30 Nov runs on Friday 27th.
    got = [(t, a["date"]) for t, a in first(s, utc(2026, 11, 27), 2)]
    assert got == [(utc(2026, 11, 27, 18), "2026-11-30"), (utc(2026, 11, 30, 18), "2026-12-01")]


def test_daily_errors():
    assert problems({"type": "daily", "daytime": "25:00"}) == [
        ("daytime", "not a daytime: '25:00' (out of range)")]
    assert problems({"type": "daily", "daytime": ["09:00", 930]}) == [
        ("daytime[1]", "not a daytime: 930 (expected 'HH:MM' or 'HH:MM:SS')")]
    got = problems({"type": "daily", "daytime": "09:00", "calendar": "Mon-Fri - Narnia",
                    "tz": "Nowhere", "cal_shift": 1.5})
    assert [k for k, _ in got] == ["tz", "calendar", "cal_shift"]
    assert "unknown calendar 'Narnia'" in got[1][1]


def test_daily_round_trip():
    jso = {"type": "daily", "daytime": ["09:00", "17:30:15"], "tz": "Europe/London",
           "calendar": "Mon-Fri - UK-holidays", "cal_shift": -1, "date_shift": 2,
           "dst": {"gap": "skip"}, "jitter": "30s", "args": {"x": "1"}, "enabled": False}
    s = parse_schedule(jso)
    assert s.jitter == 30.0
    assert s.to_jso() == {"type": "daily", "enabled": False, "args": {"x": "1"}, "jitter": 30.0,
                          "daytime": ["09:00", "17:30:15"], "tz": "Europe/London",
                          "calendar": "Mon-Fri - UK-holidays", "date_shift": 2, "cal_shift": -1,
                          "dst": {"gap": "skip"}}
    assert parse_schedule(s.to_jso()) == s


def test_daily_on_a_finite_calendar_ends():
    from apsis_lite.model.calendars import load_calendars
    import tempfile, os
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "month-ends.cal"), "w") as f:
            f.write("2026-11-30\n2026-12-31  # year end\n")
        library, errors = load_calendars(folder)
    assert errors == []
    s = parse_schedule({"type": "daily", "daytime": "20:00", "calendar": "month-ends"}, library)
    assert due(s, utc(2026, 11, 1), 5) == [utc(2026, 11, 30, 20), utc(2026, 12, 31, 20)]


# --- daily-interval ------------------------------------------------------------

def test_daily_interval_stop_is_exclusive():
    s = parse_schedule({"type": "daily-interval", "start": "09:00", "stop": "10:00", "interval": "20m",
                        "calendar": "Mon-Fri"})
    assert isinstance(s, DailyIntervalSchedule)
    assert iso(s, utc(2026, 11, 27, 9, 30), 4) == [  # Friday, then Monday
        "2026-11-27T09:40:00Z", "2026-11-30T09:00:00Z", "2026-11-30T09:20:00Z", "2026-11-30T09:40:00Z"]


def test_daily_interval_window_past_midnight():
    s = parse_schedule({"type": "daily-interval", "start": "23:00",
                        "stop": {"daytime": "01:00", "date_shift": 1}, "interval": "30m",
                        "calendar": "Fri"})
    got = [(t.strftime("%a %H:%M"), a["date"], a["daytime"]) for t, a in first(s, utc(2026, 11, 27), 5)]
    assert got == [("Fri 23:00", "2026-11-27", "23:00:00"), ("Fri 23:30", "2026-11-27", "23:30:00"),
                   ("Sat 00:00", "2026-11-27", "00:00:00"), ("Sat 00:30", "2026-11-27", "00:30:00"),
                   ("Fri 23:00", "2026-12-04", "23:00:00")]


def test_daily_interval_stop_on_next_business_day():
    """Start Friday evening, stop on the next business day's morning: the window spans the weekend."""
    s = parse_schedule({"type": "daily-interval", "start": "22:00",
                        "stop": {"daytime": "02:00", "cal_shift": 1}, "interval": "12h",
                        "calendar": "Mon-Fri"})
    assert iso(s, utc(2026, 11, 27, 12), 6) == [
        "2026-11-27T22:00:00Z", "2026-11-28T10:00:00Z", "2026-11-28T22:00:00Z", "2026-11-29T10:00:00Z",
        "2026-11-29T22:00:00Z", "2026-11-30T22:00:00Z"]


def test_daily_interval_errors_and_round_trip():
    got = problems({"type": "daily-interval", "start": "10:00", "stop": "09:00", "interval": 0})
    assert [k for k, _ in got] == ["interval", "stop"]
    assert "date_shift: 1" in got[1][1]
    jso = {"type": "daily-interval", "start": {"daytime": "22:00", "cal_shift": -1},
           "stop": {"daytime": "06:00", "date_shift": 1}, "interval": "90s", "tz": "Asia/Tokyo",
           "calendar": "Mon-Fri"}
    s = parse_schedule(jso)
    assert parse_schedule(s.to_jso()) == s
    assert s.describe() == ("every 1 min 30 s from 22:00 -1 calendar days to 06:00 +1 days "
                            "on Mon-Fri Asia/Tokyo")



def test_daily_interval_whose_stop_is_shifted_before_its_start_says_so():
    got = problems({"type": "daily-interval", "start": {"daytime": "00:00", "date_shift": 1},
                    "stop": "00:00", "interval": "1h"})
    assert [k for k, _ in got] == ["stop"] and got[0][1].startswith("must be after start")

# --- stop schedules, jitter -------------------------------------------------------

def test_stop_form_duration_and_daytime():
    s = parse_schedule({"start": {"type": "daily", "daytime": "09:00", "tz": "Europe/Paris"},
                        "stop": {"type": "duration", "duration": "1h 30m"}})
    assert isinstance(s, DailySchedule) and s.stop.describe() == "stop after 1 h 30 min"
    t = next(s.times(utc(2026, 11, 26)))[0]
    assert s.stop.stop_time(t) == utc(2026, 11, 26, 9, 30)
    d = parse_schedule({"start": {"type": "interval", "interval": "1h"},
                        "stop": {"type": "daytime", "daytime": "17:00", "tz": "America/New_York"}})
    assert d.stop.stop_time(utc(2026, 11, 26, 21, 59)) == utc(2026, 11, 26, 22)
    assert d.stop.stop_time(utc(2026, 11, 26, 22)) == utc(2026, 11, 27, 22)  # strictly after
    for sched in (s, d):
        assert sched.to_jso()["stop"] in ({"type": "duration", "duration": 5400.0},
                                          {"type": "daytime", "daytime": "17:00", "tz": "America/New_York"})
        assert parse_schedule(sched.to_jso()) == sched


def test_stop_form_errors():
    assert problems({"start": {"type": "interval", "interval": 60}, "stop": {"type": "never"}}) == [
        ("stop.type", "unknown stop type 'never' (known: duration, daytime)")]
    assert problems({"start": {"type": "interval", "interval": 60},
                     "stop": {"type": "duration", "duration": "x"}, "enabled": False})[0][0] == "stop.duration"
    assert problems({"start": {"type": "interval"}, "stop": {"type": "daytime"}}) == [
        ("start.interval", "missing (required)"), ("stop.daytime", "missing (required)")]
    got = problems({"start": {"type": "interval", "interval": 60}, "stop": {"type": "duration", "duration": 1},
                    "enabled": False})
    assert got[0][0] == "enabled" and "expected: start, stop" in got[0][1]


def test_jitter_offset_is_stable_spread_and_bounded():
    from apsis_lite.model.schedules import jitter_offset
    t = utc(2026, 11, 26, 10)
    # Fixed values: a change of hash would move every job's start.
    assert round(jitter_offset("reports/daily", t, 60.0), 6) == round(jitter_offset("reports/daily", t, 60.0), 6)
    offsets = [jitter_offset(f"job{i}", t, 60.0) for i in range(1000)]
    assert all(0 <= o < 60 for o in offsets)
    assert len({round(o, 3) for o in offsets}) > 950
    buckets = [sum(1 for o in offsets if k * 6 <= o < (k + 1) * 6) for k in range(10)]
    assert min(buckets) > 60  # roughly even: 100 expected in each
    assert jitter_offset("job", t, 0.0) == 0.0
    assert jitter_offset("job", t, 60.0) != jitter_offset("job", utc(2026, 11, 26, 11), 60.0)


def test_jitter_offset_is_the_same_in_another_process():
    import subprocess, sys
    from apsis_lite.model.schedules import jitter_offset
    code = ("from datetime import datetime, timezone; from apsis_lite.model.schedules import jitter_offset; "
            "print(repr(jitter_offset('a/b', datetime(2026, 11, 26, 10, tzinfo=timezone.utc), 3600.0)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=".")
    assert float(out.stdout) == jitter_offset("a/b", utc(2026, 11, 26, 10), 3600.0)


def test_jitter_on_any_type():
    for jso in ({"type": "interval", "interval": 60}, {"type": "cron", "expr": "@hourly"},
                {"type": "explicit", "times": ["2026-01-01T00:00:00Z"]},
                {"type": "daily", "daytime": "09:00"}):
        s = parse_schedule({**jso, "jitter": "2 min"})
        assert s.jitter == 120.0 and parse_schedule(s.to_jso()) == s
    assert problems({"type": "interval", "interval": 60, "jitter": "soon"}) == [
        ("jitter", "not a duration: 'soon'")]


# --- bounds: every value that loads has due times that can be computed ----------------

@pytest.mark.parametrize("jso, key, message", [
    ({"type": "interval", "interval": 1e308}, "interval", "too long: 1e+308 (at most 100 years)"),
    ({"type": "interval", "interval": float("nan")}, "interval", "not a duration: nan"),
    ({"type": "interval", "interval": "36501 days"}, "interval", "too long: '36501 days' (at most 100 years)"),
    ({"type": "interval", "interval": 60, "jitter": float("inf")}, "jitter", "too long: inf (at most 100 years)"),
    ({"type": "daily", "daytime": "12:00", "date_shift": 3661}, "date_shift",
     "out of range: 3661 (at most 3,660 days either way)"),
    ({"type": "daily", "daytime": "12:00", "cal_shift": -367}, "cal_shift",
     "out of range: -367 (at most 366 calendar dates either way)"),
    ({"type": "daily-interval", "start": {"daytime": "10:00", "date_shift": 99999999999},
      "stop": "11:00", "interval": 60}, "start.date_shift",
     "out of range: 99999999999 (at most 3,660 days either way)"),
    ({"type": "explicit", "times": [1e30]}, "times[0]", "time out of range: 1e+30 epoch seconds"),
    ({"type": "explicit", "times": ["1969-12-31T23:59:59Z"]}, "times[0]",
     "out of range: '1969-12-31T23:59:59Z' (times must be in the years 1970 to 9999)"),
])
def test_values_past_the_bounds_are_refused(jso, key, message):
    assert problems(jso) == [(key, message)]


@pytest.mark.parametrize("jso", [
    {"type": "interval", "interval": "36500 days"},
    {"type": "interval", "interval": 7},
    {"type": "daily", "daytime": "23:30", "tz": "Pacific/Kiritimati", "date_shift": 3660},
    {"type": "daily", "daytime": "00:30", "tz": "Pacific/Pago_Pago", "date_shift": -3660,
     "calendar": "Mon-Fri", "cal_shift": 366},
    {"type": "daily-interval", "start": "22:00", "stop": {"daytime": "02:00", "date_shift": 1},
     "interval": "1h", "tz": "America/New_York"},
    {"type": "cron", "expr": "0 0 29 2 *", "tz": "Asia/Tokyo"},
    {"type": "cron", "expr": "* * * * * *"},
    {"type": "explicit", "times": ["9999-12-31T23:59:59Z"]},
])
def test_times_end_at_the_last_date_instead_of_raising(jso):
    s = parse_schedule(jso)
    for start in (utc(9999, 12, 31, 23), utc(9999, 12, 25), utc(9990, 1, 1)):
        times = due(s, start, 100_000 if jso["type"] == "cron" else 5_000)
        assert all(start <= t <= utc(9999, 12, 31, 23, 59, 59, 999999) for t in times)
        assert times == sorted(set(times))


def test_a_daily_interval_whose_windows_never_open_has_no_times():
    # Each window starts at 10:00 on the next calendar date and stops at 09:00
    # on the next day, which is never later: no window ever opens.
    never = parse_schedule({"type": "daily-interval", "calendar": "Mon-Fri", "interval": "1h",
                            "start": {"daytime": "10:00", "cal_shift": 1},
                            "stop": {"daytime": "09:00", "date_shift": 1}})
    t0 = time.monotonic()
    assert due(never, utc(2026, 11, 30), 5) == []
    assert time.monotonic() - t0 < 2
    fridays_only = parse_schedule({"type": "daily-interval", "calendar": "Mon-Fri", "interval": "1h",
                                   "start": {"daytime": "10:00", "date_shift": 3},
                                   "stop": {"daytime": "12:00", "cal_shift": 1}})
    assert iso(fridays_only, utc(2026, 11, 30), 3) == [  # the windows of Fridays, on Mondays
        "2026-11-30T10:00:00Z", "2026-11-30T11:00:00Z", "2026-12-07T10:00:00Z"]


# --- properties -------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_ZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Tokyo",
          "America/Sao_Paulo", "Pacific/Chatham"]
_daytime = st.builds(lambda h, m, s: f"{h:02d}:{m:02d}:{s:02d}",
                     st.integers(0, 23), st.sampled_from([0, 1, 15, 30, 45, 59]), st.sampled_from([0, 30]))
_dst = st.one_of(st.none(), st.fixed_dictionaries(
    {}, optional={"gap": st.sampled_from(["shift", "skip"]), "repeat": st.sampled_from(["first", "both"])}))
_calendar = st.sampled_from(["all", "Mon-Fri", "Tue,Thu", "Mon-Fri - US-holidays", "Sat,Sun + UK-holidays"])


def _with_dst(jso, dst):
    return {**jso, "dst": dst} if dst is not None else jso


_schedules = st.one_of(
    st.builds(lambda d, tz, cal, ds, cs, dst: _with_dst(
        {"type": "daily", "daytime": d, "tz": tz, "calendar": cal, "date_shift": ds, "cal_shift": cs}, dst),
        st.lists(_daytime, min_size=1, max_size=4), st.sampled_from(_ZONES), _calendar,
        st.integers(-2, 2), st.integers(-2, 2), _dst),
    st.builds(lambda a, length, every, tz, cal, dst: _with_dst(
        {"type": "daily-interval", "start": a, "stop": {"daytime": a, "date_shift": 1} if length else "23:59:59",
         "interval": every, "tz": tz, "calendar": cal}, dst),
        _daytime, st.booleans(), st.sampled_from(["7m", "30m", "1h", "5h", "90s"]),
        st.sampled_from(_ZONES), _calendar, _dst).filter(lambda j: j["start"] < "23:59:59" or j["stop"] != "23:59:59"),
    st.builds(lambda e, tz, dst: _with_dst({"type": "cron", "expr": e, "tz": tz}, dst),
              st.sampled_from(["*/7 * * * *", "30 1 * * *", "0,30 2 * * *", "@hourly", "15 */2 * * Mon-Fri",
                               "0 30 1 * * *", "*/20 * 1-3 * * *", "45 0-3 1,15 * *", "@weekly"]),
              st.sampled_from(_ZONES), _dst),
    st.builds(lambda i, p: {"type": "interval", "interval": i, "phase": p},
              st.sampled_from([1.5, 60, 3600, 86400]), st.just(1)),
)
# Starts anywhere in a few years, and often within hours of a transition.
_TRANSITIONS = [utc(2026, 3, 8, 7), utc(2026, 11, 1, 6), utc(2026, 3, 29, 1), utc(2026, 10, 25, 1),
                utc(2026, 4, 4, 15), utc(2026, 10, 3, 15, 30), utc(2026, 4, 4, 14), utc(2026, 9, 26, 14)]
_starts = st.one_of(
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)),
    st.builds(lambda t, d: t + d, st.sampled_from(_TRANSITIONS),
              st.timedeltas(min_value=timedelta(hours=-30), max_value=timedelta(hours=30))),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_schedules, _starts)
def test_property_times_strictly_increase_and_follow_start(jso, start):
    s = parse_schedule(jso)
    times = due(s, start, 30)
    assert times and times[0] >= start
    assert all(a < b for a, b in zip(times, times[1:]))
    assert all(t.tzinfo is UTC for t in times)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_schedules, _starts, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)))
def test_property_later_start_is_the_tail(jso, start, delta):
    s = parse_schedule(jso)
    later = start + delta
    tail = first(s, later, 10)
    early = []
    for t, a in s.times(start):
        if t >= later:
            early.append((t, a))
            if len(early) == 10:
                break
    assert tail == early


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_schedules, st.one_of(st.none(), st.sampled_from(["30s", "1h"])),
       st.one_of(st.none(), st.sampled_from([{"type": "duration", "duration": "10m"},
                                             {"type": "daytime", "daytime": "17:00", "tz": "Europe/London"}])))
def test_property_jso_round_trip(jso, jitter, stop):
    import json
    if jitter:
        jso = {**jso, "jitter": jitter}
    if stop:
        jso = {"start": jso, "stop": stop}
    s = parse_schedule(jso)
    again = parse_schedule(json.loads(json.dumps(s.to_jso())))
    assert again == s
    assert again.to_jso() == s.to_jso()

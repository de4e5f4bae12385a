"""Daylight saving: every wall-clock schedule type across both transitions, in four zones.

Expected times are written out by hand from the zones' 2026 rules:

* America/New_York: 8 March 02:00 EST (-05) -> 03:00 EDT (-04) at 07:00Z;
  1 November 02:00 EDT -> 01:00 EST at 06:00Z (01:00-02:00 happens twice).
* Europe/London: 29 March 01:00 GMT -> 02:00 BST (+01) at 01:00Z;
  25 October 02:00 BST -> 01:00 GMT at 01:00Z.
* Australia/Lord_Howe (a 30-minute shift): 5 April 02:00 LHDT (+11) ->
  01:30 LHST (+10:30) at 15:00Z on 4 April (01:30-02:00 twice); 4 October
  02:00 LHST -> 02:30 LHDT at 15:30Z on 3 October (02:00-02:30 missing).
* Asia/Tokyo: +09 all year.

Defaults: daily and daily-interval run each daytime of each date once
(``gap: shift, repeat: first``); cron with fixed minute and hour likewise,
cron with ``*`` in either follows elapsed time (``gap: skip, repeat: both``).
"""

from datetime import datetime, timezone
from itertools import islice

import pytest

from apsis_lite.model.schedules import parse_schedule

UTC = timezone.utc


def utc(text):
    """``"2026-03-08 07:00"`` -> aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def due(jso, start, n):
    """The first ``n`` times as ``HH:MM`` UTC strings with their date, from ``start`` (UTC text)."""
    return [t.strftime("%Y-%m-%d %H:%M") for t, _ in islice(parse_schedule(jso).times(utc(start)), n)]


def local(jso, start, n, key="time"):
    return [a[key] for _, a in islice(parse_schedule(jso).times(utc(start)), n)]


def daily(daytime, tz, **kw):
    return {"type": "daily", "daytime": daytime, "tz": tz, **kw}


def interval(start, stop, every, tz, **kw):
    return {"type": "daily-interval", "start": start, "stop": stop, "interval": every, "tz": tz, **kw}


def cron(expr, tz, **kw):
    return {"type": "cron", "expr": expr, "tz": tz, **kw}


# --- daily --------------------------------------------------------------------

class TestDaily:
    def test_new_york_spring_gap_runs_when_clocks_jump(self):
        s = daily("02:30", "America/New_York")
        assert local(s, "2026-03-07 12:00", 2) == ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
        _, args = next(parse_schedule(s).times(utc("2026-03-07 12:00")))
        assert args["date"] == "2026-03-08" and args["daytime"] == "02:30:00"

    def test_new_york_spring_gap_skip(self):
        s = daily("02:30", "America/New_York", dst={"gap": "skip"})
        assert due(s, "2026-03-07 12:00", 2) == ["2026-03-09 06:30", "2026-03-10 06:30"]

    def test_new_york_fall_repeat_runs_once_at_first(self):
        s = daily("01:30", "America/New_York")
        assert due(s, "2026-10-31 12:00", 2) == ["2026-11-01 05:30", "2026-11-02 06:30"]

    def test_new_york_fall_repeat_both(self):
        s = daily("01:30", "America/New_York", dst={"repeat": "both"})
        assert local(s, "2026-10-31 12:00", 3) == [
            "2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00", "2026-11-02T01:30:00-05:00"]
        # From inside the repeated hour: only the second occurrence is left.
        assert due(s, "2026-11-01 06:00", 1) == ["2026-11-01 06:30"]

    def test_new_york_start_inside_repeated_hour_does_not_rerun(self):
        assert due(daily("01:30", "America/New_York"), "2026-11-01 06:00", 1) == ["2026-11-02 06:30"]

    def test_london_both_transitions(self):
        s = daily("01:30", "Europe/London")
        assert local(s, "2026-03-28 12:00", 2) == ["2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"]
        assert due(s, "2026-10-24 12:00", 2) == ["2026-10-25 00:30", "2026-10-26 01:30"]
        both = daily("01:30", "Europe/London", dst={"gap": "skip", "repeat": "both"})
        assert due(both, "2026-03-28 12:00", 1) == ["2026-03-30 00:30"]
        assert due(both, "2026-10-24 12:00", 3) == ["2026-10-25 00:30", "2026-10-25 01:30", "2026-10-26 01:30"]

    def test_lord_howe_half_hour_shift(self):
        spring = daily("02:15", "Australia/Lord_Howe")
        assert local(spring, "2026-10-03 00:00", 2) == [
            "2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]
        assert due(spring, "2026-10-03 00:00", 2) == ["2026-10-03 15:30", "2026-10-04 15:15"]
        fall = daily("01:45", "Australia/Lord_Howe")
        assert due(fall, "2026-04-04 00:00", 2) == ["2026-04-04 14:45", "2026-04-05 15:15"]
        fall_both = daily("01:45", "Australia/Lord_Howe", dst={"repeat": "both"})
        assert local(fall_both, "2026-04-04 00:00", 3) == [
            "2026-04-05T01:45:00+11:00", "2026-04-05T01:45:00+10:30", "2026-04-06T01:45:00+10:30"]

    def test_tokyo_has_no_transitions(self):
        s = daily("02:30", "Asia/Tokyo")
        assert due(s, "2026-03-07 00:00", 3) == ["2026-03-07 17:30", "2026-03-08 17:30", "2026-03-09 17:30"]
        assert due(s, "2026-10-31 00:00", 2) == ["2026-10-31 17:30", "2026-11-01 17:30"]

    def test_two_daytimes_in_one_gap_run_once(self):
        s = daily(["02:00", "02:30"], "America/New_York")
        got = list(islice(parse_schedule(s).times(utc("2026-03-08 05:00")), 2))
        assert [(t.strftime("%d %H:%M"), a["daytime"]) for t, a in got] == [
            ("08 07:00", "02:00:00"), ("09 06:00", "02:00:00")]


# --- daily-interval -------------------------------------------------------------

class TestDailyInterval:
    def test_new_york_spring(self):
        s = interval("01:00", "04:00", "30m", "America/New_York")
        got = list(islice(parse_schedule(s).times(utc("2026-03-08 05:00")), 5))
        assert [(t.strftime("%d %H:%M"), a["daytime"]) for t, a in got] == [
            ("08 06:00", "01:00:00"), ("08 06:30", "01:30:00"),
            ("08 07:00", "02:00:00"),  # 02:00, 02:30 and 03:00 are all 07:00Z
            ("08 07:30", "03:30:00"), ("09 05:00", "01:00:00")]

    def test_new_york_spring_gap_skip(self):
        s = interval("01:00", "04:00", "30m", "America/New_York", dst={"gap": "skip"})
        got = list(islice(parse_schedule(s).times(utc("2026-03-08 05:00")), 4))
        assert [(t.strftime("%H:%M"), a["daytime"]) for t, a in got] == [
            ("06:00", "01:00:00"), ("06:30", "01:30:00"), ("07:00", "03:00:00"), ("07:30", "03:30:00")]

    def test_new_york_fall(self):
        s = interval("00:30", "03:00", "30m", "America/New_York")
        assert due(s, "2026-11-01 04:00", 6) == [
            "2026-11-01 04:30", "2026-11-01 05:00", "2026-11-01 05:30",
            "2026-11-01 07:00", "2026-11-01 07:30", "2026-11-02 05:30"]
        both = interval("00:30", "03:00", "30m", "America/New_York", dst={"repeat": "both"})
        assert due(both, "2026-11-01 04:00", 7) == [
            "2026-11-01 04:30", "2026-11-01 05:00", "2026-11-01 05:30", "2026-11-01 06:00",
            "2026-11-01 06:30", "2026-11-01 07:00", "2026-11-01 07:30"]

    def test_london(self):
        s = interval("00:30", "03:00", "1h", "Europe/London")
        assert local(s, "2026-03-29 00:00", 3) == [
            "2026-03-29T00:30:00+00:00", "2026-03-29T02:00:00+01:00", "2026-03-29T02:30:00+01:00"]
        assert local(s, "2026-10-24 23:00", 3) == [
            "2026-10-25T00:30:00+01:00", "2026-10-25T01:30:00+01:00", "2026-10-25T02:30:00+00:00"]

    def test_lord_howe(self):
        spring = interval("01:30", "03:00", "15m", "Australia/Lord_Howe")
        assert due(spring, "2026-10-03 14:00", 4) == [
            "2026-10-03 15:00", "2026-10-03 15:15", "2026-10-03 15:30", "2026-10-03 15:45"]
        fall = interval("01:00", "02:30", "15m", "Australia/Lord_Howe")
        assert due(fall, "2026-04-04 13:00", 6) == [
            "2026-04-04 14:00", "2026-04-04 14:15", "2026-04-04 14:30", "2026-04-04 14:45",
            "2026-04-04 15:30", "2026-04-04 15:45"]
        fall_both = interval("01:00", "02:30", "15m", "Australia/Lord_Howe", dst={"repeat": "both"})
        assert due(fall_both, "2026-04-04 13:00", 8) == [
            "2026-04-04 14:00", "2026-04-04 14:15", "2026-04-04 14:30", "2026-04-04 14:45",
            "2026-04-04 15:00", "2026-04-04 15:15", "2026-04-04 15:30", "2026-04-04 15:45"]

    def test_tokyo(self):
        s = interval("01:00", "03:00", "1h", "Asia/Tokyo")
        assert due(s, "2026-03-07 12:00", 4) == [
            "2026-03-07 16:00", "2026-03-07 17:00", "2026-03-08 16:00", "2026-03-08 17:00"]


# --- cron -----------------------------------------------------------------------

class TestCron:
    def test_london_fixed_time(self):
        assert local(cron("30 1 * * *", "Europe/London"), "2026-03-28 12:00", 2) == [
            "2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"]
        assert due(cron("30 1 * * *", "Europe/London"), "2026-10-24 12:00", 2) == [
            "2026-10-25 00:30", "2026-10-26 01:30"]

    def test_london_hourly_is_elapsed_time(self):
        s = cron("@hourly", "Europe/London")
        assert local(s, "2026-03-29 00:00", 3) == [
            "2026-03-29T00:00:00+00:00", "2026-03-29T02:00:00+01:00", "2026-03-29T03:00:00+01:00"]
        assert due(s, "2026-03-29 00:00", 3) == ["2026-03-29 00:00", "2026-03-29 01:00", "2026-03-29 02:00"]
        assert local(s, "2026-10-24 23:00", 4) == [
            "2026-10-25T00:00:00+01:00", "2026-10-25T01:00:00+01:00",
            "2026-10-25T01:00:00+00:00", "2026-10-25T02:00:00+00:00"]

    def test_lord_howe_half_hourly(self):
        s = cron("*/30 * * * *", "Australia/Lord_Howe")
        assert due(s, "2026-04-04 14:00", 4) == [
            "2026-04-04 14:00", "2026-04-04 14:30", "2026-04-04 15:00", "2026-04-04 15:30"]
        assert local(s, "2026-10-03 14:30", 4) == [
            "2026-10-04T01:00:00+10:30", "2026-10-04T01:30:00+10:30",
            "2026-10-04T02:30:00+11:00", "2026-10-04T03:00:00+11:00"]

    def test_lord_howe_fixed_time_in_gap(self):
        assert local(cron("15 2 * * *", "Australia/Lord_Howe"), "2026-10-03 00:00", 2) == [
            "2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]

    def test_tokyo(self):
        assert due(cron("0 2 * * *", "Asia/Tokyo"), "2026-03-07 00:00", 2) == [
            "2026-03-07 17:00", "2026-03-08 17:00"]
        assert due(cron("0 * * * *", "Asia/Tokyo"), "2026-11-01 04:30", 2) == [
            "2026-11-01 05:00", "2026-11-01 06:00"]

    def test_overrides(self):
        ny = "America/New_York"
        # Hourly, but each wall-clock time once.
        assert local(cron("30 * * * *", ny, dst={"repeat": "first"}), "2026-11-01 04:00", 3) == [
            "2026-11-01T00:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-01T02:30:00-05:00"]
        # Hourly with the missing hour's run at the jump.
        assert local(cron("30 * * * *", ny, dst={"gap": "shift"}), "2026-03-08 05:00", 4) == [
            "2026-03-08T00:30:00-05:00", "2026-03-08T01:30:00-05:00",
            "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"]
        # A fixed time at both occurrences, or not at all in the gap.
        assert due(cron("30 1 * * *", ny, dst={"repeat": "both"}), "2026-10-31 12:00", 2) == [
            "2026-11-01 05:30", "2026-11-01 06:30"]
        assert due(cron("30 2 * * *", ny, dst={"gap": "skip"}), "2026-03-07 12:00", 1) == ["2026-03-09 06:30"]

    def test_dst_is_checked(self):
        from apsis_lite.model.schedules import SpecError
        with pytest.raises(SpecError) as info:
            parse_schedule(cron("@daily", "UTC", dst={"gap": "later", "repeat": "both", "x": 1}))
        assert info.value.problems == [
            ("dst.gap", "expected one of shift, skip, got str 'later'"),
            ("dst.x", "unknown key; expected: gap, repeat")]


# --- stop at a daytime, explicit times --------------------------------------------

def test_daytime_stop_across_transitions():
    stop = parse_schedule({"start": daily("00:00", "America/New_York"),
                           "stop": {"type": "daytime", "daytime": "02:30", "tz": "America/New_York"}}).stop
    assert stop.stop_time(utc("2026-03-08 05:00")) == utc("2026-03-08 07:00")  # when clocks jump
    fall = parse_schedule({"start": daily("00:00", "America/New_York"),
                           "stop": {"type": "daytime", "daytime": "01:30", "tz": "America/New_York"}}).stop
    assert fall.stop_time(utc("2026-11-01 04:00")) == utc("2026-11-01 05:30")
    # Started at 01:45 EDT: the next 01:30 is the repeated one, in EST.
    assert fall.stop_time(utc("2026-11-01 05:45")) == utc("2026-11-01 06:30")


def test_explicit_local_times_follow_the_default_rule():
    s = {"type": "explicit", "tz": "America/New_York", "times": ["2026-03-08 02:30", "2026-11-01 01:30"]}
    assert due(s, "2026-01-01 00:00", 2) == ["2026-03-08 07:00", "2026-11-01 05:30"]


def test_interval_ignores_zones():
    s = {"type": "interval", "interval": "1h"}
    assert due(s, "2026-03-08 05:30", 3) == ["2026-03-08 06:00", "2026-03-08 07:00", "2026-03-08 08:00"]


def test_start_just_after_a_gap_still_sees_the_shifted_run():
    # Started exactly when the clocks jump: 02:30's run is at that instant.
    s = daily("02:30", "America/New_York")
    assert due(s, "2026-03-08 07:00", 1) == ["2026-03-08 07:00"]
    assert due(s, "2026-03-08 07:00:01", 1) == ["2026-03-09 06:30"]


def test_start_just_before_a_repeat_sees_both_occurrences():
    s = cron("10 1 * * *", "America/New_York", dst={"repeat": "both"})
    # 01:45 EDT: 01:10 EDT is past, 01:10 EST (06:10Z) is still to come.
    assert due(s, "2026-11-01 05:45", 1) == ["2026-11-01 06:10"]


# --- timeutil: the one place for parsing and formatting ---------------------------

def test_localize_gap_and_repeat():
    from apsis_lite.timeutil import get_tz, localize
    ny = get_tz("America/New_York")
    assert localize(datetime(2026, 3, 8, 2, 30), ny) == [utc("2026-03-08 07:00")]
    assert localize(datetime(2026, 3, 8, 2, 30), ny, gap="skip") == []
    assert localize(datetime(2026, 11, 1, 1, 30), ny) == [utc("2026-11-01 05:30")]
    assert localize(datetime(2026, 11, 1, 1, 30), ny, repeat="both") == [
        utc("2026-11-01 05:30"), utc("2026-11-01 06:30")]
    lh = get_tz("Australia/Lord_Howe")
    assert localize(datetime(2026, 10, 4, 2, 10), lh) == [utc("2026-10-03 15:30")]
    assert localize(datetime(2026, 4, 5, 1, 40), lh, repeat="both") == [
        utc("2026-04-04 14:40"), utc("2026-04-04 15:10")]


def test_offset_changes_marks_transitions():
    from apsis_lite.timeutil import offset_changes
    got = offset_changes("Europe/London", utc("2026-01-01 00:00"), utc("2027-01-01 00:00"))
    assert [(t.isoformat(), str(a), str(b)) for t, a, b in got] == [
        ("2026-03-29T01:00:00+00:00", "0:00:00", "1:00:00"),
        ("2026-10-25T01:00:00+00:00", "1:00:00", "0:00:00")]
    assert offset_changes("Asia/Tokyo", utc("2026-01-01 00:00"), utc("2027-01-01 00:00")) == []


def test_parse_and_format_daytimes_dates_and_times():
    from datetime import date, time
    from apsis_lite.timeutil import (
        format_daytime, format_time, parse_date, parse_daytime, parse_time)
    assert parse_daytime("9:05") == time(9, 5)
    assert parse_daytime(" 23:59:59.25 ") == time(23, 59, 59, 250000)
    for bad in ("24:00", "9", "09:60", "noon", 930, True):
        with pytest.raises(ValueError, match="not a daytime"):
            parse_daytime(bad)
    assert [format_daytime(time(9, 5), p) for p in ("minutes", "seconds", "minimal", "auto")] == [
        "09:05", "09:05:00", "09:05", "09:05:00"]
    assert format_daytime(time(9, 5, 1, 500), "minimal") == "09:05:01.000500"
    assert format_daytime(time(9, 5, 1, 500), "milliseconds") == "09:05:01.000"
    assert parse_date("2026-11-26") == date(2026, 11, 26)
    with pytest.raises(ValueError, match="expected YYYY-MM-DD"):
        parse_date("26/11/2026")
    t = utc("2026-11-26 15:04:05.123456")
    assert format_time(t) == "2026-11-26T15:04:05.123456Z"
    assert format_time(t, precision="seconds") == "2026-11-26T15:04:05Z"
    assert format_time(t, "America/New_York", "minutes") == "2026-11-26T10:04-05:00"
    with pytest.raises(ValueError, match="unknown precision"):
        format_time(t, precision="hours")
    # A local time in a gap or a repeat follows the same default as schedules.
    assert parse_time("2026-03-08 02:30", "America/New_York") == utc("2026-03-08 07:00")
    assert parse_time("2026-11-01 01:30", "America/New_York") == utc("2026-11-01 05:30")

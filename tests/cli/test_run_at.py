"""``apsis-lite run --at TIME``: what time a person means, read with an injected clock and zone.

A time of day alone is its next occurrence, as ``at(1)`` takes it: 07:00
typed at 07:28 is tomorrow's 07:00. A date and time that is past is refused
unless ``--past-ok``. The real CLI against a real server is in
tests/cli/test_cli.py (test_run_at_a_past_time_of_day_runs_tomorrow...).
"""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import click
import pytest
from hypothesis import given, settings, strategies as st

from apsis_lite.cli.arguments import describe_day, parse_run_at

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
UTC = timezone.utc


def paris(*args):
    return datetime(*args, tzinfo=PARIS).astimezone(UTC)


def at(text, now, zone=PARIS, **kw):
    return parse_run_at(text, now=now, zone=zone, **kw)


def test_a_time_of_day_already_past_today_is_tomorrows():
    now = paris(2026, 12, 3, 7, 28)
    assert at("07:00", now) == paris(2026, 12, 4, 7, 0)
    assert describe_day(at("07:00", now), now=now, zone=PARIS) == "Fri 2026-12-04 07:00:00 CET (tomorrow)"


def test_a_time_of_day_still_to_come_is_todays():
    now = paris(2026, 12, 3, 7, 28)
    assert at("07:30", now) == paris(2026, 12, 3, 7, 30)
    assert at("7pm", now) == paris(2026, 12, 3, 19, 0)
    assert describe_day(at("7pm", now), now=now, zone=PARIS) == "Thu 2026-12-03 19:00:00 CET (today)"


def test_the_current_minute_is_today_to_the_precision_typed():
    now = paris(2026, 12, 3, 7, 28, 40)
    assert at("07:28", now) == paris(2026, 12, 3, 7, 28)  # this minute: at once
    assert at("07:28:10", now) == paris(2026, 12, 4, 7, 28, 10)  # seconds typed: 30 s past


def test_a_time_of_day_with_a_zone_is_that_zones():
    now = datetime(2026, 12, 3, 7, 28, tzinfo=UTC)
    assert at("07:00Z", now) == datetime(2026, 12, 4, 7, 0, tzinfo=UTC)
    assert at("08:00 UTC", now) == datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def test_tomorrow_across_a_clock_change_is_tomorrows_wall_clock_time():
    # New York springs forward on 8 March 2026: 02:30 does not exist that day,
    # so the run is when the clocks jump (as schedules do), 03:00 EDT.
    now = datetime(2026, 3, 7, 3, 0, tzinfo=NEW_YORK).astimezone(UTC)
    assert at("02:30", now, NEW_YORK) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    # 09:00 tomorrow is 23 hours away, not 24.
    now = datetime(2026, 3, 7, 10, 0, tzinfo=NEW_YORK).astimezone(UTC)
    assert at("09:00", now, NEW_YORK) - now == timedelta(hours=22)


def test_a_past_date_and_time_is_refused_unless_asked():
    now = paris(2026, 12, 3, 7, 28)
    for text in ("2026-12-03 07:00", "2026-12-03T06:00:00Z", "-2h", "Dec 1 2026 9am"):
        with pytest.raises(click.BadParameter) as err:
            at(text, now)
        assert "is in the past" in str(err.value) and "--past-ok" in str(err.value), text
    assert at("2026-12-03 07:00", now, past_ok=True) == paris(2026, 12, 3, 7, 0)
    assert at("-2h", now, past_ok=True) == now - timedelta(hours=2)
    message = str(pytest.raises(click.BadParameter, at, "2026-12-03 07:00", now).value)
    assert message == ("'2026-12-03 07:00' is in the past (2026-12-03 07:00:00 CET); "
                       "add --past-ok to run it now, recorded as due then")


def test_future_and_present_times_are_taken_as_typed():
    now = paris(2026, 12, 3, 7, 28, 40)
    assert at("now", now) == now
    assert at("+10m", now) == now + timedelta(minutes=10)
    assert at("2026-12-03 07:28", now) == paris(2026, 12, 3, 7, 28)  # this minute
    assert at("2027-01-15T08:00:00Z", now) == datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    assert describe_day(paris(2026, 12, 10, 9, 0), now=now, zone=PARIS) == "Thu 2026-12-10 09:00:00 CET (in 7 days)"


def test_text_that_is_not_a_time_is_a_bad_parameter():
    for text in ("not a time at all", "25:00", "+forever"):
        with pytest.raises(click.BadParameter):
            at(text, paris(2026, 12, 3, 7, 28))


@settings(max_examples=200, deadline=None)
@given(now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
       hour=st.integers(0, 23), minute=st.integers(0, 59),
       zone=st.sampled_from([PARIS, NEW_YORK, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Asia/Kolkata")]))
def test_a_time_of_day_is_never_past_and_at_most_a_day_away(now, hour, minute, zone):
    when = parse_run_at(f"{hour:02d}:{minute:02d}", now=now, zone=zone)
    assert now.replace(second=0, microsecond=0) <= when <= now + timedelta(hours=25)
    local = when.astimezone(zone)
    # The wall clock shows what was typed, unless the clocks jumped over it that day.
    if local.utcoffset() == (local - timedelta(hours=3)).utcoffset():
        assert (local.hour, local.minute) == (hour, minute)

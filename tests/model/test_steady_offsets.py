"""Days without a daylight-saving change skip ``localize``: the same times either way."""

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from apsis_lite.model.schedules import dst, parse_schedule
from strategies_cron import cron_expressions

ZONES = ["UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
         "America/St_Johns", "Pacific/Apia", "Africa/Casablanca"]
# Instants near changes: spring and autumn in both hemispheres, Apia's skipped day, Casablanca's Ramadan.
NEAR = [datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 10, 25, tzinfo=UTC), datetime(2026, 3, 8, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 4, 5, tzinfo=UTC), datetime(2011, 12, 29, tzinfo=UTC),
        datetime(2026, 2, 15, tzinfo=UTC)]


def schedules():
    dst_choice = st.none() | st.fixed_dictionaries({"gap": st.sampled_from(["shift", "skip"]),
                                                    "repeat": st.sampled_from(["first", "both"])})
    zone = st.sampled_from(ZONES)
    cron = st.builds(lambda e, z, d: {"type": "cron", "expr": e, "tz": z, **({"dst": d} if d else {})},
                     cron_expressions(), zone, dst_choice)
    daily = st.builds(lambda h, m, z, d: {"type": "daily", "daytime": [f"{h:02d}:{m:02d}", "02:30"], "tz": z,
                                          **({"dst": d} if d else {})},
                      st.integers(0, 23), st.sampled_from([0, 15, 30, 59]), zone, dst_choice)
    return cron | daily


@settings(max_examples=120, deadline=None)
@given(schedules(), st.sampled_from(NEAR), st.integers(-3 * 24, 3 * 24))
def test_steady_days_give_the_same_times_as_localizing_each(spec, near, hours):
    try:
        s = parse_schedule(spec)
    except Exception:
        return  # an expression cronsim refuses: not this test's business
    start = near + timedelta(hours=hours, minutes=7)
    fast = list(itertools.islice(s.times(start), 40))
    steady = dst._steady_offset
    dst._steady_offset = lambda zone, day: None
    try:
        slow = list(itertools.islice(s.times(start), 40))
    finally:
        dst._steady_offset = steady
    assert fast == slow

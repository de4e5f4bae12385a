"""The cron schedule's day-at-a-time walk gives exactly cronsim's times."""

import itertools
from datetime import datetime

from cronsim import CronSim, CronSimError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from apsis_lite.model.schedules import parse_schedule
from apsis_lite.model.schedules.cron import wall_times
from strategies_cron import cron_expressions


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(cron_expressions(), st.datetimes(datetime(1990, 1, 1), datetime(2090, 1, 1)))
def test_the_walk_gives_cronsims_times(expr, base):
    try:
        expected = CronSim(expr, base)
    except CronSimError:
        assume(False)
    base = base.replace(microsecond=0)
    assert list(itertools.islice(wall_times(expr.upper(), base), 20)) == list(itertools.islice(expected, 20))


def test_rare_days_are_found_years_ahead():
    # 30 February never comes, but cron's OR rule makes that any Monday of February;
    # a fifth Monday in February comes in a leap year whose February begins on a Monday.
    assert next(wall_times("0 0 30 2 MON", datetime(2026, 1, 1))) == datetime(2026, 2, 2)
    assert next(wall_times("0 0 * 2 MON#5", datetime(2026, 1, 1))) == datetime(2044, 2, 29)


def test_a_frequent_cron_in_a_zone_keeps_its_daylight_saving_rules():
    s = parse_schedule({"type": "cron", "expr": "*/30 * * * *", "tz": "Europe/London"})
    start = datetime.fromisoformat("2026-10-25T00:00:00+00:00")
    times = [t for t, _ in itertools.islice(s.times(start), 6)]
    # Elapsed time across the repeated hour: half an hour apart throughout.
    assert [t.isoformat() for t in times] == [
        "2026-10-25T00:00:00+00:00", "2026-10-25T00:30:00+00:00", "2026-10-25T01:00:00+00:00",
        "2026-10-25T01:30:00+00:00", "2026-10-25T02:00:00+00:00", "2026-10-25T02:30:00+00:00"]

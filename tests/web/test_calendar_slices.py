"""The calendar's computation gives way to the event loop as it goes, and computes equal
schedules once: counted, through Flask's test client over a real store and engine."""

import dataclasses
from datetime import date

import pytest

import schedule_types  # noqa: F401  (registers tests.counted-hourly)
from apsis_lite.engine import slices
from apsis_lite.engine.slices import Slices
from apsis_lite.model.schedules import parse_schedule
from apsis_lite.timeutil import get_tz
from apsis_lite.web.due_summary import grid_bounds, job_days, schedule_key

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z

JOBS = {
    **{f"counted{i:02d}": "program: {type: no-op}\nschedule: {type: tests.counted-hourly}\n" for i in range(8)},
    **{f"cron{i:02d}": 'program: {type: no-op}\nschedule: {type: cron, expr: "*/30 * * * *"}\n' for i in range(8)},
    "daily": 'program: {type: no-op}\nschedule: {type: daily, daytime: "06:15", calendar: Mon-Fri}\n',
}


def test_a_slice_ends_once_its_budget_is_spent():
    now, gave = [0.0], []
    pace = Slices(budget=10, clock=lambda: now[0], give_way=lambda: gave.append(now[0]))
    for t in (3, 6, 9.99, 10, 14, 19.99, 20.5, 31):
        now[0] = t
        pace()
    assert gave == [10, 20.5, 31] and pace.yields == 3


@pytest.mark.parametrize("url", ["/calendar", "/calendar?view=week", "/calendar/day",
                                 "/calendar?q=counted", "/jobs"])
def test_a_first_view_gives_way_between_each_due_time_it_computes(app_world, monkeypatch, url):
    client, _engine, _store, _clock = app_world(JOBS, T0, recover=False)
    # The warmer would compute the same windows in a thread of its own: here only the page does.
    client.application.extensions["calendar_warmer"].start = lambda: None
    # Every slice as short as can be: each step gives way, and says how far the
    # counted schedules had got.
    steps_at_yield = []
    monkeypatch.setattr(slices, "SLICE", 0.0)
    monkeypatch.setattr(slices, "give_way", lambda: steps_at_yield.append(schedule_types.STEPS[0]))
    before = schedule_types.STEPS[0]
    assert client.get(url).status_code == 200
    computed = schedule_types.STEPS[0] - before
    assert computed > 0
    assert len(steps_at_yield) >= computed
    # Never two due times computed without giving way between them.
    marks = [before] + steps_at_yield + [schedule_types.STEPS[0]]
    assert max(b - a for a, b in zip(marks, marks[1:])) <= 1


def _same_name_other_dates(calendar):
    """A calendar named as ``calendar`` whose dates are others (as after its file changed)."""
    return dataclasses.replace(calendar, days=frozenset({5, 6}))


def test_jobs_with_equal_schedules_are_computed_once_per_pass():
    _s, _e, bounds = grid_bounds(date(2027, 1, 15), "month", get_tz("UTC"))

    class Job:
        def __init__(self, spec):
            self.job_id, self.schedules = "j", [parse_schedule(spec)]

    spec = {"type": "cron", "expr": "*/30 * * * *", "tz": "Asia/Kathmandu"}
    jobs = [Job(spec) for _ in range(20)] + [Job({**spec, "tz": "UTC"})]
    memo, alone = {}, [job_days(j, T0, bounds, 10) for j in jobs]
    shared = [job_days(j, T0, bounds, 10, memo=memo) for j in jobs]
    assert shared == alone and len(memo) == 2
    assert alone[0] != alone[-1]  # the zone tells them apart
    # A field whose repr does not show all of it (a calendar shows its name) is compared
    # by value; an extension's schedule is never shared.
    daily = parse_schedule({"type": "daily", "daytime": "06:15", "calendar": "Mon-Fri"})
    again = parse_schedule({"type": "daily", "daytime": "06:15", "calendar": "Mon-Fri"})
    assert schedule_key(daily) == schedule_key(again)
    assert repr(daily.calendar) == repr(_same_name_other_dates(daily.calendar))
    assert schedule_key(daily) != schedule_key(dataclasses.replace(daily, calendar=_same_name_other_dates(daily.calendar)))
    assert schedule_key(parse_schedule({"type": "tests.counted-hourly"})) is None

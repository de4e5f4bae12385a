"""The calendar pages through Flask's test client, over a real store and engine and a fixed clock.

Past runs are written to the store with exact times; upcoming due times come
from the jobs' schedules. The clock stands at 2027-01-15 08:00 UTC, a Friday.
"""

import re
import textwrap
from datetime import UTC, datetime

import pytest

from apsis_lite.model.jobs import load_jobs_dir
from apsis_lite.timeutil import get_tz
from apsis_lite.web.calendar_dues import GRID_DAY_CAP, due_matcher, due_times, grid_dues
from apsis_lite.web.due_summary import DueSummaries, grid_bounds

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a Friday
HOSTILE_ID = "evil/<script>x"

JOBS = {
    # 16:00 in New York is 21:00 UTC in January; weekdays only.
    "team/report": """
        program: {type: no-op}
        schedule: {type: cron, expr: "0 16 * * Mon-Fri", tz: America/New_York}
    """,
    "tick": """
        params: [time]
        program: {type: no-op}
        schedule: {type: interval, interval: 10s}
    """,
}


def utc(*args):
    return datetime(*args, tzinfo=UTC).timestamp()


@pytest.fixture
def world(app_world):
    """A factory for (client, engine, writer store) over job files given as {id: yaml}."""
    return lambda jobs=JOBS: app_world(jobs, T0, recover=False)[:3]


def past_run(store, job_id, start, end, state="success", args=None):
    """A run scheduled and started at ``start`` that ended in ``state`` at ``end``."""
    run = store.insert_run(job_id, args or {}, "scheduled", start, start)
    store.transition(run.run_id, "scheduled", "starting", start, "starting")
    store.transition(run.run_id, "starting", "running", start, "running")
    store.transition(run.run_id, "running", state, end, state)
    return run


def cell(body, day):
    """The HTML of the month/week grid's cell for ``day`` (YYYY-MM-DD)."""
    m = re.search(rf'<td class="([^"]*)"\s+data-date="{day}">(.*?)</td>', body, re.DOTALL)
    assert m, f"no cell for {day}"
    return m.group(1) + " " + m.group(2)


def row(body, job_id):
    m = re.search(rf'<g class="tl-row" data-job="{re.escape(job_id)}">(.*?)\n  </g>', body, re.DOTALL)
    assert m, f"no timeline row for {job_id}"
    return m.group(1)


def test_month_grid_shows_past_runs_upcoming_times_and_today(world):
    client, _engine, store = world()
    run = past_run(store, "team/report", utc(2027, 1, 12, 10), utc(2027, 1, 12, 11))
    failed = past_run(store, "tick", utc(2027, 1, 13, 9, 30), utc(2027, 1, 13, 9, 31), "failure", {"time": "x"})
    resp = client.get("/calendar")
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "January 2027" in body and 'aria-current="page">Calendar<' in body
    # Monday 2026-12-28 to Sunday 2027-01-31: five weeks.
    assert len(re.findall(r'data-date="', body)) == 35
    assert "cal-other" in cell(body, "2026-12-28") and "cal-other" not in cell(body, "2027-01-04")
    today = cell(body, "2027-01-15")
    assert "cal-today" in today and ">today<" in today
    day12 = cell(body, "2027-01-12")
    assert f'data-run="r{run.run_id}"' in day12 and 'title="success">ok</abbr>' in day12
    # Cells label a job by the last parts of its id that tell it from the others there (the title has it all).
    assert '10:00</span> <span class="cal-job">report</span>' in day12 and "cal-due" not in day12  # past: no due times
    assert 'title="failure">fail</abbr>' in cell(body, "2027-01-13")
    assert f'data-run="r{failed.run_id}"' in cell(body, "2027-01-13")
    # Upcoming: team/report at 21:00 UTC on weekdays from today on, none at the weekend.
    assert 'data-due="team/report"' in today and '21:00</span> <span class="cal-job">report</span>' in today
    for day in ("2027-01-18", "2027-01-29"):
        assert 'data-due="team/report"' in cell(body, day)
    for day in ("2027-01-16", "2027-01-17", "2027-01-14"):
        assert 'data-due="team/report"' not in cell(body, day)
    # tick is due every 10 s: counted up to 10 a day in a cell, shown as one entry "x10+".
    assert re.search(r'data-due="tick".*?08:00</span> <span class="cal-job">tick</span> '
                     r'<span class="cal-count">&times;10\+', today, re.DOTALL)
    assert today.index('data-due="tick"') < today.index('data-due="team/report"')  # by time, not id
    assert "more due times" in today
    # Prev/next keep the view; the next month looks ahead.
    assert 'href="/calendar?date=2027-02-01&amp;view=month"' in body
    assert 'href="/calendar?date=2026-12-01&amp;view=month"' in body
    feb = client.get("/calendar?date=2027-02-01").get_data(as_text=True)
    assert "February 2027" in feb and 'data-due="team/report"' in cell(feb, "2027-02-26")


def test_week_view_and_day_boundaries_in_the_viewers_zone(world):
    client, _engine, store = world()
    late = past_run(store, "team/report", utc(2027, 1, 12, 3), utc(2027, 1, 12, 3, 30))
    week = client.get("/calendar?view=week&date=2027-01-13").get_data(as_text=True)
    assert "Week of 2027-01-11" in week and len(re.findall(r'data-date="', week)) == 7
    assert f'data-run="r{late.run_id}"' in cell(week, "2027-01-12")
    client.set_cookie("tz", "America/New_York")
    ny = client.get("/calendar?view=week&date=2027-01-13").get_data(as_text=True)
    # 03:00 UTC on the 12th is 22:00 on the 11th in New York.
    assert f'data-run="r{late.run_id}"' in cell(ny, "2027-01-11")
    assert '22:00</span> <span class="cal-job">report</span>' in cell(ny, "2027-01-11")
    assert '16:00</span> <span class="cal-job">report</span>' in cell(ny, "2027-01-15")  # due at 16:00 NY time


def test_day_timeline_places_bars_and_due_marks(world):
    client, _engine, store = world()
    run = past_run(store, "team/report", utc(2027, 1, 12, 10), utc(2027, 1, 12, 11))
    body = client.get("/calendar/day?date=2027-01-12").get_data(as_text=True)
    bar = row(body, "team/report")
    # The track is 960 wide from x=230: 10:00 is at 630, one hour is 40 wide.
    assert f'class="tl-bar state-success" data-run="r{run.run_id}"' in bar
    assert '<rect x="630.0" y="25" width="40.0"' in bar and ">ok</text>" in bar
    assert "1 ok" in bar and "tl-now" not in body  # not today
    today = client.get("/calendar/day?date=2027-01-15").get_data(as_text=True)
    report = row(today, "team/report")
    assert '<line class="tl-due" x1="1070.0"' in report  # 21:00
    # Due every 10 s: 1,440 counted one by one, the rest of the day by quarter-hours, all one band.
    tick = row(today, "tick")
    assert "1440+ due" in tick and "tl-due" not in tick.replace("tl-due-band", "")
    assert re.findall(r'<rect class="tl-due-band" x="550.0" y="\d+" width="640.0"', tick)  # 08:00 to midnight
    assert 'class="tl-now" x1="550.0"' in today  # 08:00
    assert 'href="/calendar/day?date=2027-01-14"' in today and 'href="/calendar/day?date=2027-01-16"' in today


def test_holidays_of_a_chosen_calendar_are_marked(world):
    client, _engine, _store = world()
    body = client.get("/calendar?holidays=US-holidays").get_data(as_text=True)
    assert '<option value="US-holidays" selected>' in body
    for day in ("2027-01-01", "2027-01-18"):
        assert "cal-holiday" in cell(body, day) and ">holiday<" in cell(body, day)
    assert "cal-holiday" not in cell(body, "2027-01-19")
    assert "holiday (US-holidays)" in client.get("/calendar/day?date=2027-01-18&holidays=US-holidays").get_data(as_text=True)
    assert "cal-holiday" not in cell(client.get("/calendar").get_data(as_text=True), "2027-01-18")
    bad = client.get("/calendar?holidays=Atlantis")
    assert bad.status_code == 400 and "unknown calendar &#39;Atlantis&#39;" in bad.get_data(as_text=True)


def test_filter_applies_to_runs_and_due_times_and_bad_filter_is_400(world):
    client, _engine, store = world()
    past_run(store, "team/report", utc(2027, 1, 12, 10), utc(2027, 1, 12, 11))
    past_run(store, "tick", utc(2027, 1, 12, 12), utc(2027, 1, 12, 12, 1), args={"time": "x"})
    only = client.get("/calendar?q=report").get_data(as_text=True)
    assert "team/report" in cell(only, "2027-01-12") and "tick" not in cell(only, "2027-01-12")
    assert 'data-due="tick"' not in only and 'data-due="team/report"' in only
    assert 'name="q" value="report"' in only and "q=report" in only  # kept in links
    negated = client.get("/calendar?q=!report").get_data(as_text=True)
    assert "team/report" not in cell(negated, "2027-01-12") and 'data-due="team/report"' not in negated
    assert 'data-due="tick"' in negated
    assert 'data-due' not in client.get("/calendar?q=state:fail").get_data(as_text=True)
    assert 'data-due="tick"' in client.get("/calendar?q=state:sched").get_data(as_text=True)
    day = client.get("/calendar/day?date=2027-01-15&q=job:tick").get_data(as_text=True)
    assert 'data-job="tick"' in day and 'data-job="team/report"' not in day
    for url in ("/calendar?q=color:red", "/calendar/day?q=%22open"):
        resp = client.get(url)
        assert resp.status_code == 400 and "bad filter term" in resp.get_data(as_text=True)
        assert "Traceback" not in resp.get_data(as_text=True)
    assert client.get("/calendar?date=2027-13-01").status_code == 400
    assert client.get("/calendar?view=year").status_code == 400


def test_hostile_job_id_is_escaped(world):
    client, _engine, store = world({HOSTILE_ID: """
        program: {type: no-op}
        schedule: {type: daily, daytime: "12:00", tz: UTC}
    """})
    past_run(store, HOSTILE_ID, utc(2027, 1, 12, 10), utc(2027, 1, 12, 11))
    for url in ("/calendar", "/calendar?view=week&date=2027-01-12", "/calendar/day?date=2027-01-12",
                "/calendar/day?date=2027-01-15", "/calendar?q=%3Cscript%3E"):
        body = client.get(url).get_data(as_text=True)
        assert "<script>x" not in body and "evil/&lt;script&gt;x" in body, url


def test_due_times_are_bounded_by_a_budget(world):
    _client, engine, _store = world({f"j{i:02d}": """
        program: {type: no-op}
        schedule: {type: interval, interval: 1h}
    """ for i in range(10)})
    job_ok, args_ok = due_matcher("")
    start, end = T0, T0 + 86400
    found, more, done, total = due_times(engine, start, end, [start, end], job_ok, args_ok, budget=60)
    assert total == 10 and done == 3  # 25 steps a job (24 times and one past the end)
    assert not more and {d.job_id for d in found} == {"j00", "j01", "j02"}


MIXED = {
    "a/cron": """
        program: {type: no-op}
        schedule: {type: cron, expr: "30 1 * * Mon-Fri", tz: Europe/London}
    """,
    "b/daily": """
        program: {type: no-op}
        schedule: {type: daily, daytime: ["00:30", "23:30"], tz: America/New_York, calendar: Mon-Fri}
    """,
    "c/hourly": """
        program: {type: no-op}
        schedule: {type: interval, interval: 1h, phase: 5m}
    """,
    "d/minute": """
        program: {type: no-op}
        schedule:
          - {type: interval, interval: 1m}
          - {type: interval, interval: 7m, phase: 1s}
    """,
    "e/window": """
        program: {type: no-op}
        schedule: {type: daily-interval, start: "01:00", stop: "01:20", interval: 3m, tz: Europe/London}
    """,
}


def direct_grid(engine, bounds, now):
    """{(job_id, day): (first, shown count)} and the (day, job_id) with more, from due_times."""
    job_ok, _ = due_matcher("")
    found, more, _done, _total = due_times(engine, max(bounds[0], now), bounds[-1], bounds, job_ok, None,
                                           per_day=GRID_DAY_CAP)
    ref = {}
    for d in found:
        i = max(k for k in range(len(bounds) - 1) if bounds[k] <= d.t)
        first, count = ref.get((d.job_id, i), (d.t, 0))
        ref[(d.job_id, i)] = (first, count + 1)
    return ref, more


def cached_grid(engine, summaries, bounds, now):
    job_ok, _ = due_matcher("")
    got, more = {}, set()
    per_day, _done, _total = grid_dues(engine, summaries, bounds, now, job_ok, None, set(), 10**6)
    for i, (due, total, m) in enumerate(per_day):
        assert total == len(due)
        got.update({(job_id, i): v for job_id, v in due.items()})
        more |= {(i, job_id) for job_id in m}
    return got, more


@pytest.mark.parametrize("zone, anchor", [("Europe/London", "2027-03-28"), ("America/New_York", "2027-11-07"),
                                          ("UTC", "2027-01-15")])
def test_cached_day_summaries_equal_the_due_times_across_dst_and_as_now_moves(world, zone, anchor):
    _client, engine, _store = world(MIXED)
    summaries = DueSummaries(GRID_DAY_CAP)
    for view in ("month", "week"):
        _start, _end, bounds = grid_bounds(datetime.fromisoformat(anchor).date(), view, get_tz(zone))
        # Before the window, then inside it as now moves on (the cache refreshes only today's times).
        for now in (bounds[0] - 3600, bounds[0] + 86400 * 3 + 3600 * 1.25, bounds[0] + 86400 * 3 + 3600 * 23.6,
                    bounds[0] + 86400 * 4 + 60.5):
            assert cached_grid(engine, summaries, bounds, now) == direct_grid(engine, bounds, now), (view, now)


def test_cached_summaries_follow_a_reload(world):
    _client, engine, _store = world(MIXED)
    summaries = DueSummaries(GRID_DAY_CAP)
    _start, _end, bounds = grid_bounds(datetime(2027, 2, 3).date(), "month", get_tz("UTC"))
    before = cached_grid(engine, summaries, bounds, T0)
    assert any(j == "c/hourly" for j, _i in before[0])
    jobs = {k: v for k, v in engine.jobs.items() if k != "c/hourly"}
    jobs.update(load_jobs_from({"z/new": """
        program: {type: no-op}
        schedule: {type: daily, daytime: "12:00", tz: UTC}
    """}, _tmp_dir(engine)))
    engine.set_jobs(jobs, [])
    after = cached_grid(engine, summaries, bounds, T0)
    assert after == direct_grid(engine, bounds, T0)
    assert not any(j == "c/hourly" for j, _i in after[0]) and any(j == "z/new" for j, _i in after[0])


def _tmp_dir(engine):
    return engine.config.jobs_dir + "-extra"


def load_jobs_from(texts, folder):
    import os
    for job_id, text in texts.items():
        path = os.path.join(folder, job_id + ".yaml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
    jobs, errors = load_jobs_dir(folder)
    assert not errors
    return jobs


def test_month_shows_upcoming_times_of_every_job(world):
    # 200 jobs due every minute: 11 steps a job and day, 37,400 in the rest of the month.
    client, _engine, _store = world({f"m{i:03d}": """
        program: {type: no-op}
        schedule: {type: interval, interval: 1m}
    """ for i in range(200)})
    body = client.get("/calendar").get_data(as_text=True)
    assert "Upcoming times computed for the first" not in body
    for day in ("2027-01-16", "2027-01-31"):
        c = cell(body, day)
        assert re.search(r'data-due="m000".*?00:00</span> <span class="cal-job">m000</span> '
                         r'<span class="cal-count">&times;10\+', c, re.DOTALL)
        assert len(re.findall(r'class="cal-due"', c)) == 6 and "+194 more" in c
    day = client.get("/calendar/day?date=2027-01-31").get_data(as_text=True)
    assert "Showing the first 300" not in day and len(re.findall(r'class="tl-row"', day)) == 200
    assert "1440 due" in row(day, "m199")


@pytest.mark.parametrize("zone, day", [("Europe/London", "2027-03-28"), ("Europe/London", "2027-10-31"),
                                       ("Asia/Kolkata", "2027-01-15")])
def test_day_timeline_shortcuts_equal_the_general_path(world, zone, day):
    from apsis_lite.web.calendar_dues import day_job_times, job_due_times
    from apsis_lite.web.pages.calendar_day import day_labeller
    from apsis_lite.web.format import TimeFormat

    _client, engine, _store = world({**MIXED, "f/odd": """
        program: {type: no-op}
        schedule:
          - {type: interval, interval: 90.5s, phase: 0.25s}
          - {type: interval, interval: 1h}
    """})
    tf = TimeFormat(zone, T0)
    d = datetime.fromisoformat(day).date()
    _s, _e, bounds = grid_bounds(d, "week", get_tz(zone))
    i = (d - _s).days
    start, end = bounds[i], bounds[i + 1]
    for since in (start, start + 3600 * 5 + 0.3):
        for job_id, job in engine.jobs.items():
            stored = {(job_id, round(t, 3)) for t in (start + 3600 * 5 + 300, start + 3600 * 7.5)}
            fast, fast_more, slow, slow_more = [], set(), [], set()
            day_job_times(job_id, job, since, end, [start, end], 100, stored, fast, fast_more)
            job_due_times(job_id, job, since, end, [start, end], None, 100, stored, float("inf"), slow, slow_more)
            assert fast == slow and fast_more == slow_more, job_id
    label = day_labeller(tf, d, start, end)
    for t in (start, start + 0.25, start + 3599.9999996, start + 3600 * 13 + 61.5, end - 0.5):
        assert label(t) == tf.short(t)


def test_the_warmer_summarises_the_pages_first_views_yielding_between_jobs(world):
    import time

    client, engine, _store = world(MIXED)
    warmer = client.application.extensions["calendar_warmer"]
    # Nothing is warmed until somebody looks at the calendar; the first look starts it.
    # (Here the views only record that they would start it: the test client's real
    # threads would race with the warmer, where the server's greenlets take turns.)
    assert warmer.thread is None
    start, started = warmer.start, []
    warmer.start = lambda: started.append(1)
    pauses = []
    warmer.warm_once(pause=lambda: pauses.append(1))
    # This month, next month, this week and today: a pause after each job, and between
    # the due times a schedule is walked through.
    assert len(pauses) >= 4 * len(MIXED)
    # Bounds of each day and the end: a week; January 2027 (Dec 28 to Feb 1); February (Feb 1 to Mar 1).
    assert sorted(len(k) for k in warmer.grid.windows) == [8, 29, 36]
    assert all(set(w.entries) == set(MIXED) for w in warmer.grid.windows.values())
    assert all(len(w.entries) == len(MIXED) for w in warmer.day.windows.values())
    # The pages' first views, and the first step forward, use those windows: nothing new to compute.
    for url in ("/calendar", "/calendar?view=week", "/calendar/day", "/calendar?date=2027-02-01"):
        assert client.get(url).status_code == 200
    assert len(warmer.grid.windows) == 3 and len(warmer.day.windows) == 1
    assert started
    # In the background: a reload's new jobs are summarised without a page view.
    warmer.every = 0.05
    start()
    try:
        engine.set_jobs({k: v for k, v in engine.jobs.items() if k != "a/cron"}, [])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any("a/cron" in w.entries for w in warmer.grid.windows.values()):
            time.sleep(0.02)
        assert not any("a/cron" in w.entries for w in warmer.grid.windows.values())
    finally:
        warmer.stop()


def test_the_warmer_also_keeps_the_zones_viewers_use(world):
    client, _engine, _store = world(MIXED)
    warmer = client.application.extensions["calendar_warmer"]
    client.set_cookie("tz", "Asia/Tokyo")
    assert client.get("/calendar").status_code == 200
    assert [str(z) for z in warmer.zones] == ["UTC", "Asia/Tokyo"]
    warmer.grid.windows.clear()
    warmer.day.windows.clear()
    warmer.warm_once(pause=lambda: None)
    assert len(warmer.grid.windows) == 5 and len(warmer.day.windows) == 2  # next month in UTC only
    assert client.get("/calendar").status_code == 200 and len(warmer.grid.windows) == 5


def test_an_arg_filter_is_computed_time_by_time_within_a_budget_and_says_so(world):
    import time

    # No job's times supply "date": each is stepped through, and the budget stops the page.
    client, _engine, _store = world({f"m{i:02d}": """
        program: {type: no-op}
        schedule: {type: interval, interval: 1m}
    """ for i in range(40)})
    for url in ("/calendar?q=date%3Dx", "/calendar/day?q=date%3Dx"):
        t = time.perf_counter()
        body = client.get(url).get_data(as_text=True)
        assert time.perf_counter() - t < 5
        assert re.search(r"computed for the first \d+ of 40 matching jobs", body), url
        assert 'data-due=' not in body and 'class="tl-due"' not in body


def test_the_budget_note_counts_every_matching_job_when_some_have_times_shown(world):
    # One job whose times match the filter (its schedule's args), then 40 whose times must be
    # stepped through to find that they do not: the note counts all 41, whatever the grid shows.
    jobs = {f"m{i:02d}": """
        program: {type: no-op}
        schedule: {type: interval, interval: 1m}
    """ for i in range(40)}
    jobs["a-match"] = """
        params: [date]
        program: {type: no-op}
        schedule: {type: interval, interval: 1h, args: {date: x}}
    """
    client, _engine, _store = world(jobs)
    body = client.get("/calendar?q=date%3Dx").get_data(as_text=True)
    assert "a-match" in body
    assert re.search(r"computed for the first \d+ of 41 matching jobs", body), \
        re.findall(r"computed for the first \d+ of \d+ matching jobs", body)

"""The calendar pages through Flask's test client, over a real store and engine and a fixed clock.

Past runs are written to the store with exact times; upcoming due times come
from the jobs' schedules. The clock stands at 2027-01-15 08:00 UTC, a Friday.
"""

import re
import textwrap
from datetime import datetime, timezone

import pytest

from apsis_lite.config import load_config
from apsis_lite.engine import Engine
from apsis_lite.jobs import load_jobs_dir
from apsis_lite.launcher import LocalLauncher
from apsis_lite.store import Store
from apsis_lite.ui_calendar import due_matcher, due_times
from apsis_lite.web import create_app

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
    return datetime(*args, tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def world(tmp_path):
    """(client, engine, writer store) over job files given as {id: yaml}."""
    made = []

    def make(jobs=JOBS):
        jobs_dir = tmp_path / "jobs"
        for job_id, text in jobs.items():
            path = jobs_dir / f"{job_id}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        config = load_config(None, data_dir=str(tmp_path / "data"), jobs_dir=str(jobs_dir),
                             horizon=30, sweep_interval=1000)
        store = Store(config.db_path)
        reader = Store(config.db_path, readonly=True)
        launcher = LocalLauncher(config)
        engine = Engine(config, store, launcher, clock=Clock(T0))
        engine.set_jobs(*load_jobs_dir(config.jobs_dir))
        app = create_app(config, reader, engine, launcher)
        made.append((store, reader))
        return app.test_client(), engine, store

    yield make
    for store, reader in made:
        reader.close()
        store.close()


def past_run(store, job_id, start, end, state="success", args=None):
    """A run scheduled and started at ``start`` that ended in ``state`` at ``end``."""
    run = store.insert_run(job_id, args or {}, "scheduled", start, start)
    store.transition(run.run_id, "scheduled", "starting", start, "starting")
    store.transition(run.run_id, "starting", "running", start, "running")
    store.transition(run.run_id, "running", state, end, state)
    return run


def cell(body, day):
    """The HTML of the month/week grid's cell for ``day`` (YYYY-MM-DD)."""
    m = re.search(rf'<td class="([^"]*)"\s+data-date="{day}">(.*?)</td>', body, re.S)
    assert m, f"no cell for {day}"
    return m.group(1) + " " + m.group(2)


def row(body, job_id):
    m = re.search(rf'<g class="tl-row" data-job="{re.escape(job_id)}">(.*?)\n  </g>', body, re.S)
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
    assert "10:00</span> team/report" in day12 and "cal-due" not in day12  # past: no due times
    assert 'title="failure">fail</abbr>' in cell(body, "2027-01-13")
    assert f'data-run="r{failed.run_id}"' in cell(body, "2027-01-13")
    # Upcoming: team/report at 21:00 UTC on weekdays from today on, none at the weekend.
    assert 'data-due="team/report"' in today and "21:00</span> team/report" in today
    for day in ("2027-01-18", "2027-01-29"):
        assert 'data-due="team/report"' in cell(body, day)
    for day in ("2027-01-16", "2027-01-17", "2027-01-14"):
        assert 'data-due="team/report"' not in cell(body, day)
    # tick is due every 10 s: counted up to 10 a day in a cell, shown as one entry "x10+".
    assert re.search(r'data-due="tick".*?08:00</span> tick <span class="cal-count">&times;10\+', today, re.S)
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
    assert "22:00</span> team/report" in cell(ny, "2027-01-11")
    assert "16:00</span> team/report" in cell(ny, "2027-01-15")  # due at 16:00 New York time


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
    assert len(re.findall(r'class="tl-due"', row(today, "tick"))) == 100
    assert "100+ due" in row(today, "tick")
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

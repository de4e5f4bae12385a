"""The sanity checker over a real database with the engine's clock held: runs past due,
a broken job, what is reported once, start lateness (a Hypothesis property)."""

import json
import time

from hypothesis import given
from hypothesis import strategies as st

from apsis_lite.engine.sanity_checks import start_lateness
from apsis_lite.model.runs import Run

T0 = time.time() - 86400

JOBS = {
    "every10": """
        program: {type: no-op}
        schedule: {type: interval, interval: 10s}
    """,
}


def sanity(client):
    resp = client.get("/api/v1/sanity")
    assert resp.status_code == 200, resp.data
    return resp.get_json()


def test_runs_past_due_are_behind_and_reported_once(app_world):
    client, engine, store, clock = app_world(JOBS, T0)
    engine.tick(T0)  # plans the horizon's runs, starts the one due now
    assert sanity(client)["findings"] == []
    clock.t = T0 + 100  # the engine makes no pass: as if stuck
    report = sanity(client)
    behind = [f for f in report["findings"] if f["kind"] == "behind"]
    assert len(behind) >= 3 and report["ok"] is False and report["counts"]["behind"] == len(behind)
    first = behind[0]
    assert first["job_id"] == "every10" and first["run_id"].startswith("r")
    assert "and still scheduled" in first["reason"] and "the engine is behind or stuck" in first["reason"]
    reported = json.loads(store.get_meta("sanity_reported"))
    assert {f"behind:{f['run_id']}" for f in behind} <= set(reported)
    # Found again, not new again: the same since.
    again = [f for f in sanity(client)["findings"] if f["kind"] == "behind"]
    assert {(f["run_id"], f["since"]) for f in again} == {(f["run_id"], f["since"]) for f in behind}
    engine.tick(clock.t)  # the engine catches up: the runs start, the findings go
    assert [f for f in sanity(client)["findings"] if f["kind"] == "behind"] == []
    assert not [k for k in json.loads(store.get_meta("sanity_reported")) if k.startswith("behind:")]


def test_a_job_whose_planning_broke_is_unplanned(app_world):
    client, engine, store, clock = app_world(JOBS, T0)
    engine.tick(T0)
    engine._catalog.break_job("every10", "computing its due times failed: ValueError: boom")
    (f,) = [f for f in sanity(client)["findings"] if f["kind"] == "unplanned"]
    assert f["job_id"] == "every10"
    assert f["reason"] == ("cannot be scheduled: computing its due times failed: ValueError: boom; "
                           "no runs are planned until its file changes")


def test_the_page_and_the_banner(app_world):
    client, engine, store, clock = app_world(JOBS, T0)
    engine.tick(T0)
    page = client.get("/sanity").get_data(as_text=True)
    assert "Nothing found" in page and 'class="banner sanity-banner"' not in page
    clock.t = T0 + 100
    page = client.get("/sanity").get_data(as_text=True)
    assert page.count('class="finding-behind"') >= 3
    assert 'href="/jobs/every10"' in page and "the engine is behind or stuck" in page
    home = client.get("/").get_data(as_text=True)
    assert 'class="banner sanity-banner"' in home and 'href="/sanity"' in home
    assert "behind" in home.split('class="banner sanity-banner"')[1].split("</div>")[0]
    ping = client.get("/ui/ping").get_data(as_text=True)
    assert 'id="sanity" hx-swap-oob="true"' in ping and "sanity-banner" in ping


times = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(due=times, waited_at=times, held=times, running_gap=times, has_running=st.booleans())
def test_start_lateness_is_the_start_after_due_less_the_wait(due, waited_at, held, running_gap, has_running):
    waiting = due + waited_at  # the engine moved it to waiting this long after its due time
    starting = waiting + held  # its conditions held it this long
    run_times = {"scheduled": due - 10, "waiting": waiting, "starting": starting}
    if has_running:
        run_times["running"] = starting + running_gap
    run = Run(run_id=1, job_id="j", args={}, state="running", time_schedule=due, times=run_times)
    late = start_lateness(run)
    started = run_times.get("running", starting)
    assert late is not None and late >= 0
    assert late <= started - due + 1e-6
    # What is left out is exactly the time it waited (from its due time, or from when it began waiting).
    assert abs((started - due - late) - (starting - max(waiting, due))) < 1e-6


def test_start_lateness_of_runs_not_started_or_started_early():
    not_started = Run(run_id=1, job_id="j", args={}, state="scheduled", time_schedule=100.0, times={"scheduled": 0})
    assert start_lateness(not_started) is None
    by_hand = Run(run_id=2, job_id="j", args={}, state="running", time_schedule=100.0,
                  times={"waiting": 50.0, "starting": 50.0, "running": 50.01})
    assert start_lateness(by_hand) is None

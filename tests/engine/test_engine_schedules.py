"""Jitter, catch-up after downtime and stop schedules: in the engine with an
injected clock, and a stop schedule through the real server."""

import datetime as dt

import pytest

from conftest import write_job
from test_engine import T0, all_runs, tick, world  # noqa: F401  (world is a fixture)

from apsis_lite.model.jobs import job_from_jso


def interval_job(job_id="tick", interval="10s", **extra):
    return job_from_jso({"params": ["time"], "program": {"type": "no-op"},
                         "schedule": {"type": "interval", "interval": interval, **extra.pop("sched", {})},
                         **extra}, job_id)


def test_jitter_delays_each_slot_within_its_bound_and_keeps_the_nominal_time(world):
    engine, store, clock = world([interval_job(sched={"jitter": "5s"})])
    tick(engine, T0 - 1)
    runs = all_runs(store)
    assert len(runs) == 6
    offsets = []
    for r in runs:
        nominal = dt.datetime.fromisoformat(r.args["time"].replace("Z", "+00:00")).timestamp()
        offsets.append(r.time_schedule - nominal)
        assert 0 <= r.time_schedule - nominal < 5
        assert r.meta["jitter"] == round(r.time_schedule - nominal, 6)
    assert len(set(offsets)) > 1  # spread, not one shared delay


def test_jitter_is_the_same_for_a_slot_after_a_restart(world, tmp_path):
    job = interval_job(sched={"jitter": "5s"})
    engine, store, clock = world([job])
    tick(engine, T0 - 1)
    first = {r.args["time"]: r.time_schedule for r in all_runs(store)}
    from apsis_lite.model.schedules import jitter_offset
    for time_arg, due in first.items():
        nominal = dt.datetime.fromisoformat(time_arg.replace("Z", "+00:00"))
        assert due == pytest.approx(nominal.timestamp() + jitter_offset("tick", nominal, 5.0), abs=1e-5)


def _down_then_restart(world, policy, down=300):
    """Plan and run the first slot, then 'restart' after ``down`` seconds on the same database."""
    job = interval_job(catch_up=policy) if policy else interval_job()
    engine, store, clock = world([job])
    tick(engine, T0)
    engine2, store2, clock2 = world([job], clock_at=T0 + down)
    tick(engine2, T0 + down)
    runs = all_runs(store2)
    missed = [r for r in runs if T0 < r.time_schedule < T0 + down]
    return runs, missed, store2


def test_catch_up_latest_runs_only_the_latest_missed_slot(world):
    runs, missed, store = _down_then_restart(world, {"missed": "latest"})
    assert len(missed) == 29  # every missed slot is recorded: T0+10 ... T0+290
    assert [r.state for r in missed[:-1]] == ["skipped"] * 28
    assert missed[-1].state == "success"
    assert "catch_up: missed: latest" in missed[0].message
    assert any("running it now" in e["message"] for e in store.run_log(missed[-1].run_id))


def test_catch_up_none_skips_every_missed_slot_and_keeps_scheduling(world):
    runs, missed, store = _down_then_restart(world, {"missed": "none"})
    assert len(missed) == 29
    assert {r.state for r in missed} == {"skipped"}
    assert "while the server was down" in missed[5].message
    assert any(r.state == "scheduled" and r.time_schedule > T0 + 300 for r in runs)


def test_catch_up_all_with_a_cap_runs_the_latest_few(world):
    runs, missed, store = _down_then_restart(world, {"missed": "all", "max": 3})
    assert [r.state for r in missed] == ["skipped"] * 26 + ["success"] * 3


def test_catch_up_all_overrides_max_age(world):
    runs, missed, store = _down_then_restart(world, {"missed": "all"}, down=2 * 3600)
    assert len(missed) == 719
    assert {r.state for r in missed} == {"success"}


def test_without_catch_up_max_age_still_applies(world):
    runs, missed, store = _down_then_restart(world, None, down=2 * 3600)
    old = [r for r in missed if r.time_schedule < T0 + 3600]
    recent = [r for r in missed if r.time_schedule >= T0 + 3600]
    assert {r.state for r in old} == {"skipped"}
    assert "max_age" in old[0].message
    assert {r.state for r in recent} == {"success"}


def test_a_run_whose_stop_time_passes_before_it_starts_is_skipped(world):
    job = job_from_jso({"params": ["time"], "program": {"type": "no-op"},
                        "schedule": {"start": {"type": "interval", "interval": "10s"},
                                     "stop": {"type": "duration", "duration": "5s"}}}, "win")
    engine, store, clock = world([job])
    tick(engine, T0 - 1)
    planned = all_runs(store)
    assert all(r.meta["stop_at"] == r.time_schedule + 5 for r in planned)
    tick(engine, T0 + 22)  # slots T0 and T0+10 missed their window; T0+20 is still inside it
    states = {r.time_schedule - T0: r.state for r in all_runs(store)}
    assert states[0] == "skipped" and states[10] == "skipped"
    assert states[20] == "success"
    assert "came before it started" in store.get_run(planned[0].run_id).message


def test_stop_schedule_stops_a_daily_run_through_the_server(server, jobs_dir):
    server.start()
    # Written once the server is up, which on a busy machine can take seconds.
    start = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)
    daytime = start.strftime("%H:%M:%S")
    write_job(jobs_dir, "window", f"""
        params: [date]
        program: "echo started {{{{ date }}}}; sleep 60"
        schedule:
          start: {{type: daily, daytime: "{daytime}", tz: UTC, calendar: all}}
          stop: {{type: duration, duration: 2s}}
        """)
    rid = server.wait_for(lambda: next((r["run_id"] for r in server.runs("window")), None),
                          what="the daily run to be planned")
    run = server.wait_run(rid, states=("running",))
    run = server.wait_run(rid)
    assert run["state"] == "success"  # ended by the stop signal its stop schedule sent, as in apsis
    assert run["signal"] == "SIGTERM"
    log = [e["message"] for e in server.get(f"/api/v1/runs/{rid}/log")["items"]]
    assert any(m.startswith("stop schedule: due to stop at") for m in log)
    times = {k: dt.datetime.fromisoformat(v.replace("Z", "+00:00")) for k, v in run["times"].items()}
    # Stopped at its stop time, due time + 2 s (however late a busy machine started it).
    assert 2 <= (times["stopping"] - times["schedule"]).total_seconds() <= 10
    assert run["args"]["date"] == start.strftime("%Y-%m-%d")

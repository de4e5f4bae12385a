"""Automatic reruns: exact delays with an injected clock, then the real server."""

import time

import pytest
from conftest import write_job
from test_conditions import T0, job, messages, settle, worlds

from apsis_lite.store.database import Store
from apsis_lite.timeutil import parse_time


@pytest.fixture
def world(tmp_path):
    yield from worlds(tmp_path)


def failing(job_id, reruns, **jso):
    # A program on another host ends in error at once, with no process: exact for the clock.
    return job(job_id, program={"type": "program", "argv": ["true"], "host": "elsewhere"},
               reruns=reruns, **jso)


def test_reruns_with_backoff_and_max_delay_then_stop(world):
    engine, store, clock = world([failing("f", {"count": 3, "delay": "10s", "backoff": 2,
                                                "max_delay": "30s"})])
    first = engine.submit("f")
    settle(engine, clock)
    for t in (T0 + 10, T0 + 30, T0 + 60, T0 + 1000):
        settle(engine, clock, t)
    group = store.rerun_group(first.run_id)
    assert [r.time_schedule - T0 for r in group] == [0, 10, 30, 60]
    assert [r.state for r in group] == ["error"] * 4
    assert [r.rerun_of for r in group] == [None] + [r.run_id for r in group[:-1]]
    assert {r.rerun_group for r in group[1:]} == {first.run_id}
    ids = [r.run_id for r in group]
    assert f"error: rerun 1 of 3 in 10 s as r{ids[1]}" in messages(store, ids[0])
    assert f"error: rerun 2 of 3 in 20 s as r{ids[2]}" in messages(store, ids[1])
    assert f"error: rerun 3 of 3 in 30 s as r{ids[3]}" in messages(store, ids[2])
    assert ("error: no automatic rerun left (its rerun group has 3 reruns; the job allows 3)"
            in messages(store, ids[3]))
    assert messages(store, ids[2])[0].startswith(f"automatic rerun 2 of 3 of r{ids[1]}")
    explained = engine.explain(ids[3])
    assert explained["summary"].startswith("error at 2027-01-15T08:01:00Z: remote hosts are not supported")
    assert "automatic rerun 3 of 3" in explained["lines"]
    assert (f"try 2 of 4 in rerun group r{ids[0]}; the latest, r{ids[3]}, is error"
            in engine.explain(ids[1])["lines"])


def test_only_the_configured_states_are_rerun(world):
    engine, store, clock = world([failing("f", {"count": 2, "states": ["failure"]})])
    run = engine.submit("f")
    settle(engine, clock, T0 + 100)
    assert store.rerun_group(run.run_id) == [store.get_run(run.run_id)]


def test_a_rerun_by_hand_joins_the_group_and_counts(world):
    engine, store, clock = world([failing("f", {"count": 1})])
    first = engine.submit("f")
    settle(engine, clock)
    settle(engine, clock, T0 + 1)
    auto = store.rerun_group(first.run_id)[-1]
    assert auto.state == "error" and auto.rerun_of == first.run_id
    by_hand = engine.rerun(auto.run_id, user="ann")
    settle(engine, clock, T0 + 2)
    group = store.rerun_group(first.run_id)
    assert [r.run_id for r in group] == [first.run_id, auto.run_id, by_hand.run_id]
    assert ("error: no automatic rerun left (its rerun group has 2 reruns; the job allows 1)"
            in messages(store, by_hand.run_id))


def test_marking_a_run_failed_does_not_rerun_it(world):
    engine, store, clock = world([job("ok", reruns={"count": 2})])
    run = engine.submit("ok")
    settle(engine, clock)
    engine.mark(run.run_id, "failure")
    settle(engine, clock, T0 + 100)
    assert len(store.rerun_group(run.run_id)) == 1


def test_a_rerun_lost_when_the_server_stopped_is_made_at_restart(world):
    jobs = [failing("f", {"count": 2, "delay": "10s"})]
    engine, store, clock = world(jobs)
    run = store.insert_run("f", {}, "running", T0, T0)
    # It ends while no engine listens: the server died between the commit and the rerun.
    offline = Store(engine.config.db_path)
    assert offline.transition(run.run_id, "running", "error", T0 + 5, "exit code 1")
    offline.close()
    assert store.rerun_group(run.run_id) == [store.get_run(run.run_id)]

    engine, store, clock = world(jobs, clock_at=T0 + 60)  # the restart
    group = store.rerun_group(run.run_id)
    assert len(group) == 3  # the recovered rerun ran at once (its delay had passed), then its own rerun
    rerun = group[1]
    assert (rerun.rerun_of, rerun.slot, rerun.time_schedule) == (run.run_id, f"rerun|{run.run_id}|1", T0 + 60)
    assert (f"error: rerun 1 of 2 in 0 s as r{rerun.run_id} (made at restart: the server stopped "
            "before making it)") in messages(store, run.run_id)

    # Another restart finds every failure answered: nothing is made twice.
    engine, store, clock = world(jobs, clock_at=T0 + 65)
    settle(engine, clock, T0 + 100)
    assert [r.run_id for r in store.rerun_group(run.run_id)] == [r.run_id for r in group]
    assert sum("rerun 1 of 2" in m for m in messages(store, run.run_id)) == 1


def test_a_rerun_whose_delay_has_not_passed_at_restart_keeps_its_due_time(world):
    jobs = [failing("f", {"count": 1, "delay": "1 min"})]
    engine, store, _clock = world(jobs)
    run = store.insert_run("f", {}, "running", T0, T0)
    offline = Store(engine.config.db_path)
    offline.transition(run.run_id, "running", "failure", T0 + 5, "exit code 1")
    offline.close()
    _engine, store, _clock = world(jobs, clock_at=T0 + 20)
    [_, rerun] = store.rerun_group(run.run_id)
    assert (rerun.state, rerun.time_schedule) == ("scheduled", T0 + 65)
    assert f"failure: rerun 1 of 1 in 45 s as r{rerun.run_id}" in messages(store, run.run_id)[-1]


def test_a_run_marked_failed_while_the_server_was_down_is_not_rerun(world):
    jobs = [job("ok", reruns={"count": 2})]
    engine, store, clock = world(jobs)
    run = engine.submit("ok")
    settle(engine, clock)
    offline = Store(engine.config.db_path)
    offline.transition(run.run_id, "success", "failure", T0 + 1, "marked as failure")
    offline.close()
    engine, store, clock = world(jobs, clock_at=T0 + 10)
    assert len(store.rerun_group(run.run_id)) == 1


def scheduled_failing(**jso):
    """Fails at once on every slot (T0, T0+100, ...), rerun 30 s later."""
    return failing("slots", {"count": 1, "delay": "30s"},
                   schedule={"type": "interval", "interval": "100s"}, **jso)


def test_a_job_file_edit_keeps_a_pending_automatic_rerun(world):
    engine, store, clock = world([scheduled_failing()])
    [first, rerun] = store.rerun_group(store.query_runs(limit=100_000)[0][-1].run_id)
    assert (first.time_schedule, rerun.state, rerun.time_schedule) == (T0, "scheduled", T0 + 30)
    clock.t = T0 + 1
    summary = engine.set_jobs({"slots": scheduled_failing(waiting={"max_time": "2h"})}, [])
    assert summary["changed"] == ["slots"]
    assert store.get_run(rerun.run_id).state == "scheduled"  # not a schedule slot: not re-planned
    settle(engine, clock, T0 + 30)
    assert store.get_run(rerun.run_id).state == "error"  # it ran when due


def test_a_pending_automatic_rerun_is_no_missed_slot_at_restart(world):
    jobs = [scheduled_failing(catch_up={"missed": "none"})]
    _engine, store, _clock = world(jobs)
    [_, rerun] = store.rerun_group(store.query_runs(limit=100_000)[0][-1].run_id)
    _engine, store, _clock = world(jobs, clock_at=T0 + 50)  # down while it was due
    run = store.get_run(rerun.run_id)
    assert run.state == "error"  # ran at the restart, not skipped as a missed slot
    assert not any("catch_up" in m for m in messages(store, rerun.run_id))


# --- through the real server ----------------------------------------------------------


def _epoch(iso):
    return parse_time(iso).timestamp()


def test_server_reruns_a_failing_job_n_times_with_delays_then_stops(server, jobs_dir):
    write_job(jobs_dir, "flaky", """\
        program: "exit 3"
        reruns: {count: 2, delay: 1s, backoff: 2}
        """)
    server.start()
    first = server.post("/api/v1/runs", {"job_id": "flaky"})
    group = server.wait_for(
        lambda: (g := server.get(f"/api/v1/runs/{first['run_id']}/group"))["outcome"]
        and g["tries"] == 3 and g, timeout=30, what="three tries")
    time.sleep(2.5)  # a third rerun would be due 4 s after the last failure; none is created
    group = server.get(f"/api/v1/runs/{first['run_id']}/group")
    assert group["tries"] == 3 and group["outcome"] == "failure"
    runs = group["items"]
    assert [r["state"] for r in runs] == ["failure"] * 3
    for delay, (prev, nxt) in zip((1.0, 2.0), zip(runs, runs[1:])):
        gap = _epoch(nxt["times"]["running"]) - _epoch(prev["times"]["failure"])
        assert delay <= gap < delay + 0.5, (delay, gap)
    log = server.get(f"/api/v1/runs/{runs[0]['run_id']}/log")["items"]
    assert f"failure: rerun 1 of 2 in 1 s as {runs[1]['run_id']}" in [e["message"] for e in log]


def test_server_rerun_until_success(server, jobs_dir, tmp_path):
    mark = tmp_path / "tried"
    write_job(jobs_dir, "second try", f"""\
        program: "test -e {mark} && exit 0; touch {mark}; exit 1"
        reruns: {{count: 3}}
        """)
    server.start()
    first = server.post("/api/v1/runs", {"job_id": "second try"})
    group = server.wait_for(
        lambda: (g := server.get(f"/api/v1/runs/{first['run_id']}/group"))["outcome"] == "success" and g,
        what="success")
    assert group["tries"] == 2
    assert [r["state"] for r in group["items"]] == ["failure", "success"]
    show = server.cli("explain", group["items"][1]["run_id"])
    assert "automatic rerun 1 of 3" in show.stdout


def test_rerun_delays_stay_within_a_hundred_years_whatever_the_backoff():
    from apsis_lite.model.jobs import JobErrors, job_from_jso
    from apsis_lite.model.reruns import Reruns
    policy = Reruns.from_jso({"count": 10**6, "delay": "1s", "backoff": 1000})
    assert policy.delay_before(1) == 1.0 and policy.delay_before(3) == 1e6
    assert policy.delay_before(500) == policy.delay_before(10**6) == 100 * 365 * 86400.0
    assert Reruns.from_jso({"count": 3, "backoff": 1000}).delay_before(10**6) == 0.0
    with pytest.raises(JobErrors) as exc:
        job_from_jso({"program": "true", "reruns": {"count": 1, "backoff": 1e308}}, "j")
    assert [str(e) for e in exc.value.errors] == [
        "j: reruns.backoff: expected a number from 1 to 1000, got float 1e+308"]

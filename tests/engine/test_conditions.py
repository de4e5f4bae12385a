"""Conditions: the engine stepped with an injected clock, then the real server.

Engine tests use a real SQLite file and the real engine with no-op
programs, so every outcome is exact. A run "of another job that is still
running" is a row inserted as running through the store, and finishing it
is a store transition: the engine hears of it the way it hears of any
committed change, through the store's listener.
"""

import json
import time

import pytest

from conftest import Clock, _kill_agents, write_job
from test_engine import tick

from apsis_lite.config import load_config
from apsis_lite.engine.core import Engine
from apsis_lite.engine.launcher import LocalLauncher
from apsis_lite.model.jobs import job_from_jso
from apsis_lite.store.database import Store

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def worlds(tmp_path):
    """Yields ``make(jobs, **settings) -> (engine, store, clock)``; calling it again
    on the same folder is a restart. Used as a fixture here and in test_reruns,
    test_resources."""
    def make(jobs, clock_at=T0, **settings):
        config = load_config(None, data_dir=str(tmp_path / "data"), jobs_dir=str(tmp_path),
                             **{"horizon": 60, "max_age": 3600, "sweep_interval": 100_000,
                                "checkpoint_interval": 100_000, **settings})
        store = Store(config.db_path)
        clock = Clock(clock_at)
        engine = Engine(config, store, LocalLauncher(config), clock=clock)
        engine.set_jobs({j.job_id: j for j in jobs}, [])
        engine.recover()
        # The first pass sweeps runs in flight; later ones do not (sweep_interval),
        # so rows inserted as running stay running.
        tick(engine, clock_at)
        return engine, store, clock
    yield make
    _kill_agents(tmp_path / "data")


@pytest.fixture
def world(tmp_path):
    yield from worlds(tmp_path)


def job(job_id, **jso):
    return job_from_jso({"program": {"type": "no-op"}, **jso}, job_id)


def settle(engine, clock, t=None, passes=5):
    """Tick at ``t`` (default: the clock) until the engine has nothing left to react to."""
    if t is not None:
        clock.t = t
    for _ in range(passes):
        tick(engine, clock.t)  # each pass until idle: one tick may stop planning on its time budget


def messages(store, run_id):
    return [e["message"] for e in store.run_log(run_id)]


def states(store, run_id):
    return [e["state"] for e in store.run_log(run_id) if e["state"]]


# --- dependency -----------------------------------------------------------------


def test_chain_of_dependencies_runs_in_order_with_params_passed_through(world):
    jobs = [job("a", params=["date"]),
            job("b", params=["date"], condition={"type": "dependency", "job_id": "a"}),
            job("c", params=["date"], condition={"type": "dependency", "job_id": "b"})]
    engine, store, clock = world(jobs)
    c = engine.submit("c", {"date": "2027-01-15"})
    b = engine.submit("b", {"date": "2027-01-15"})
    settle(engine, clock)
    assert store.get_run(c.run_id).state == "waiting"
    assert store.get_run(c.run_id).message == (
        "waiting for b(date=2027-01-15) to be success; it is waiting (r2)")
    assert store.get_run(b.run_id).message == (
        "waiting for a(date=2027-01-15) to be success; there is no such run")
    # Another date does not satisfy it.
    other = engine.submit("a", {"date": "2027-01-14"})
    settle(engine, clock, T0 + 1)
    assert store.get_run(other.run_id).state == "success"
    assert store.get_run(b.run_id).state == "waiting"

    a = engine.submit("a", {"date": "2027-01-15"})
    settle(engine, clock, T0 + 2)
    runs = [store.get_run(r.run_id) for r in (a, b, c)]
    assert [r.state for r in runs] == ["success"] * 3
    assert runs[0].times["success"] <= runs[1].times["starting"]
    assert runs[1].times["success"] <= runs[2].times["starting"]
    assert "starting: its conditions hold" in messages(store, c.run_id)


def test_dependency_states_and_explicit_args(world):
    jobs = [job("load", params=["date"]),
            job("report", condition={"type": "dependency", "job_id": "load",
                                     "args": {"date": "2027-01-15"}, "states": ["failure", "error"]})]
    engine, store, clock = world(jobs)
    rid = store.insert_run("load", {"date": "2027-01-15"}, "running", T0, T0).run_id
    report = engine.submit("report")
    settle(engine, clock)
    assert store.get_run(report.run_id).message == (
        f"waiting for load(date=2027-01-15) to be failure or error; it is running (r{rid})")
    store.transition(rid, "running", "failure", T0 + 5, "exit code 1")
    settle(engine, clock, T0 + 5)
    assert store.get_run(report.run_id).state == "success"


def test_exist_errors_at_once_without_a_live_run_and_waits_with_one(world):
    jobs = [job("load", params=["date"]),
            job("alarm", params=["date"],
                condition={"type": "dependency", "job_id": "load", "exist": True})]
    engine, store, clock = world(jobs)
    missing = engine.submit("alarm", {"date": "2027-01-15"})
    settle(engine, clock)
    run = store.get_run(missing.run_id)
    assert run.state == "error"
    assert run.message == ("no run of load(date=2027-01-15) that can still be success (exist check); "
                           "there is no such run")

    # A failed run cannot become success either (marking by hand does not count).
    failed = store.insert_run("load", {"date": "2027-01-16"}, "failure", T0, T0).run_id
    alarm = engine.submit("alarm", {"date": "2027-01-16"})
    settle(engine, clock)
    assert store.get_run(alarm.run_id).state == "error"
    assert f"the latest, r{failed}, is failure" in store.get_run(alarm.run_id).message

    # A load scheduled for later can still succeed: the alarm waits, then succeeds.
    load = engine.submit("load", {"date": "2027-01-17"}, when=T0 + 100)
    alarm = engine.submit("alarm", {"date": "2027-01-17"})
    settle(engine, clock, T0 + 1)
    assert store.get_run(alarm.run_id).state == "waiting"
    settle(engine, clock, T0 + 100)
    assert store.get_run(load.run_id).state == "success"
    assert store.get_run(alarm.run_id).state == "success"


def test_exist_errors_when_the_dependency_fails_while_waited_for(world):
    jobs = [job("load"), job("alarm", condition={"type": "dependency", "job_id": "load",
                                                 "exist": True})]
    engine, store, clock = world(jobs)
    rid = store.insert_run("load", {}, "running", T0, T0).run_id
    alarm = engine.submit("alarm")
    settle(engine, clock)
    assert store.get_run(alarm.run_id).state == "waiting"
    store.transition(rid, "running", "failure", T0 + 3, "exit code 2")
    settle(engine, clock, T0 + 3)
    run = store.get_run(alarm.run_id)
    assert run.state == "error" and "exist check" in run.message


# --- max_running and skip_duplicate ------------------------------------------------


def test_max_running_waits_for_the_running_one_then_starts_in_order(world):
    engine, store, clock = world([job("m", condition={"type": "max_running", "count": 1})])
    rid = store.insert_run("m", {}, "running", T0, T0).run_id
    first = engine.submit("m")
    second = engine.submit("m", when=T0 + 1)
    settle(engine, clock, T0 + 1)
    assert store.get_run(first.run_id).message == (
        f"waiting for fewer than 1 running (max_running 1); r{rid} is running")
    assert store.get_run(second.run_id).state == "waiting"
    store.transition(rid, "running", "success", T0 + 2, "exit code 0")
    settle(engine, clock, T0 + 2)
    assert store.get_run(first.run_id).state == "success"
    assert store.get_run(second.run_id).state == "success"
    assert store.get_run(first.run_id).times["starting"] <= store.get_run(second.run_id).times["starting"]


def test_skip_duplicate_skips_or_goes_to_its_target_state(world):
    jobs = [job("d", condition={"type": "skip_duplicate"}),
            job("e", condition={"type": "skip_duplicate", "check_states": ["running"],
                                "target_state": "error"}),
            job("s", condition={"type": "skip_duplicate", "target_state": "success"})]
    engine, store, clock = world(jobs)
    d_running = store.insert_run("d", {}, "running", T0, T0).run_id
    e_running = store.insert_run("e", {}, "running", T0, T0).run_id
    d = engine.submit("d")
    e = engine.submit("e")
    settle(engine, clock)
    assert store.get_run(d.run_id).state == "skipped"
    assert store.get_run(d.run_id).message == (
        f"r{d_running}, a run of the same job and args, is running (skip_duplicate)")
    assert store.get_run(e.run_id).state == "error"
    # Any finished state will do as the target.
    store.insert_run("s", {}, "running", T0, T0)
    s = engine.submit("s")
    settle(engine, clock)
    assert store.get_run(s.run_id).state == "success"
    # Once the other has finished, a new run goes ahead.
    store.transition(d_running, "running", "success", T0 + 1, "done")
    again = engine.submit("d")
    settle(engine, clock, T0 + 1)
    assert store.get_run(again.run_id).state == "success"
    assert e_running


# --- waiting max time, starting by hand, restarts ------------------------------------------


def test_waiting_max_time_errors_the_run_on_a_timer(world):
    jobs = [job("w", condition={"type": "dependency", "job_id": "never"}, waiting={"max_time": "30s"}),
            job("v", condition={"type": "dependency", "job_id": "never"})]
    engine, store, clock = world(jobs, waiting_max_time=100)
    w = engine.submit("w")
    v = engine.submit("v")
    wake = engine.tick(T0)
    assert wake <= T0 + 30  # the give-up time is a timer the loop wakes for
    settle(engine, clock, T0 + 29.9)
    assert store.get_run(w.run_id).state == "waiting"
    settle(engine, clock, T0 + 30)
    run = store.get_run(w.run_id)
    assert run.state == "error"
    assert run.message == ("waited longer than waiting max_time (30.0 s): waiting for never to be "
                           "success; there is no such run, and no job 'never' is loaded")
    assert store.get_run(v.run_id).state == "waiting"  # the config's 100 s
    settle(engine, clock, T0 + 100)
    assert store.get_run(v.run_id).state == "error"


def test_starting_a_waiting_run_by_hand_skips_its_conditions_and_says_so(world):
    engine, store, clock = world([job("x", condition={"type": "dependency", "job_id": "y"})])
    run = engine.submit("x")
    settle(engine, clock)
    engine.start(run.run_id, user="ann")
    assert store.get_run(run.run_id).state == "success"
    assert ("started by hand, skipping its remaining conditions (it was waiting for y to be success; "
            "there is no such run, and no job 'y' is loaded)") in messages(store, run.run_id)


def test_waiting_runs_are_checked_again_after_a_restart(world):
    jobs = [job("up"), job("down", condition={"type": "dependency", "job_id": "up"})]
    engine, store, clock = world(jobs)
    down = engine.submit("down")
    settle(engine, clock)
    assert store.get_run(down.run_id).state == "waiting"
    store.close()
    engine, store, clock = world(jobs, clock_at=T0 + 10)
    settle(engine, clock)
    assert store.get_run(down.run_id).state == "waiting"
    engine.submit("up")
    settle(engine, clock, T0 + 11)
    assert store.get_run(down.run_id).state == "success"


def test_reason_is_logged_only_when_it_changes(world):
    jobs = [job("up"), job("down", condition={"type": "dependency", "job_id": "up"})]
    engine, store, clock = world(jobs)
    up = store.insert_run("up", {}, "scheduled", T0 + 1000, T0).run_id
    down = engine.submit("down")
    settle(engine, clock)
    before = messages(store, down.run_id)
    assert before[-1] == f"waiting for up to be success; it is scheduled (r{up})"
    for i in range(3):  # unrelated changes wake nothing
        engine.submit("up", when=T0 + 5000 + i)
        settle(engine, clock)
    # New runs of 'up' wake 'down'; its reason names the latest one but
    # is logged only because it changed.
    log = messages(store, down.run_id)
    reasons = [m for m in log if m.startswith("waiting for up")]
    assert len(reasons) == len(set(reasons))


def test_explain_a_waiting_run_condition_by_condition(world):
    jobs = [job("a", params=["date"]),
            job("b", params=["date"], condition=[{"type": "max_running", "count": 2},
                                                 {"type": "dependency", "job_id": "a"}],
                resources=["db"])]
    engine, store, clock = world(jobs)
    run = engine.submit("b", {"date": "2027-01-15"})
    settle(engine, clock)
    e = engine.explain(run.run_id)
    assert e["state"] == "waiting"
    assert e["summary"] == "waiting for a(date=2027-01-15) to be success; there is no such run"
    assert e["lines"][1:4] == [
        "1. max_running 2: holds",
        "2. dependency on a: waiting for a(date=2027-01-15) to be success; there is no such run",
        "3. resources db (1): holds",
    ]
    assert e["lines"][4] == "goes to error at 2027-01-16T08:00:00Z if still waiting (waiting max_time 24 h)"
    later = engine.submit("a", {"date": "2027-01-16"}, when=T0 + 90)
    assert engine.explain(later.run_id)["summary"] == "scheduled for 2027-01-15T08:01:30Z (in 1 min 30 s)"


# --- through the real server -------------------------------------------------------------


def test_server_chain_runs_in_order_and_cli_explains(server, jobs_dir, tmp_path):
    out = tmp_path / "order.txt"
    for name, dep in (("a", None), ("b", "a"), ("c", "b")):
        cond = f"condition: {{type: dependency, job_id: {dep}}}\n" if dep else ""
        write_job(jobs_dir, f"chain/{name}",
                  f"params: [date]\n{cond.replace('job_id: ', 'job_id: chain/')}"
                  f"program: \"sleep 0.2; echo {name} >> {out}\"\n")
    server.start()
    ids = {}
    for name in ("c", "b"):
        ids[name] = server.post("/api/v1/runs", {"job_id": f"chain/{name}",
                                                 "args": {"date": "2026-11-25"}})["run_id"]
    server.wait_for(lambda: server.get(f"/api/v1/runs/{ids['c']}")["state"] == "waiting"
                    and server.get(f"/api/v1/runs/{ids['b']}")["message"].startswith("waiting"),
                    what="c and b waiting")
    explain = server.cli("explain", ids["c"])
    assert explain.returncode == 0, explain.stderr
    assert explain.stdout.splitlines()[0] == (
        f"{ids['c']} (waiting): waiting for chain/b(date=2026-11-25) to be success; "
        f"it is waiting ({ids['b']})")
    show = server.cli("show", ids["b"])
    assert "waiting for chain/a(date=2026-11-25) to be success; there is no such run" in show.stdout
    listed = {r["run_id"]: r["message"] for r in server.runs("chain/")}
    assert listed[ids["c"]].startswith("waiting for chain/b(date=2026-11-25)")

    a = server.post("/api/v1/runs", {"job_id": "chain/a", "args": {"date": "2026-11-25"}})["run_id"]
    for rid in (a, ids["b"], ids["c"]):
        assert server.wait_run(rid)["state"] == "success"
    assert out.read_text().split() == ["a", "b", "c"]
    assert server.get(f"/api/v1/runs/{ids['c']}/explain")["summary"].startswith("success at ")


def test_server_alarm_with_exist(server, jobs_dir):
    write_job(jobs_dir, "load", "params: [date]\nprogram: \"sleep 0.5\"\n")
    write_job(jobs_dir, "alarm", """\
        params: [date]
        condition: {type: dependency, job_id: load, exist: true}
        program: {type: no-op}
        """)
    server.start()
    missing = server.post("/api/v1/runs", {"job_id": "alarm", "args": {"date": "2026-11-25"}})
    run = server.wait_run(missing["run_id"])
    assert run["state"] == "error"
    assert run["message"] == ("no run of load(date=2026-11-25) that can still be success "
                              "(exist check); there is no such run")
    load = server.post("/api/v1/runs", {"job_id": "load", "args": {"date": "2026-11-26"}})
    alarm = server.post("/api/v1/runs", {"job_id": "alarm", "args": {"date": "2026-11-26"}})
    assert server.wait_run(alarm["run_id"])["state"] == "success"
    load = server.get(f"/api/v1/runs/{load['run_id']}")
    assert load["times"]["success"] <= server.get(f"/api/v1/runs/{alarm['run_id']}")["times"]["starting"]


def _intervals(server, q):
    """(start, end) epoch pairs of a job's finished runs."""
    from apsis_lite.timeutil import parse_time
    out = []
    for r in server.runs(q):
        t = r["times"]
        if "running" in t and r["state"] == "success":
            out.append((parse_time(t["running"]).timestamp(), parse_time(t["success"]).timestamp()))
    return sorted(out)


def test_server_max_running_never_runs_two_at_once(server, jobs_dir):
    # Due every second, runs 1.5 s: without the condition, runs would overlap.
    write_job(jobs_dir, "busy", """\
        condition: {type: max_running, count: 1}
        program: "sleep 1.5"
        schedule: {type: interval, interval: 1s}
        """)
    server.start()
    server.wait_for(lambda: len(_intervals(server, "job:busy")) >= 3, timeout=30, what="three runs")
    spans = _intervals(server, "job:busy")
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end - 0.01, spans
    waiting = [r for r in server.runs("job:busy state:waiting")]
    assert waiting and waiting[0]["message"].startswith("waiting for fewer than 1 running (max_running 1)")


def test_server_skip_duplicate(server, jobs_dir):
    write_job(jobs_dir, "dup", """\
        condition: {type: skip_duplicate}
        program: "sleep 2"
        """)
    server.start()
    first = server.post("/api/v1/runs", {"job_id": "dup"})
    server.wait_run(first["run_id"], states=("running",))
    second = server.wait_run(server.post("/api/v1/runs", {"job_id": "dup"})["run_id"])
    assert second["state"] == "skipped"
    assert second["message"] == f"{first['run_id']}, a run of the same job and args, is running (skip_duplicate)"
    assert server.wait_run(first["run_id"])["state"] == "success"


def test_server_waiting_max_time(server, jobs_dir):
    write_job(jobs_dir, "stuck", """\
        condition: {type: dependency, job_id: nothing}
        waiting: {max_time: 1s}
        program: {type: no-op}
        """)
    server.start()
    t = time.monotonic()
    run = server.wait_run(server.post("/api/v1/runs", {"job_id": "stuck"})["run_id"])
    assert run["state"] == "error"
    assert run["message"].startswith("waited longer than waiting max_time (1.0 s): waiting for nothing")
    assert time.monotonic() - t < 5
    status, body, _ = server.request("GET", "/api/v1/runs/r99999/explain")
    assert (status, json.loads(body)) == (404, {"error": "no run r99999"})
    missing = server.cli("explain", "99999")
    assert (missing.returncode, missing.stderr) == (1, "Error: no run r99999\n")

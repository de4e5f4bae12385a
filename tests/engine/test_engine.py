"""The engine stepped with explicit times: planning, catch-up, operations.

These use a real SQLite file and the real engine; the programs are no-ops,
so nothing here waits for a clock or a process.
"""

import pytest

from conftest import Clock, _kill_agents

from apsis_lite.config import load_config
from apsis_lite.engine.core import PREPARE_AHEAD, Engine
from apsis_lite.engine.launcher import LocalLauncher
from apsis_lite.errors import BadRequest, NotFound, TransitionError
from apsis_lite.model.jobs import job_from_jso
from apsis_lite.store.database import Store

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a multiple of 10 s


@pytest.fixture
def world(tmp_path):
    def make(jobs, clock_at=T0, since_now=False, **settings):
        config = load_config(None, data_dir=str(tmp_path / "data"), jobs_dir=str(tmp_path),
                             **{"horizon": 60, "max_age": 3600, "sweep_interval": 1000, **settings})
        store = Store(config.db_path)
        clock = Clock(clock_at)
        engine = Engine(config, store, LocalLauncher(config), clock=clock, since_now=since_now)
        engine.set_jobs({j.job_id: j for j in jobs}, [])
        engine.recover()
        return engine, store, clock
    yield make
    _kill_agents(tmp_path / "data")


def noop_job(job_id="tick", interval="10s", params=("time",)):
    return job_from_jso({"params": list(params), "program": {"type": "no-op"},
                         "schedule": {"type": "interval", "interval": interval}}, job_id)


def all_runs(store):
    runs, _ = store.query_runs(limit=100_000)
    return sorted(runs, key=lambda r: r.time_schedule)


def tick(engine, now):
    """What the engine's loop does at the instant ``now``: pass after pass until it
    would sleep; returns when it wants to wake. One pass stops planning after
    PLAN_BUDGET of real time, which a busy machine can use up at any point."""
    for _ in range(10_000):
        wake = engine.tick(now)
        if wake > now:
            return wake
    raise AssertionError(f"the engine was still busy at {now} after 10,000 passes")


def test_plans_slots_up_to_the_horizon_once(world):
    engine, store, clock = world([noop_job()])
    tick(engine, T0)
    runs = all_runs(store)
    assert [r.time_schedule - T0 for r in runs] == [0, 10, 20, 30, 40, 50]
    assert runs[0].args == {"time": "2027-01-15T08:00:00Z"}
    tick(engine, T0)
    assert len(all_runs(store)) == 6


def test_due_runs_start_and_wake_time(world):
    engine, store, clock = world([noop_job()])
    wake = tick(engine, T0)
    first = all_runs(store)[0]
    assert store.get_run(first.run_id).state == "success"
    assert wake == T0 + 10 - PREPARE_AHEAD  # its folder is written ahead of time
    states = [e["state"] for e in store.run_log(first.run_id) if e["state"]]
    assert states == ["scheduled", "waiting", "starting", "success"]
    tick(engine, T0 + 25)
    assert [r.state for r in all_runs(store)][:4] == ["success", "success", "success", "scheduled"]


def test_horizon_extends_in_chunks(world):
    engine, store, clock = world([noop_job()])
    tick(engine, T0)
    tick(engine, T0 + 20)  # next slot T0+60 is still more than horizon/2 away
    assert len(all_runs(store)) == 6
    tick(engine, T0 + 31)
    assert max(r.time_schedule for r in all_runs(store)) == T0 + 90


def test_restart_does_not_duplicate_slots(world, tmp_path):
    engine, store, clock = world([noop_job()])
    tick(engine, T0)
    store.close()
    engine2, store2, _ = world([noop_job()], clock_at=T0 + 5)
    tick(engine2, T0 + 5)
    times = [r.time_schedule for r in all_runs(store2)]
    assert len(times) == len(set(times))
    assert times == [T0 + 10 * i for i in range(7)]  # extended to T0+5+horizon, none twice


def test_missed_slots_run_once_except_older_than_max_age(world):
    engine, store, clock = world([noop_job()], max_age=100)
    tick(engine, T0)
    store.close()
    # Down for 1000 s.
    engine2, store2, _ = world([noop_job()], clock_at=T0 + 1000, max_age=100)
    tick(engine2, T0 + 1000)
    runs = all_runs(store2)
    assert len({r.time_schedule for r in runs}) == len(runs)
    by_time = {r.time_schedule: r for r in runs}
    # Every slot of the gap has a run.
    assert sorted(by_time) == [T0 + 10 * i for i in range(len(by_time))]
    old = [r for t, r in by_time.items() if T0 < t < T0 + 900]  # T0 ran before the stop
    recent = [r for t, r in by_time.items() if T0 + 900 <= t <= T0 + 1000]
    assert old and all(r.state == "skipped" and "older than max_age" in r.message for r in old)
    assert recent and all(r.state == "success" for r in recent)


def test_since_now_starts_fresh(world):
    engine, store, clock = world([noop_job()])
    tick(engine, T0)
    store.close()
    engine2, store2, _ = world([noop_job()], clock_at=T0 + 1000, since_now=True)
    tick(engine2, T0 + 1000)
    gap = [r for r in all_runs(store2) if T0 + 60 <= r.time_schedule < T0 + 1000]
    assert gap == []


def test_template_error_makes_an_error_run(world):
    job = job_from_jso({"params": ["time"], "program": "echo {{ time.nosuch.attr }}",
                        "schedule": {"type": "interval", "interval": "30s"}}, "bad-template")
    engine, store, clock = world([job])
    tick(engine, T0)
    runs = all_runs(store)
    assert runs and all(r.state == "error" for r in runs)
    assert "nosuch" in runs[0].message


def test_operations_and_illegal_transitions(world):
    job = job_from_jso({"params": ["x"], "program": {"type": "no-op"}}, "adhoc-noop")
    engine, store, clock = world([job])
    later = engine.submit("adhoc-noop", {"x": "1"}, when=T0 + 3600)
    assert later.state == "scheduled"
    with pytest.raises(TransitionError, match="only a running run can be stopped; skip it instead"):
        engine.stop(later.run_id)
    with pytest.raises(TransitionError, match="only a finished run can be rerun"):
        engine.rerun(later.run_id)
    started = engine.start(later.run_id)
    assert started.state == "success"
    assert any("started by hand" in e["message"] for e in store.run_log(later.run_id))
    again = engine.rerun(later.run_id)
    assert again.rerun_of == later.run_id and again.rerun_group == later.run_id
    tick(engine, T0)
    assert store.get_run(again.run_id).state == "success"
    third = engine.rerun(again.run_id)
    assert third.rerun_group == later.run_id
    assert engine.mark(later.run_id, "failure").state == "failure"
    with pytest.raises(TransitionError, match="already failure"):
        engine.mark(later.run_id, "failure")
    with pytest.raises(BadRequest, match="unknown state"):
        engine.mark(later.run_id, "bogus")
    skipped = engine.skip(engine.submit("adhoc-noop", {"x": "2"}, when=T0 + 60).run_id)
    assert skipped.state == "skipped"
    with pytest.raises(TransitionError, match="is skipped"):
        engine.skip(skipped.run_id)
    with pytest.raises(NotFound):
        engine.skip(999_999)
    with pytest.raises(BadRequest, match="missing"):
        engine.submit("adhoc-noop", {})
    with pytest.raises(NotFound, match="no job"):
        engine.submit("nope", {})


def test_inline_program_survives_as_transient_job(world):
    engine, store, clock = world([])
    run = engine.submit_program({"type": "no-op"})
    tick(engine, T0)
    assert store.get_run(run.run_id).state == "success"
    # A restarted engine (no jobs folder entry) can still rerun it.
    engine2 = Engine(engine.config, store, engine.launcher, clock=clock)
    engine2.set_jobs({}, [])
    engine2.recover()
    again = engine2.rerun(run.run_id)
    tick(engine2, T0 + 1)
    assert store.get_run(again.run_id).state == "success"


def test_next_times(world):
    engine, store, clock = world([noop_job(interval="1 min")])
    times = engine.next_times(engine.jobs["tick"], 3, after=T0 + 1)
    assert [t.timestamp() - T0 for t, _ in times] == [60, 120, 180]


def test_inline_job_definition_is_templated_and_kept(world):
    engine, store, clock = world([])
    run = engine.submit_job({"params": ["who"], "program": {"type": "shell", "command": "echo {{ who }}"}},
                            {"who": "ann"}, when=T0 + 3600)
    assert run.program["command"] == "echo ann"
    assert engine.get_job(run.job_id).params == ("who",)
    from apsis_lite.model.jobs import JobErrors
    with pytest.raises(JobErrors, match="program"):
        engine.submit_job({"params": ["who"]}, {"who": "x"})


def test_planning_yields_to_due_runs(world):
    jobs = [noop_job(f"job{i}", interval="1 min") for i in range(50)]
    engine, store, clock = world(jobs)
    assert engine._plan_due(T0, budget=0) is False  # out of time after one job
    assert len({r.job_id for r in all_runs(store)}) == 1
    tick(engine, T0)
    while engine.tick(T0) == T0:  # each pass plans a little more
        pass
    assert len({r.job_id for r in all_runs(store)}) == 50


def _starting_run(engine, store, command="echo relaunched"):
    """A run left in 'starting' as a crash between commit and agent would leave it."""
    job = job_from_jso({"program": command}, "crashy")
    engine.jobs["crashy"] = job
    from apsis_lite.model.jobs import bind
    run = store.insert_run("crashy", {}, "starting", T0, T0, **bind(job, {}))
    return run


def test_recovery_starts_a_run_that_provably_never_started(world):
    import time as _time

    engine, store, clock = world([])
    run = _starting_run(engine, store)
    program = __import__("apsis_lite.model.programs", fromlist=["x"]).parse_program(run.program)
    engine.launcher.prepare(run, program)  # the spec was written, the agent never asked
    engine.recover()
    deadline = _time.monotonic() + 30
    while store.get_run(run.run_id).state not in ("success", "failure", "error"):
        assert _time.monotonic() < deadline
        _time.sleep(0.05)
        engine._sweep(T0)
    log = [e["message"] for e in store.run_log(run.run_id)]
    assert any("provably not started" in m for m in log)
    assert store.get_run(run.run_id).state == "success"
    assert store.read_output(run.run_id) == b"relaunched\n"
    engine.launcher.close()


def test_after_a_restart_of_the_machine_an_unclaimed_start_proves_nothing(world):
    """Claims are not fsynced: a power cut can lose one whose program ran."""
    engine, store, clock = world([])
    run = _starting_run(engine, store)
    program = __import__("apsis_lite.model.programs", fromlist=["x"]).parse_program(run.program)
    engine.launcher.prepare(run, program)  # the spec, unclaimed as far as the disk says
    engine.launcher.boot_id = lambda: "a-later-boot"
    engine.recover()
    after = store.get_run(run.run_id)
    assert (after.state, after.message) == ("error", "may have started: the machine restarted while it was starting")
    assert store.get_meta("boot_id") == "a-later-boot"
    engine.launcher.close()


def test_recovery_errors_a_run_that_may_have_started(world):
    import json
    import os

    engine, store, clock = world([])
    run = _starting_run(engine, store)
    path = engine.launcher.run_dir(run.run_id)
    os.makedirs(path)
    # A shepherd claimed the spec and died before it could record anything more.
    with open(os.path.join(path, "spec.claimed.json"), "w") as f:
        json.dump({}, f)
    engine.recover()
    after = store.get_run(run.run_id)
    assert after.state == "error"
    assert "may have started" in after.message


def test_recovery_says_a_run_started_when_its_pid_file_proves_it(world):
    import json
    import os

    engine, store, clock = world([])
    run = _starting_run(engine, store)
    path = engine.launcher.run_dir(run.run_id)
    os.makedirs(path)
    # The shepherd spawned the program, recorded it, and died before its notice.
    for name, jso in (("spec.claimed.json", {}), ("pid.json", {"pid": 4242, "pgid": 4242})):
        with open(os.path.join(path, name), "w") as f:
            json.dump(jso, f)
    engine.recover()
    after = store.get_run(run.run_id)
    assert (after.state, after.message) == (
        "error", "started as pid 4242, but its supervisor vanished without recording a result")


def test_recovery_errors_a_running_run_whose_supervisor_vanished(world):
    engine, store, clock = world([])
    run = _starting_run(engine, store)
    store.transition(run.run_id, "starting", "running", T0, "running as pid 1")
    engine.recover()
    after = store.get_run(run.run_id)
    assert after.state == "error"
    assert "vanished" in after.message


def test_after_a_restart_of_the_machine_a_run_without_result_says_so(world):
    """Results a server took notice of are not fsynced: a power cut can lose one."""
    engine, store, clock = world([])
    run = _starting_run(engine, store)
    store.transition(run.run_id, "starting", "running", T0, "running as pid 1")
    engine.launcher.boot_id = lambda: "a-later-boot"
    engine.recover()
    after = store.get_run(run.run_id)
    assert (after.state, after.message) == (
        "error", "the machine restarted while it ran, or before its result was recorded")
    engine.launcher.close()


def test_recovery_retires_folders_of_runs_not_in_flight(world):
    """A folder written ahead for a run that was then skipped while the server
    was down (or left by a crash after the run's result was recorded) is
    retired at start-up; the folder of a run in flight is not."""
    import os

    from apsis_lite.model.jobs import bind
    from apsis_lite.model.programs import parse_program

    engine, store, clock = world([])
    job = job_from_jso({"program": "echo never"}, "later")
    engine.jobs["later"] = job
    skipped = store.insert_run("later", {}, "scheduled", T0 + 2, T0, **bind(job, {}))
    engine.launcher.prepare(skipped, parse_program(skipped.program), ahead=True)
    store.transition(skipped.run_id, "scheduled", "skipped", T0, "skipped while the server was down")
    in_flight = _starting_run(engine, store, "sleep 2")
    engine.launcher.prepare(in_flight, parse_program(in_flight.program))
    assert engine.launcher.start([in_flight.run_id]) == {}
    folder = engine.launcher.run_dir
    engine.recover()
    assert not os.path.exists(folder(skipped.run_id))
    assert os.path.exists(folder(in_flight.run_id))
    assert store.get_run(in_flight.run_id).state in ("starting", "running")
    engine.launcher.close()


def test_since_now_skips_overdue_scheduled_runs(world):
    engine, store, clock = world([noop_job()])
    tick(engine, T0)  # creates slots up to T0+60; only T0 has run
    store.close()
    engine2, store2, _ = world([noop_job()], clock_at=T0 + 35, since_now=True)
    tick(engine2, T0 + 35)
    by_time = {r.time_schedule - T0: r for r in all_runs(store2)}
    assert by_time[0].state == "success"
    assert all(by_time[t].state == "skipped" and "--since now" in by_time[t].message for t in (10, 20, 30))
    assert by_time[40].state == "scheduled"


def test_planning_serves_every_job_near_slots_first(world):
    jobs = [noop_job(f"job{i}", interval="1s") for i in range(3)]
    engine, store, clock = world(jobs)
    for _ in range(3):
        assert engine._plan_due(T0, budget=0) is False  # one step of one job per pass
    runs = all_runs(store)
    # Each job got its first 10 s before any job got more.
    assert {r.job_id for r in runs} == {"job0", "job1", "job2"}
    assert max(r.time_schedule for r in runs) < T0 + 10
    while not engine._plan_due(T0, budget=0):
        pass
    assert max(r.time_schedule for r in all_runs(store)) == T0 + 59


class ReloadWhileStarting(LocalLauncher):
    """The real launcher, with a job reload at the moment it asks the agent to start runs:
    where the server's engine yields to the jobs watcher and the web server."""

    reload = None

    def start(self, run_ids):
        if self.reload is not None:
            self.reload()
        return super().start(run_ids)


def test_a_reload_while_restarting_runs_leaves_every_job_planned(tmp_path):
    config = load_config(None, data_dir=str(tmp_path / "data"), jobs_dir=str(tmp_path),
                         horizon=60, max_age=3600, sweep_interval=1000)
    store = Store(config.db_path)
    launcher = ReloadWhileStarting(config)
    # A run the last server committed as starting but never handed to the agent:
    # recovery starts it, asking the agent, and the reload comes then.
    store.set_meta("boot_id", launcher.boot_id())
    store.insert_run("once", {}, "starting", T0 - 1, T0 - 1, program="true")
    engine = Engine(config, store, launcher, clock=Clock(T0))
    engine.set_jobs({"tick": noop_job("tick")}, [])
    launcher.reload = lambda: engine.set_jobs({"tick": engine.jobs["tick"], "tock": noop_job("tock")}, [])
    try:
        engine.recover()
        launcher.reload = None
        tick(engine, T0)
        planned = {r.job_id for r in all_runs(store) if r.state in ("scheduled", "success")}
        assert {"tick", "tock"} <= planned
    finally:
        store.close()
        _kill_agents(tmp_path / "data")

"""A failed commit is atomic: nothing is acted on that is not on disk, and the
engine reads its state back and goes on when the disk takes writes again.

The disk faults come from an SQLite VFS beneath a real database file
(tests/faults.py); the engine runs with an injected clock and a real agent.
"""

import json
import os
import time

import gevent
import pytest

import extension_types
from apsis_lite.config import load_config
from apsis_lite.engine.core import Engine
from apsis_lite.engine.launcher import LocalLauncher
from apsis_lite.errors import StoreUnavailable
from apsis_lite.model.jobs import job_from_jso
from apsis_lite.store.database import Store
from conftest import Clock, _kill_agents
from faults import FaultyDisk

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.fixture(scope="module")
def disk():
    return FaultyDisk("faulty-disk-store-tests")


@pytest.fixture(autouse=True)
def disk_works_again(disk):
    disk.full = False
    yield
    disk.full = False


@pytest.fixture
def store(tmp_path, disk):
    s = Store(tmp_path / "apsis-lite.db", vfs=disk.name)
    yield s
    s.close()


def test_a_failed_commit_runs_no_after_commit_callback_now_or_later(store, disk):
    called = []
    with pytest.raises(StoreUnavailable, match="disk is full"):
        with store.write():
            store.insert_run("j", {}, "scheduled", T0, T0)
            store.after_commit(lambda: called.append("acted on a change that is not on disk"))
            disk.full = True
    disk.full = False
    assert store.query_runs()[0] == []  # rolled back
    with store.write():  # the next, unrelated commit
        store.set_meta("x", "1")
    assert called == []
    assert store.faults >= 1


def test_a_failed_item_undoes_only_its_own_changes(store):
    called = []
    with store.write():
        store.insert_run("a", {}, "scheduled", T0, T0)
        with pytest.raises(ValueError):
            with store.atomic():
                store.insert_run("b", {}, "scheduled", T0, T0)
                store.after_commit(lambda: called.append("b"))
                raise ValueError("this item's own fault")
        store.insert_run("c", {}, "scheduled", T0, T0)
        store.after_commit(lambda: called.append("c"))
    assert sorted(r.job_id for r in store.query_runs()[0]) == ["a", "c"]
    assert called == ["c"]


def test_a_storage_failure_inside_an_item_fails_the_whole_transaction(store, disk):
    with pytest.raises(StoreUnavailable):
        with store.write():
            store.insert_run("a", {}, "scheduled", T0, T0)
            with store.atomic():
                disk.full = True
                store.insert_run("b" * 5000, {"x": "y" * 5000}, "scheduled", T0, T0)
                store.set_meta("big", "z" * 100_000)
    disk.full = False
    assert store.query_runs()[0] == []


# -- the engine over a disk that fills and empties ----------------------------------


@pytest.fixture
def world(tmp_path, disk):
    """(engine, store, clock) over the faulty disk, with the given jobs; recovered."""
    made = []

    def make(jobs=(), **settings):
        config = load_config(None, data_dir=str(tmp_path / "data"), jobs_dir=str(tmp_path),
                             **{"horizon": 60, "max_age": 3600, "sweep_interval": 1000, **settings})
        store = Store(config.db_path, vfs=disk.name)
        made.append(store)
        clock = Clock(T0)
        engine = Engine(config, store, LocalLauncher(config), clock=clock)
        engine.set_jobs({j.job_id: j for j in jobs}, [])
        return engine, store, clock

    yield make
    for store in made:
        store.close()
    _kill_agents(tmp_path / "data")


def passes(engine, n=1):
    """What the engine's loop does, without its sleeps: ``n`` guarded passes."""
    for _ in range(n):
        for _ in range(1000):  # until it would sleep, as the loop does
            if engine._guarded_pass() > engine.clock():
                break


def wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_run_whose_result_could_not_be_recorded_is_collected_once_later(world, disk, tmp_path):
    """The run that once ran three times: its collection's commit fails on a full disk."""
    ledger = tmp_path / "ledger"
    engine, store, clock = world()
    passes(engine)
    run = engine.submit_program(f"echo ran >> {ledger}; echo out")
    passes(engine)  # starts it
    wait_for(lambda: engine.launcher.result(run.run_id) is not None)
    disk.full = True
    for _ in range(3):
        engine._next_sweep = 0  # the sweep finds the result: collection fails to commit
        passes(engine)
    assert store.get_run(run.run_id).state in ("starting", "running")
    problems = engine.health.problems()
    assert problems and "disk is full" in problems[0]
    # The run folder still holds the only copy of the result.
    assert engine.launcher.result(run.run_id) is not None
    disk.full = False
    passes(engine)  # reads its state back, re-attaches, collects
    wait_for(lambda: store.get_run(run.run_id).state == "success")
    time.sleep(0.5)  # room for a second start, had one been asked for
    passes(engine, 3)
    assert ledger.read_text() == "ran\n"
    assert store.read_output(run.run_id) == b"out\n"
    assert engine.health.problems() == []
    log = [e["message"] for e in store.run_log(run.run_id)]
    assert not any("provably not started" in m for m in log), log


def test_slots_due_while_the_disk_was_full_are_planned_once_and_started(world, disk):
    job = job_from_jso({"params": ["time"], "program": {"type": "no-op"},
                        "schedule": {"type": "interval", "interval": "10s"}}, "tick")
    engine, store, clock = world([job])
    passes(engine)  # plans T0 .. T0+60
    clock.t = T0 + 5
    passes(engine)
    disk.full = True
    for t in range(15, 125, 10):  # a full disk for two minutes: nothing is written
        clock.t = T0 + t
        passes(engine)
    assert "disk is full" in engine.health.problems()[0]
    disk.full = False
    clock.t = T0 + 130
    passes(engine, 3)
    runs, _ = store.query_runs(limit=1000)
    by_time = {}
    for r in runs:
        by_time.setdefault(r.time_schedule - T0, []).append(r.state)
    due = [t for t in by_time if t <= 130]
    assert sorted(due) == [float(t) for t in range(0, 131, 10)], sorted(by_time)
    assert all(len(states) == 1 for states in by_time.values()), by_time  # no slot twice
    assert all(by_time[t] == ["success"] for t in due), by_time  # none stuck, none lost
    assert engine.health.problems() == []


def test_startup_on_a_full_disk_waits_then_schedules(world, disk):
    job = job_from_jso({"params": ["time"], "program": {"type": "no-op"},
                        "schedule": {"type": "interval", "interval": "10s"}}, "tick")
    engine, store, clock = world([job])
    disk.full = True
    for _ in range(3):
        wake = engine._guarded_pass()
        assert wake > clock.t  # backs off: never a tight loop
    assert not engine.started
    assert "disk is full" in engine.health.problems()[0]
    disk.full = False
    passes(engine, 2)
    assert engine.started
    assert [r.state for r in store.query_runs(limit=1000)[0] if r.time_schedule <= clock.t] == ["success"]


def test_backoff_doubles_up_to_a_cap(world, disk):
    engine, store, clock = world()
    disk.full = True
    delays = [engine._guarded_pass() - clock.t for _ in range(8)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == 10.0
    disk.full = False
    passes(engine)
    assert engine._backoff.next() == 0.5  # reset by a pass that succeeded


def test_a_reload_the_disk_refuses_changes_nothing_and_applies_later(world, disk):
    def job(command):
        return job_from_jso({"params": ["time"], "program": command,
                             "schedule": {"type": "interval", "interval": "10s"}}, "tick")
    old, new = job("echo old"), job("echo new")
    engine, store, clock = world([old])
    passes(engine)
    disk.full = True
    with pytest.raises(StoreUnavailable):
        engine.set_jobs({"tick": new}, [])
    assert engine.jobs["tick"] is old  # kept: its runs still say 'echo old'
    disk.full = False
    summary = engine.set_jobs({"tick": new}, [])
    assert summary["changed"] == ["tick"] and summary["skipped_runs"] > 0
    passes(engine)
    scheduled = [r for r in store.query_runs(limit=1000)[0] if r.state == "scheduled"]
    assert scheduled and all(r.program["command"] == "echo new" for r in scheduled)


def test_an_in_server_result_whose_commit_fails_is_recorded_once_there_is_room(world, disk):
    engine, store, clock = world()
    passes(engine)
    rid = engine.submit_job({"program": {"type": "tests.echo-in-server", "text": "hi"}}).run_id
    passes(engine)  # starts it in the server
    assert store.get_run(rid).state == "running"
    deadline = time.monotonic() + 10
    while rid in engine.inserver:  # until it has returned (its result waits for the next pass)
        assert time.monotonic() < deadline, "the in-server program did not return"
        gevent.sleep(0.01)
    disk.full = True
    passes(engine, 3)  # recording its result fails to commit
    assert store.get_run(rid).state == "running"
    disk.full = False
    passes(engine)  # reads its state back, then records the result it still holds
    run = store.get_run(rid)
    assert (run.state, run.message) == ("success", "said hi")
    assert store.read_output(rid) == b"hi\n"


def test_a_storage_failure_while_checking_conditions_is_waited_out_not_the_runs_error(world, disk):
    engine, store, clock = world()
    passes(engine)
    extension_types.STORE_FAILS["now"] = True
    try:
        rid = engine.submit_job({"program": {"type": "no-op"}, "condition": {"type": "tests.store-fails"}}).run_id
        passes(engine, 3)
        assert store.get_run(rid).state in ("scheduled", "waiting")
        assert "cannot be read" in engine.health.problems()[0]
    finally:
        extension_types.STORE_FAILS["now"] = False
    passes(engine, 2)
    assert store.get_run(rid).state == "success"
    assert engine.health.problems() == []


def test_a_start_up_that_met_a_full_disk_reads_its_state_once(world, disk):
    job = job_from_jso({"params": ["time"], "program": {"type": "no-op"},
                        "schedule": {"type": "interval", "interval": "10s"}}, "tick")
    engine, store, clock = world([job])
    disk.full = True
    engine._guarded_pass()
    disk.full = False
    passes(engine, 3)  # the start-up succeeds: nothing is left to read back after it
    assert engine.started
    assert store.get_meta("engine_resync") is None

"""The engine's collaborators one at a time: a real store, real run folders, the injected clock.

Each is built with only what it needs, as the engine builds it, so that a
change to one can be checked without driving a whole pass.
"""

import os

import pytest

from conftest import Clock

from apsis_lite.config import load_config
from apsis_lite.engine.alarms import Alarms
from apsis_lite.engine.catalog import JobCatalog
from apsis_lite.engine.folders_ahead import PREPARE_AHEAD, FoldersAhead
from apsis_lite.engine.launcher import LocalLauncher
from apsis_lite.engine.pauses import Pauses
from apsis_lite.engine.waitlist import WaitingRuns
from apsis_lite.errors import TransitionError
from apsis_lite.model.jobs import bind, job_from_jso
from apsis_lite.store.database import Store

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.fixture
def parts(tmp_path):
    """``make(jobs, **settings) -> (config, store, clock, catalog)`` with ``jobs`` installed."""
    stores = []

    def make(jobs=(), **settings):
        config = load_config(None, data_dir=str(tmp_path / "data"), jobs_dir=str(tmp_path), **settings)
        store = Store(config.db_path)
        stores.append(store)
        clock = Clock(T0)
        catalog = JobCatalog(config, store, clock)
        jobs = {j.job_id: j for j in jobs}
        catalog.install(jobs, [], touched=set(jobs))
        return config, store, clock, catalog
    yield make
    for store in stores:
        store.close()


def job(job_id, **jso):
    return job_from_jso({"program": {"type": "no-op"}, **jso}, job_id)


def insert(store, j, state="scheduled", t=T0, args=None):
    args = args or {}
    return store.insert_run(j.job_id, args, state, t, T0, **bind(j, args))


def test_a_new_description_changes_no_job_and_a_new_program_does(parts):
    config, store, clock, catalog = parts([job("a"), job("b"), job("gone")])
    new = {"a": job("a", metadata={"description": "now described"}),
           "b": job_from_jso({"program": "echo b"}, "b"), "c": job("c")}
    assert catalog.changes(new) == (["c"], ["b"], ["gone"])


def test_a_broken_job_is_listed_and_not_planned_until_its_file_changes(parts):
    a = job("a", schedule={"type": "interval", "interval": "10s"})
    config, store, clock, catalog = parts([a])
    assert catalog.next_times(a, count=1)
    catalog.break_job("a", "planning its runs failed: ValueError: bad")
    assert catalog.broken("a") == "planning its runs failed: ValueError: bad"
    assert ["cannot be scheduled: planning its runs failed" in str(e) for e in catalog.job_errors] == [True]
    assert catalog.next_times(a) == []
    catalog.install({"a": a}, [], touched={"a"})
    assert catalog.broken("a") is None and catalog.job_errors == []


def test_a_pause_outlives_its_owner_and_is_one_change_to_react_to(parts):
    config, store, clock, catalog = parts([job("a")])
    wakes = []
    pauses = Pauses(store, clock, catalog, lambda: wakes.append(clock()))
    pauses.pause("a", reason="maintenance", mode="hold", user="ops")
    assert wakes == [T0]
    assert pauses.take_changes() == ["a"] and pauses.take_changes() == []
    again = Pauses(store, clock, catalog, lambda: None)
    assert (again.job_pause("a").reason, again.pause_of_job("a").mode) == ("maintenance", "hold")
    assert again.job_pause(None) is None
    with pytest.raises(TransitionError, match="there is no global pause"):
        again.resume(None)
    again.resume("a")
    assert Pauses(store, clock, catalog, lambda: None).pauses == []


def test_a_run_waits_for_a_resource_slot_and_is_woken_when_it_is_freed(parts, tmp_path):
    j = job("j", params=["n"], resources=["db"])
    config, store, clock, catalog = parts([j], resources={"db": 1})
    pauses = Pauses(store, clock, catalog, lambda: None)
    waiting = WaitingRuns(config, store, catalog, pauses, FoldersAhead(store, LocalLauncher(config)))
    first, second = (insert(store, j, "waiting", args={"n": n}) for n in ("1", "2"))
    assert waiting.may_start(first, T0) and waiting.start_waiting(first, T0, "starting")
    assert not waiting.may_start(second, T0)
    assert len(waiting) == 1
    assert store.get_run(second.run_id).message.startswith("waiting for resource db (needs 1; 1 of 1 held")
    assert waiting.finished(first.run_id) == {second.run_id}
    assert len(waiting) == 0


def test_folders_are_written_ahead_only_for_runs_due_soon_and_retired_once_a_skip_commits(parts):
    j = job_from_jso({"params": ["n"], "program": "echo hi"}, "j")
    config, store, clock, catalog = parts([j])
    launcher = LocalLauncher(config)
    folders = FoldersAhead(store, launcher)
    soon = insert(store, j, t=T0 + 1, args={"n": "soon"})
    later = insert(store, j, t=T0 + PREPARE_AHEAD + 5, args={"n": "later"})
    for run in (soon, later):
        folders.expect(run.time_schedule, run.run_id)
    assert folders.prepare_soon(T0, budget=10) is True
    assert os.path.isdir(launcher.run_dir(soon.run_id))
    assert not os.path.exists(launcher.run_dir(later.run_id))
    assert folders.next_wake() == later.time_schedule - PREPARE_AHEAD
    with store.write():
        store.transition(soon.run_id, "scheduled", "skipped", T0, "skipped by the test")
        folders.discard(soon.run_id)
        assert os.path.isdir(launcher.run_dir(soon.run_id))  # kept until the skip is on disk
    assert not os.path.exists(launcher.run_dir(soon.run_id))


def test_a_missed_deadline_is_logged_then_reported_at_its_exact_time(parts):
    report = job("report", params=["date"], deadline={"daytime": "09:00", "tz": "Europe/London"})
    config, store, clock, catalog = parts([report])
    alarms = Alarms(store, catalog, stop=lambda rid, why: pytest.fail("a deadline stops nothing"))
    seen = []
    alarms.add_listener(lambda *alarm: seen.append(alarm))
    run = insert(store, report, args={"date": "2027-01-15"})
    with store.write():
        alarms.arm_deadline(report, run, T0)
    nine = T0 + 3600
    assert alarms.next_wake() == nine
    alarms.fire(nine - 0.001)
    assert seen == []
    alarms.fire(nine)
    message = ("deadline 09:00 Europe/London missed: the run is still scheduled "
               "(for 2027-01-15T08:00:00Z)")
    assert seen == [(run.run_id, "deadline", message)]
    assert store.run_log(run.run_id)[-1]["message"] == message

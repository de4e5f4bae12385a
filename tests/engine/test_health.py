"""The engine's health as /alive reports it, with an injected clock."""

from apsis_lite.engine.health import Backoff, Health
from conftest import Clock


def test_a_stuck_engine_is_reported_once_its_last_pass_is_too_old():
    clock = Clock(1000.0)
    health = Health(clock=clock, max_pass_age=30.0)
    assert health.problems() == []  # not started yet: an engine driven by hand is no problem
    health.engine_started()
    clock.t += 29
    assert health.problems() == []  # still within the first pass's allowance
    clock.t += 2
    assert health.problems() == ["the engine has not completed a pass for 31.0 s"]
    health.pass_done()
    assert health.problems() == [] and health.to_jso()["ok"] is True
    clock.t += 45
    assert "has not completed a pass for 45" in health.problems()[0]


def test_storage_failure_and_recovery():
    clock = Clock(1000.0)
    health = Health(clock=clock)
    health.engine_started()
    health.storage_failed("the database cannot be written: the disk is full")
    clock.t += 120  # no pass for two minutes: the disk, not a stuck engine, is the problem
    (problem,) = health.problems()
    assert problem.startswith("the database cannot be written: the disk is full (since ")
    assert health.to_jso()["storage_error"] == "the database cannot be written: the disk is full"
    health.pass_done()
    assert health.problems() == [] and health.to_jso()["storage_error"] is None


def test_a_stopped_engine_says_why():
    health = Health()
    health.engine_started()
    health.engine_stopped("it failed: KeyboardInterrupt: ")
    assert health.problems() == ["the engine is stopped: it failed: KeyboardInterrupt: "]


def test_backoff():
    b = Backoff(first=0.5, cap=10.0)
    assert [b.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    b.reset()
    assert b.next() == 0.5

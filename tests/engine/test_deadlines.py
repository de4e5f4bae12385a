"""Deadlines and max_duration: the engine with an injected clock, then the real server."""

import time

import pytest

import extension_types  # noqa: F401 (registers tests.wait-in-server)
from conftest import write_job
from test_conditions import T0, messages, settle, worlds

from apsis_lite.model.deadlines import Deadline
from apsis_lite.model.jobs import JobErrors, job_from_jso
from apsis_lite.timeutil import parse_time

# T0 is 2027-01-15T08:00:00Z: London is on GMT, so 09:00 London is T0 + 1 h.
NINE = T0 + 3600


@pytest.fixture
def world(tmp_path):
    yield from worlds(tmp_path)


def alarms_of(engine):
    """The alarms the engine reports, as (run_id, kind, message)."""
    seen = []
    engine.add_alarm_listener(lambda rid, kind, message: seen.append((rid, kind, message)))
    return seen


def report(**jso):
    return job_from_jso({"params": ["date"], "program": {"type": "no-op"},
                         "deadline": {"daytime": "09:00", "tz": "Europe/London"}, **jso}, "report")


def test_deadline_missed_while_waiting_is_logged_and_reported_at_the_exact_time(world):
    engine, store, clock = world([
        job_from_jso({"params": ["date"], "program": {"type": "no-op"}}, "load"),
        report(condition={"type": "dependency", "job_id": "load"})])
    seen = alarms_of(engine)
    run = engine.submit("report", {"date": "2027-01-15"})
    settle(engine, clock)
    assert "deadline 09:00 Europe/London: must have succeeded by 2027-01-15T09:00:00Z" in (
        engine.explain(run.run_id)["lines"])
    settle(engine, clock, NINE - 0.001)
    assert seen == []
    settle(engine, clock, NINE)
    message = ("deadline 09:00 Europe/London missed: the run is still waiting "
               "(for load(date=2027-01-15) to be success; there is no such run)")
    assert seen == [(run.run_id, "deadline", message)]
    assert messages(store, run.run_id)[-1] == message
    assert store.get_run(run.run_id).state == "waiting"  # an alarm, not a stop
    settle(engine, clock, NINE + 100)
    assert len(seen) == 1


def test_deadline_met_raises_nothing(world):
    engine, store, clock = world([report()])
    seen = alarms_of(engine)
    run = engine.submit("report", {"date": "2027-01-15"})
    settle(engine, clock)
    assert store.get_run(run.run_id).state == "success"
    settle(engine, clock, NINE + 1)
    assert seen == []
    assert not any("deadline" in m for m in messages(store, run.run_id))


def test_a_failed_run_misses_its_deadline_unless_a_rerun_succeeds(world):
    engine, store, clock = world([report(program="exit 1")])
    seen = alarms_of(engine)
    failed = store.insert_run("report", {"date": "2027-01-16"}, "failure", T0, T0)
    engine._arm_deadline(engine.jobs["report"], failed, T0)
    other = store.insert_run("report", {"date": "2027-01-15"}, "failure", T0, T0)
    engine._arm_deadline(engine.jobs["report"], other, T0)
    store.insert_run("report", {"date": "2027-01-15"}, "success", T0, T0)  # e.g. marked by hand
    settle(engine, clock, NINE + 86400)
    assert [(rid, kind) for rid, kind, _ in seen] == [(failed.run_id, "deadline")]
    assert seen[0][2] == "deadline 09:00 Europe/London missed: the run ended failure at 2027-01-15T08:00:00Z"


def test_deadline_is_rebuilt_after_a_restart_and_skipped_when_created_late(world):
    jobs = [job_from_jso({"params": ["date"], "program": {"type": "no-op"}}, "load"),
            report(condition={"type": "dependency", "job_id": "load"})]
    engine, store, clock = world(jobs)
    run = engine.submit("report", {"date": "2027-01-15"})
    settle(engine, clock)
    engine, store, clock = world(jobs, clock_at=T0 + 60)  # a restart
    seen = alarms_of(engine)
    late = engine.submit("report", {"date": "2027-01-14"})  # its deadline passed yesterday
    settle(engine, clock, NINE)
    assert [rid for rid, _, _ in seen] == [run.run_id]
    assert not any("deadline" in m for m in messages(store, late.run_id))


def test_deadline_date_comes_from_the_date_arg_or_the_scheduled_time():
    d = Deadline.from_jso({"daytime": "07:00", "tz": "America/New_York", "date_shift": 1})
    # T0 is 03:00 in New York on 2027-01-15; EST is UTC-5.
    assert d.due({}, T0) == parse_time("2027-01-16T12:00:00Z").timestamp()
    assert d.due({"date": "2027-07-01"}, T0) == parse_time("2027-07-02T11:00:00Z").timestamp()  # EDT
    # A daytime in the spring-forward gap counts from the moment the clocks jump.
    gap = Deadline.from_jso({"daytime": "02:30", "tz": "America/New_York"})
    assert gap.due({"date": "2027-03-14"}, T0) == parse_time("2027-03-14T07:00:00Z").timestamp()


def test_deadline_shifts_are_bounded_and_none_falls_past_year_9999():
    with pytest.raises(JobErrors) as exc:
        job_from_jso({"program": "true", "deadline": {"daytime": "08:00", "date_shift": 99999999999}}, "j")
    assert [str(e) for e in exc.value.errors] == [
        "j: deadline.date_shift: out of range: 99999999999 (at most 3,660 days either way)"]
    d = Deadline.from_jso({"daytime": "08:00", "date_shift": 3660})
    assert d.due({"date": "9999-12-01"}, T0) is None


def test_bad_deadline_and_max_duration_keys_are_reported():
    with pytest.raises(JobErrors) as exc:
        job_from_jso({"program": "true", "deadline": {"daytime": "8am", "tz": "Mars/Base"},
                      "max_duration": {"duration": "2h", "stop": "yes", "kill": 1}}, "j")
    assert [str(e) for e in exc.value.errors] == [
        "j: deadline.daytime: not a daytime: '8am' (expected 'HH:MM' or 'HH:MM:SS')",
        "j: deadline.tz: unknown time zone: 'Mars/Base'",
        "j: max_duration.stop: expected true or false, got str 'yes'",
        "j: max_duration.kill: unknown key; expected: duration, stop",
    ]


def _running(engine, store, clock, run_id, timeout=20):
    """Tick until a real program has started; its running time is the real one."""
    deadline = time.monotonic() + timeout
    while store.get_run(run_id).state != "running":
        assert time.monotonic() < deadline, store.get_run(run_id)
        time.sleep(0.02)
        engine._sweep(clock.t)
        settle(engine, clock, passes=1)
    return store.get_run(run_id).times["running"]


def test_max_duration_alarm_at_the_exact_time_and_stop(world):
    slow = job_from_jso({"program": "sleep 30", "max_duration": "2h"}, "slow")
    stopped = job_from_jso({"program": "sleep 30", "max_duration": {"duration": "1 min", "stop": True}},
                           "stopped")
    # Running times come from the real programs: the clock starts at the real time.
    engine, store, clock = world([slow, stopped], clock_at=time.time())
    seen = alarms_of(engine)
    a, b = engine.submit("slow"), engine.submit("stopped")
    started_a = _running(engine, store, clock, a.run_id)
    started_b = _running(engine, store, clock, b.run_id)
    assert engine.explain(a.run_id)["lines"][-1].startswith("max_duration 2 h: an alarm at ")

    settle(engine, clock, started_b + 60 - 0.001)
    assert seen == []
    settle(engine, clock, started_b + 60)
    assert [(rid, kind) for rid, kind, _ in seen] == [(b.run_id, "max_duration")]
    assert any(m.startswith("max_duration 1 min exceeded: SIGTERM") for m in messages(store, b.run_id))
    settle(engine, clock, started_a + 7200 - 0.001)
    assert len(seen) == 1
    settle(engine, clock, started_a + 7200)
    assert [(rid, kind) for rid, kind, _ in seen] == [(b.run_id, "max_duration"), (a.run_id, "max_duration")]
    assert seen[1][2].startswith("ran longer than max_duration 2 h (running since ")
    assert store.get_run(a.run_id).state == "running"  # an alarm only
    engine.stop(a.run_id)
    engine.launcher.close()


def test_max_duration_holds_for_a_program_that_runs_in_the_server(world):
    slow = job_from_jso({"program": {"type": "tests.wait-in-server"},
                         "max_duration": {"duration": "1 min", "stop": True}}, "slow")
    engine, store, clock = world([slow])
    seen = alarms_of(engine)
    run = engine.submit("slow")
    settle(engine, clock)
    assert store.get_run(run.run_id).state == "running"
    assert engine.explain(run.run_id)["lines"][-1].startswith("max_duration 1 min: an alarm at ")
    settle(engine, clock, T0 + 60 - 0.001)
    assert seen == []
    settle(engine, clock, T0 + 60)
    assert [(rid, kind) for rid, kind, _ in seen] == [(run.run_id, "max_duration")]
    ended = store.get_run(run.run_id)
    assert ended.state == "failure" and "stopped" in ended.message
    assert "max_duration 1 min exceeded" in messages(store, run.run_id)

# --- through the real server --------------------------------------------------------


def test_server_command_action_fires_on_a_missed_deadline(server, jobs_dir, tmp_path):
    out = tmp_path / "alarm.txt"
    # The deadline: a few seconds from now (after the server is up), on that day's UTC date.
    soon = time.gmtime(time.time() + 4)
    write_job(jobs_dir, "nightly", f"""\
        params: [date]
        condition: {{type: dependency, job_id: never}}
        deadline: {{daytime: "{time.strftime('%H:%M:%S', soon)}", tz: UTC}}
        action:
          - type: command
            command: 'echo "$APSIS_ALARM|$APSIS_STATE|$APSIS_ALARM_MESSAGE" > {out}'
            if: {{states: [failure]}}
          - type: command
            command: 'echo success > {out}.success'
            if: {{states: [success]}}
        program: {{type: no-op}}
        """)
    server.start()
    rid = server.post("/api/v1/runs", {"job_id": "nightly",
                                       "args": {"date": time.strftime("%Y-%m-%d", soon)}})["run_id"]
    server.wait_for(lambda: out.exists() and out.read_text(), timeout=15, what="the alarm action")
    kind, state, message = out.read_text().strip().split("|")
    assert (kind, state) == ("deadline", "waiting")
    assert message == (f"deadline {time.strftime('%H:%M:%S', soon)} UTC missed: the run is still "
                       "waiting (for never to be success; there is no such run, and no job 'never' is loaded)")
    log = [e["message"] for e in server.get(f"/api/v1/runs/{rid}/log")["items"]]
    assert message in log
    server.wait_for(lambda: any(m.startswith("action command") and "on deadline missed: exit code 0" in m
                                for m in [e["message"] for e in server.get(f"/api/v1/runs/{rid}/log")["items"]]),
                    what="the action's outcome in the log")
    assert not (tmp_path / "alarm.txt.success").exists()
    job = server.cli("job", "nightly")
    assert f"must succeed by {time.strftime('%H:%M:%S', soon)} UTC on the run's date" in job.stdout


def test_an_alarm_event_as_webhooks_and_commands_see_it(tmp_path):
    from apsis_lite.model.actions import ActionEvent, CommandAction
    from apsis_lite.store.database import Store

    store = Store(str(tmp_path / "db.sqlite"))
    run = store.insert_run("report", {"date": "2027-01-15"}, "waiting", T0, T0)
    event = ActionEvent(CommandAction(command="true"), run, "waiting", "waiting", NINE,
                        alarm={"kind": "deadline", "message": "deadline 09:00 Europe/London missed: ..."})
    jso = event.to_jso()
    assert jso["transition"] is None
    assert jso["alarm"] == {"kind": "deadline", "message": "deadline 09:00 Europe/London missed: ...",
                            "time": "2027-01-15T09:00:00Z"}
    env = event.environment()
    assert (env["APSIS_ALARM"], env["APSIS_STATE"]) == ("deadline", "waiting")
    assert event.describe().splitlines()[0] == (
        f"Run r{run.run_id} of job report: deadline 09:00 Europe/London missed: ....")
    store.close()


def test_reported_alarms_are_forgotten_once_their_run_ends(world):
    slow = job_from_jso({"program": "sleep 30", "max_duration": "1 min"}, "slow")
    engine, store, clock = world([slow, report()], clock_at=time.time())
    seen = alarms_of(engine)
    # Two runs with the same args and deadline: reported once, and nothing kept afterwards.
    due = report().deadline.due({"date": "2099-01-01"}, 0)
    for _ in range(2):
        late = engine.submit("report", {"date": "2099-01-01"}, when=due + 1)
    settle(engine, clock, due)
    assert [kind for _, kind, _ in seen] == ["deadline"]
    engine.skip(late.run_id)

    run = engine.submit("slow")
    started = _running(engine, store, clock, run.run_id)
    settle(engine, clock, started + 60)
    assert [kind for _, kind, _ in seen] == ["deadline", "max_duration"]
    assert engine._alarmed  # a restart's second arming of it must not report it again
    engine.stop(run.run_id)
    deadline = time.monotonic() + 20
    while store.get_run(run.run_id).state != "success":  # stopped by hand, by its stop signal
        assert time.monotonic() < deadline, store.get_run(run.run_id)
        time.sleep(0.02)
        engine._sweep(clock.t)
        settle(engine, clock, passes=1)
    assert engine._alarmed == set()
    engine.launcher.close()

"""Pauses: the engine stepped with an injected clock, then the real server and CLI."""

import json

import pytest

from conftest import write_job
from test_conditions import T0, messages, settle, worlds
from test_engine import all_runs

from apsis_lite.errors import NotFound, TransitionError
from apsis_lite.model.jobs import job_from_jso


@pytest.fixture
def world(tmp_path):
    yield from worlds(tmp_path)


def ticking(job_id="tick", **jso):
    """A no-op job due every 10 s (slots at T0, T0+10, ...)."""
    return job_from_jso({"program": {"type": "no-op"},
                         "schedule": {"type": "interval", "interval": "10s"}, **jso}, job_id)


def run_at(store, job_id, t):
    [run] = [r for r in all_runs(store) if r.job_id == job_id and r.time_schedule == t]
    return run


def test_skip_pause_records_due_slots_as_skipped_with_its_reason(world):
    engine, store, clock = world([ticking(), ticking("other")])
    assert run_at(store, "tick", T0).state == "success"
    pause = engine.pause("tick", "disk full", "skip", user="ann")
    assert pause.to_jso() == {"job_id": "tick", "mode": "skip", "reason": "disk full", "user": "ann",
                              "time": "2027-01-15T08:00:00Z"}
    explained = engine.explain(run_at(store, "tick", T0 + 10).run_id)
    assert explained["lines"][0] == "job paused: disk full (by ann): when due it will be skipped"
    settle(engine, clock, T0 + 20)
    for t in (T0 + 10, T0 + 20):
        run = run_at(store, "tick", t)
        assert (run.state, run.message) == ("skipped", "skipped: job paused: disk full (by ann)")
        assert run_at(store, "other", t).state == "success"  # only that job is paused

    engine.resume("tick")
    settle(engine, clock, T0 + 30)
    assert run_at(store, "tick", T0 + 30).state == "success"
    assert engine.pauses == []


def test_hold_pause_keeps_due_runs_waiting_until_lifted(world):
    engine, store, clock = world([ticking()])
    engine.pause(None, "database upgrade", "hold")
    settle(engine, clock, T0 + 10)
    settle(engine, clock, T0 + 20)
    held = [run_at(store, "tick", T0 + 10), run_at(store, "tick", T0 + 20)]
    for run in held:
        assert run.state == "waiting"
        assert run.message == "held: global pause: database upgrade; starts when the pause is lifted"
    explained = engine.explain(held[0].run_id)
    assert explained["summary"] == "held: global pause: database upgrade; starts when the pause is lifted"
    assert explained["pause"]["job_id"] is None

    # An ad hoc run is not held back, and its log says why.
    adhoc = engine.submit("tick")
    settle(engine, clock, T0 + 21)
    assert store.get_run(adhoc.run_id).state == "success"
    assert ("not held back by the global pause: database upgrade; only scheduled runs "
            "and automatic reruns are paused") in messages(store, adhoc.run_id)

    # Nothing happens to held runs while time passes (no timer, no polling)...
    settle(engine, clock, T0 + 25)
    assert [store.get_run(r.run_id).state for r in held] == ["waiting", "waiting"]
    # ... and lifting the pause starts them at once.
    engine.resume()
    settle(engine, clock, T0 + 25.5)
    for run in held:
        run = store.get_run(run.run_id)
        assert run.state == "success"
        assert run.times["starting"] == T0 + 25.5


def test_hold_survives_a_restart_and_a_job_pause_remains_after_the_global_one(world):
    engine, store, clock = world([ticking()])
    engine.pause(None, "maintenance", "hold")
    engine.pause("tick", "broken upstream", "hold", user="bob")
    settle(engine, clock, T0 + 10)
    rid = run_at(store, "tick", T0 + 10).run_id
    assert store.get_run(rid).message.startswith("held: global pause: maintenance")

    engine, store, clock = world([ticking()], clock_at=T0 + 11)  # a restart
    assert [p.to_jso()["job_id"] for p in engine.pauses] == [None, "tick"]
    settle(engine, clock, T0 + 12)
    assert store.get_run(rid).state == "waiting"
    engine.resume()
    settle(engine, clock, T0 + 13)
    run = store.get_run(rid)
    assert (run.state, run.message) == (
        "waiting", "held: job paused: broken upstream (by bob); starts when the pause is lifted")
    engine.resume("tick")
    settle(engine, clock, T0 + 14)
    assert store.get_run(rid).state == "success"


def test_a_skip_pause_replacing_a_hold_skips_the_held_runs(world):
    engine, store, clock = world([ticking()])
    engine.pause("tick", "wait", "hold")
    settle(engine, clock, T0 + 10)
    rid = run_at(store, "tick", T0 + 10).run_id
    assert store.get_run(rid).state == "waiting"
    engine.pause("tick", "not today", "skip")
    settle(engine, clock, T0 + 11)
    assert store.get_run(rid).message == "skipped: job paused: not today"
    assert store.get_run(rid).state == "skipped"


def test_starting_a_held_run_by_hand_says_what_it_skipped(world):
    engine, store, clock = world([ticking()])
    engine.pause(None, "quiet", "hold")
    settle(engine, clock, T0 + 10)
    rid = run_at(store, "tick", T0 + 10).run_id
    engine.start(rid)
    assert ("started by hand, skipping its remaining conditions (it was held: global pause: quiet; "
            "starts when the pause is lifted)") in messages(store, rid)
    assert store.get_run(rid).state == "success"


def test_pause_errors(world):
    engine, store, clock = world([ticking()])
    with pytest.raises(NotFound, match="no job 'nope'"):
        engine.pause("nope", "x", "skip")
    with pytest.raises(TransitionError, match="job 'tick' is not paused"):
        engine.resume("tick")
    with pytest.raises(TransitionError, match="there is no global pause"):
        engine.resume()


# --- through the real server and CLI ---------------------------------------------------


def test_server_pause_via_cli_skips_runs_with_the_reason(server, jobs_dir):
    write_job(jobs_dir, "beat", """\
        program: {type: no-op}
        schedule: {type: interval, interval: 1s}
        """)
    server.start()
    out = server.cli("pause", "beat", "--reason", "vendor outage")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "job beat paused (skip): vendor outage\n"
    server.wait_for(lambda: len(server.runs("job:beat state:skipped")) >= 2, timeout=15,
                    what="two skipped runs")
    skipped = server.runs("job:beat state:skipped")[0]
    # The pause names who set it when the server knows (with authentication).
    by = f" (by {skipped_user})" if (skipped_user := server.get("/api/v1/pauses")["items"][0]["user"]) else ""
    assert skipped["message"] == f"skipped: job paused: vendor outage{by}"

    job = server.get("/api/v1/jobs/beat")
    assert job["pause"]["reason"] == "vendor outage" and job["pause"]["mode"] == "skip"
    assert job["global_pause"] is None
    stats = server.get("/api/v1/stats")
    assert [p["job_id"] for p in stats["pauses"]] == ["beat"]
    listed = server.cli("jobs")
    assert "paused (skip): vendor outage" in listed.stdout
    shown = server.cli("job", "beat")
    assert "paused" in shown.stdout and "vendor outage" in shown.stdout
    page = server.request("GET", "/jobs")[1].decode()
    assert "vendor outage" in page

    again = server.cli("resume", "beat")
    assert (again.returncode, again.stdout) == (0, "job beat resumed\n")
    twice = server.cli("resume", "beat")
    assert (twice.returncode, twice.stderr) == (1, "Error: job 'beat' is not paused\n")
    unknown = server.cli("pause", "nope", "--reason", "x")
    assert (unknown.returncode, unknown.stderr) == (1, "Error: no job 'nope'\n")
    server.wait_for(lambda: server.runs("job:beat state:success"), timeout=15, what="a run after resuming")


def test_server_global_hold_api_and_banner(server, jobs_dir):
    write_job(jobs_dir, "beat", """\
        program: {type: no-op}
        schedule: {type: interval, interval: 1s}
        """)
    server.start()
    status, body, _ = server.request("POST", "/api/v1/pause", {"reason": "<b>upgrade</b>", "mode": "hold"})
    assert status == 200, body
    assert json.loads(body)["mode"] == "hold"
    status, body, _ = server.request("POST", "/api/v1/pause", {"reason": "", "mode": "hold"})
    assert (status, json.loads(body)) == (400, {"error": "reason: required, a non-empty text saying why"})
    status, body, _ = server.request("POST", "/api/v1/jobs/nope/pause", {"reason": "x"})
    assert (status, json.loads(body)) == (404, {"error": "no job 'nope'"})
    server.wait_for(lambda: server.runs("job:beat state:waiting"), timeout=15, what="a held run")
    held = server.runs("job:beat state:waiting")[0]
    user = server.get("/api/v1/pauses")["items"][0]["user"]
    by = f" (by {user})" if user else ""
    assert held["message"] == f"held: global pause: <b>upgrade</b>{by}; starts when the pause is lifted"
    explain = server.cli("explain", held["run_id"])
    assert explain.stdout.startswith(f"{held['run_id']} (waiting): held: global pause: <b>upgrade</b>")
    page = server.request("GET", "/")[1].decode()
    assert "&lt;b&gt;upgrade&lt;/b&gt;" in page and "<b>upgrade</b>" not in page

    status, body, _ = server.request("DELETE", "/api/v1/pause")
    assert status == 200, body
    assert server.wait_run(held["run_id"])["state"] == "success"
    status, body, _ = server.request("DELETE", "/api/v1/pause")
    assert (status, json.loads(body)) == (409, {"error": "there is no global pause"})
    assert server.get("/api/v1/stats")["pauses"] == []

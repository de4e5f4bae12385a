"""Named resources: runs wait for slots; exact engine steps, then the real server."""

import pytest
from conftest import _kill_agents, write_job
from test_conditions import T0, job, messages, settle, worlds

from apsis_lite.timeutil import parse_time


@pytest.fixture
def world(tmp_path):
    yield from worlds(tmp_path)


def real(job_id, **jso):
    # A real program: in these engine tests no completion notice arrives, so
    # the run stays 'starting' and holds its resources until the test ends it.
    return job(job_id, program={"type": "program", "argv": ["true"]}, **jso)


def test_a_run_waits_for_the_slot_another_job_holds(world):
    engine, store, clock = world([job("b1", resources=["db"]), job("b2", resources=[{"name": "db"}])])
    r1 = engine.submit("b1")
    r2 = engine.submit("b2")
    settle(engine, clock)
    # r1 held db while it ran; r2 waited, then ran once r1 had finished.
    assert store.get_run(r1.run_id).state == store.get_run(r2.run_id).state == "success"
    assert (f"waiting for resource db (needs 1; 1 of 1 held by r{r1.run_id})"
            in messages(store, r2.run_id))


def test_capacity_from_config_and_release_when_a_run_ends(world):
    jobs = [real("j", params=["n"], resources=[{"name": "db", "slots": 1}])]
    engine, store, clock = world(jobs, resources={"db": 2})
    runs = [engine.submit("j", {"n": str(i)}) for i in range(3)]
    settle(engine, clock)
    assert [store.get_run(r.run_id).state for r in runs] == ["starting", "starting", "waiting"]
    assert store.get_run(runs[2].run_id).message == (
        f"waiting for resource db (needs 1; 2 of 2 held by r{runs[0].run_id}, r{runs[1].run_id})")
    assert engine.explain(runs[0].run_id)["lines"] == ["holds 1 slot of db"]
    store.transition(runs[0].run_id, "starting", "error", T0 + 1, "ended by the test")
    settle(engine, clock, T0 + 1)
    assert store.get_run(runs[2].run_id).state == "starting"


def test_more_slots_than_capacity_is_an_error(world):
    engine, store, clock = world([job("big", resources=[{"name": "db", "slots": 3}])],
                                 resources={"db": 2})
    run = engine.submit("big")
    settle(engine, clock)
    assert store.get_run(run.run_id).state == "error"
    assert store.get_run(run.run_id).message == "needs 3 slots of resource db, which has 2"


def test_started_by_hand_it_holds_its_slot_over_capacity(world):
    engine, store, clock = world([real("j", params=["n"], resources=["db"])])
    first = engine.submit("j", {"n": "1"})
    second = engine.submit("j", {"n": "2"})
    settle(engine, clock)
    assert store.get_run(second.run_id).state == "waiting"
    engine.start(second.run_id)
    third = engine.submit("j", {"n": "3"})
    settle(engine, clock)
    assert store.get_run(third.run_id).message == (
        f"waiting for resource db (needs 1; 2 of 1 held by r{first.run_id}, r{second.run_id})")
    for r in (first, second):
        store.transition(r.run_id, "starting", "error", T0 + 1, "ended by the test")
    settle(engine, clock, T0 + 1)
    assert store.get_run(third.run_id).state == "starting"


def test_held_slots_survive_a_restart(world, tmp_path):
    jobs = [job("long", program="sleep 3", resources=["db"]), job("other", resources=["db"])]
    engine, store, clock = world(jobs)
    long = engine.submit("long")
    settle(engine, clock)
    assert store.get_run(long.run_id).state == "starting"
    store.close()
    engine, store, clock = world(jobs, clock_at=T0 + 1)  # re-attaches to the live run
    assert store.get_run(long.run_id).state in ("starting", "running")
    other = engine.submit("other")
    settle(engine, clock)
    assert store.get_run(other.run_id).message.startswith("waiting for resource db (needs 1; 1 of 1 held by")
    _kill_agents(tmp_path / "data")


# --- through the real server -------------------------------------------------------------


def _spans(server, q):
    spans = []
    for r in server.runs(q):
        t = r["times"]
        if r["state"] == "success":
            spans.append((parse_time(t["running"]).timestamp(), parse_time(t["success"]).timestamp()))
    return sorted(spans)


def _max_overlap(spans):
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def test_server_resources_limit_concurrency(server, jobs_dir, data_dir):
    for name in ("backup/a", "backup/b"):
        write_job(jobs_dir, name, "params: [n]\nresources: [{name: db, slots: 1}]\nprogram: \"sleep 0.5\"\n")
    config = data_dir / "config.yaml"
    config.write_text("resources: {db: 2}\n")
    server.start("--config", str(config))
    ids = [server.post("/api/v1/runs", {"job_id": f"backup/{x}", "args": {"n": str(i)}})["run_id"]
           for i in range(3) for x in "ab"]
    for rid in ids:
        assert server.wait_run(rid)["state"] == "success"
    assert _max_overlap(_spans(server, "backup/")) == 2
    logs = [e["message"] for rid in ids for e in server.get(f"/api/v1/runs/{rid}/log")["items"]]
    assert any(m.startswith("waiting for resource db (needs 1; 2 of 2 held by") for m in logs)

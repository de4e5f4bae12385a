"""Restarts and crashes: nothing lost, nothing run twice."""

import calendar
import signal
import time
from collections import Counter

import pytest

from conftest import Server, write_job


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_run_in_flight_survives_server_stop(server, how):
    server.start()
    rid = server.post("/api/v1/runs", {"program": "echo started; sleep 2; echo finished"})["run_id"]
    server.wait_run(rid, states=("running",))
    if how == "kill9":
        server.kill()
    else:
        server.stop(signal.SIGTERM)
    result = server.data_dir / "runs" / rid / "result.json"
    server.wait_for(result.exists, what="the program to finish while no server is up")
    server.start()
    run = server.wait_run(rid)
    assert run["state"] == "success"
    _, body, _ = server.request("GET", f"/api/v1/runs/{rid}/output")
    assert body == b"started\nfinished\n"
    states = [e["state"] for e in server.get(f"/api/v1/runs/{rid}/log")["items"] if e["state"]]
    assert states == ["scheduled", "waiting", "starting", "running", "success"]
    assert len(server.runs()) == 1


def test_reattach_to_run_still_going(server):
    server.start()
    # The program waits for a gate file, so it is still going after the restart however slow the machine.
    gate = server.data_dir / "gate"
    rid = server.post("/api/v1/runs", {"program": f"while [ ! -e {gate} ]; do sleep 0.05; done; echo late"}
                      )["run_id"]
    server.wait_run(rid, states=("running",))
    server.kill()
    server.start()
    assert server.get(f"/api/v1/runs/{rid}")["state"] == "running"
    gate.touch()
    run = server.wait_run(rid)
    assert run["state"] == "success"
    messages = [e["message"] for e in server.get(f"/api/v1/runs/{rid}/log")["items"]]
    assert "re-attached after restart" in messages


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_slots_due_during_downtime_run_once(jobs_dir, data_dir, how):
    write_job(jobs_dir, "every2", """
        params: [time]
        program: "echo {{ time }}"
        schedule: {type: interval, interval: 1s}
    """)
    cfg = data_dir / "config.yaml"
    # A short horizon so that most downtime slots are created only after the restart.
    cfg.write_text("horizon: 2s\n")
    srv = Server(jobs_dir, data_dir, extra_args=["--config", str(cfg)])
    srv.start()
    try:
        srv.wait_for(lambda: len([r for r in srv.runs() if r["state"] == "success"]) >= 2, what="two runs")
        if how == "kill9":
            srv.kill()
        else:
            srv.stop()
        down_at = time.time()
        time.sleep(4)
        srv.start()
        srv.wait_for(lambda: all(r["state"] in ("success", "scheduled") for r in srv.runs())
                     and max(r["args"]["time"] for r in srv.runs() if r["state"] == "success")
                     > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(down_at + 4)),
                     timeout=30, what="catch-up")
        runs = srv.runs()
        times = Counter(r["args"]["time"] for r in runs)
        assert max(times.values()) == 1, times
        done = sorted(r["args"]["time"] for r in runs if r["state"] == "success")
        # Every second from the first run to the last has exactly one run: none lost in the gap.
        secs = [calendar.timegm(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ")) for t in done]
        assert secs == [secs[0] + i for i in range(len(secs))], done
        assert len(done) >= 6
    finally:
        srv.stop()


def test_slots_older_than_max_age_are_skipped(jobs_dir, data_dir):
    write_job(jobs_dir, "every1", """
        params: [time]
        program: "echo {{ time }}"
        schedule: {type: interval, interval: 1s}
    """)
    cfg = data_dir / "config.yaml"
    cfg.write_text("horizon: 1s\nmax_age: 2s\n")
    srv = Server(jobs_dir, data_dir, extra_args=["--config", str(cfg)])
    srv.start()
    try:
        srv.wait_for(lambda: any(r["state"] == "success" for r in srv.runs()), what="a run")
        srv.stop()
        time.sleep(5)
        srv.start()
        skipped = srv.wait_for(lambda: [r for r in srv.runs() if r["state"] == "skipped"], what="skipped slots")
        full = srv.get(f"/api/v1/runs/{skipped[0]['run_id']}")
        assert "older than max_age" in full["message"]
        times = Counter(r["args"]["time"] for r in srv.runs())
        assert max(times.values()) == 1
    finally:
        srv.stop()


def test_since_now_starts_fresh(jobs_dir, data_dir):
    write_job(jobs_dir, "every1", """
        params: [time]
        program: "echo {{ time }}"
        schedule: {type: interval, interval: 1s}
    """)
    cfg = data_dir / "config.yaml"
    cfg.write_text("horizon: 1s\n")
    srv = Server(jobs_dir, data_dir, extra_args=["--config", str(cfg)])
    srv.start()
    try:
        srv.wait_for(lambda: any(r["state"] == "success" for r in srv.runs()), what="a run")
        srv.stop()
        stopped = time.time()
        time.sleep(4)
        restarted = time.time()
        srv.start("--since", "now")
        # Once a slot after the restart has run, any catch-up would have been planned too.
        srv.wait_for(lambda: [r for r in srv.runs() if r["state"] == "success" and slot(r) >= restarted],
                     what="a run after the restart")
        gap = [r for r in srv.runs() if stopped + 1.5 < slot(r) < stopped + 3]
        assert gap == []
    finally:
        srv.stop()


def slot(run):
    """A run's ``time`` arg as epoch seconds."""
    return calendar.timegm(time.strptime(run["args"]["time"], "%Y-%m-%dT%H:%M:%SZ"))


def test_second_server_on_same_data_refuses(server, jobs_dir, data_dir):
    server.start()
    other = Server(jobs_dir, data_dir)
    with pytest.raises(RuntimeError) as exc:
        other.start(timeout=30)
    assert "already using" in str(exc.value)
    assert "Traceback" not in str(exc.value)

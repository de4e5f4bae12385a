"""A run stopped as asked (by hand, by its stop schedule) that ends by its stop signal succeeds.

apsis's rule: a program that terminates in response to the stop request is a
success, one that ends any other way a failure. Through the real server,
agent and signals; each job's `command` action records the state it ended in,
so a failure action that fired would show.
"""

import time

from conftest import write_job


def _recording(tmp_path, name):
    out = tmp_path / f"{name}.states"
    return out, (f"action: [{{type: command, command: 'echo \"$APSIS_STATE\" >> {out}',"
                 " if: {states: [success, failure]}}]\n")


def _wait_running(server, rid):
    server.wait_for(lambda: server.get(f"/api/v1/runs/{rid}")["state"] == "running", what="running")


def test_stopped_runs_succeed_only_when_the_stop_signal_ends_them(server, jobs_dir, tmp_path):
    calm_out, calm_action = _recording(tmp_path, "calm")
    stubborn_out, stubborn_action = _recording(tmp_path, "stubborn")
    limit_out, limit_action = _recording(tmp_path, "limit")
    write_job(jobs_dir, "calm", "program: {command: 'sleep 30', stop: {grace_period: 10s}}\n" + calm_action)
    # Ignores SIGTERM (so does its sleep), so only the SIGKILL after the grace period ends it.
    write_job(jobs_dir, "stubborn", "program: {command: 'trap \"\" TERM; sleep 30', "
              "stop: {grace_period: 0.3s}}\n" + stubborn_action)
    write_job(jobs_dir, "limit", "program: {command: 'sleep 30'}\n"
              "max_duration: {duration: 1s, stop: true}\n" + limit_action)
    write_job(jobs_dir, "window", """\
        schedule:
          start: {type: interval, interval: 3s}
          stop: {type: duration, duration: 1s}
        program: 'sleep 30'
        """)
    server.start()
    calm = server.post("/api/v1/runs", {"job_id": "calm"})["run_id"]
    stubborn = server.post("/api/v1/runs", {"job_id": "stubborn"})["run_id"]
    limit = server.post("/api/v1/runs", {"job_id": "limit"})["run_id"]
    for rid in (calm, stubborn):
        _wait_running(server, rid)
        server.post(f"/api/v1/runs/{rid}/stop")

    ended = server.wait_run(calm)
    assert (ended["state"], ended["message"]) == (
        "success", "killed by SIGTERM (stopped): it was asked to stop with that signal")
    ended = server.wait_run(stubborn)
    assert ended["state"] == "failure" and ended["message"].startswith("killed by SIGKILL"), ended
    # A stop because the run broke its max_duration is an alarm, not the end the job asked for.
    ended = server.wait_run(limit)
    assert (ended["state"], ended["message"]) == ("failure", "killed by SIGTERM (stopped)")

    # The stop schedule's stop counts as asked for, as a stop by hand does.
    def stopped_window_run():
        runs = [r for r in server.runs("job:window") if r["state"] in ("success", "failure")]
        return runs[0] if runs else None
    run = server.wait_for(stopped_window_run, timeout=20, what="a window run stopped by its schedule")
    assert run["state"] == "success", run
    log = [e["message"] for e in server.get(f"/api/v1/runs/{run['run_id']}/log")["items"]]
    assert any(m.startswith("stop schedule: due to stop at") for m in log), log

    # max_duration's alarm fires the failure actions while it runs, then its end does.
    expected = {calm_out: "success\n", stubborn_out: "failure\n", limit_out: "running\nfailure\n"}
    for out, text in expected.items():
        server.wait_for(lambda: out.exists() and out.read_text() == text, what=f"{out.name}: {text!r}")
    time.sleep(0.3)  # an action for another transition would have been done with these
    assert {out: out.read_text() for out in expected} == expected

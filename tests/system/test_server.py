"""The core, end to end: a real server process, real programs, real restarts."""

import json
import os
import time

from conftest import write_job


def test_interval_job_runs_repeatedly_with_output(running, jobs_dir):
    write_job(jobs_dir, "tick", """
        params: [time]
        program: "echo tick at {{ time }}"
        schedule:
          type: interval
          interval: 0.5s
    """)
    server = running(min_interval="0.5s")  # shorter than the default minimum, 1 s
    def three_done():
        done = [r for r in server.runs("tick") if r["state"] == "success"]
        return done if len(done) >= 3 else None

    done = server.wait_for(three_done, what="three successful runs")
    for run in done:
        status, body, _ = server.request("GET", f"/api/v1/runs/{run['run_id']}/output")
        assert status == 200
        assert body.decode() == f"tick at {run['args']['time']}\n"
        full = server.get(f"/api/v1/runs/{run['run_id']}")
        assert full["exit_code"] == 0
        assert full["elapsed"] is not None and full["rusage"]["maxrss_kb"] > 0
        log = server.get(f"/api/v1/runs/{run['run_id']}/log")["items"]
        assert [e["state"] for e in log if e["state"]] == ["scheduled", "waiting", "starting", "running", "success"]
    # Distinct slots, one run each.
    times = [r["args"]["time"] for r in server.runs("tick")]
    assert len(times) == len(set(times))


def test_program_environment_and_args(server, jobs_dir, data_dir):
    write_job(jobs_dir, "env/show", """
        params: [color]
        program:
          type: shell
          command: 'echo "$APSIS_RUN_ID $APSIS_JOB_ID $APSIS_ARG_color $GREETING {{ color }}"; pwd'
          env: {GREETING: hi}
          cwd: /tmp
    """)
    server.start()
    run = server.post("/api/v1/runs", {"job_id": "env/show", "args": {"color": "red"}})
    run = server.wait_run(run["run_id"])
    assert run["state"] == "success"
    _, body, _ = server.request("GET", f"/api/v1/runs/{run['run_id']}/output")
    assert body.decode() == f"{run['run_id']} env/show red hi red\n/tmp\n"


def test_failure_exit_code_and_exec_error(server):
    server.start()
    fail = server.wait_run(server.post("/api/v1/runs", {"program": "echo oops >&2; exit 3"})["run_id"])
    assert fail["state"] == "failure" and fail["exit_code"] == 3
    assert server.request("GET", f"/api/v1/runs/{fail['run_id']}/output")[1] == b"oops\n"
    err = server.wait_run(server.post("/api/v1/runs", {"program": ["/no/such/program", "x"]})["run_id"])
    assert err["state"] == "error"
    assert "/no/such/program" in err["message"]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_stop_kills_shell_and_grandchild(server, tmp_path):
    server.start()
    pidfile = tmp_path / "grandchild.pid"
    run = server.post("/api/v1/runs", {"program": f"sleep 300 & echo $! > {pidfile}; wait"})
    rid = run["run_id"]
    server.wait_run(rid, states=("running",))
    server.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="grandchild pid")
    grandchild = int(pidfile.read_text())
    assert _alive(grandchild)
    stopped = server.post(f"/api/v1/runs/{rid}/stop")
    assert stopped["state"] in ("stopping", "failure")
    run = server.wait_run(rid)
    assert run["state"] == "success"  # ended by the stop's own signal, as in apsis
    assert run["signal"] == "SIGTERM"
    server.wait_for(lambda: not _alive(grandchild), what="grandchild to die")
    log = [e["message"] for e in server.get(f"/api/v1/runs/{rid}/log")["items"]]
    assert any("stop requested" in m for m in log)


def test_stop_escalates_to_sigkill_after_grace(server, jobs_dir):
    write_job(jobs_dir, "stubborn", """
        program:
          type: shell
          command: "trap '' TERM; echo ready; while true; do sleep 0.1; done"
          stop: {signal: SIGTERM, grace_period: 0.5s}
    """)
    server.start()
    rid = server.post("/api/v1/runs", {"job_id": "stubborn"})["run_id"]
    server.wait_run(rid, states=("running",))
    t0 = time.monotonic()
    server.post(f"/api/v1/runs/{rid}/stop")
    run = server.wait_run(rid)
    assert run["signal"] == "SIGKILL"
    assert time.monotonic() - t0 < 5


def test_timeout(server, jobs_dir):
    write_job(jobs_dir, "slow", """
        program:
          type: program
          argv: [sleep, "30"]
          timeout: {duration: 0.5s, signal: SIGTERM}
    """)
    server.start()
    run = server.wait_run(server.post("/api/v1/runs", {"job_id": "slow"})["run_id"])
    assert run["state"] == "failure"
    assert run["signal"] == "SIGTERM"
    assert "timed out" in run["message"]


def test_signal_operation(server):
    server.start()
    rid = server.post("/api/v1/runs", {"program": "trap 'echo got usr1; exit 7' USR1; echo ready; while true; do sleep 0.05; done"})["run_id"]
    server.wait_run(rid, states=("running",))
    server.wait_for(lambda: b"ready" in server.request("GET", f"/api/v1/runs/{rid}/output?offset=0")[1], what="ready")
    server.post(f"/api/v1/runs/{rid}/signal/USR1")
    run = server.wait_run(rid)
    assert run["exit_code"] == 7
    status, body, _ = server.request("POST", f"/api/v1/runs/{rid}/signal/NOSUCH")
    assert status in (400, 409)


def test_operations_rerun_mark_skip_start(server, jobs_dir):
    write_job(jobs_dir, "greet", """
        params: [name]
        program: "echo hello {{ name }}"
    """)
    server.start()
    first = server.wait_run(server.post("/api/v1/runs", {"job_id": "greet", "args": {"name": "ann"}})["run_id"])
    assert first["state"] == "success"
    again = server.post(f"/api/v1/runs/{first['run_id']}/rerun")
    assert again["rerun_of"] == first["run_id"]
    assert again["rerun_group"] == first["run_id"]
    again = server.wait_run(again["run_id"])
    assert again["args"] == {"name": "ann"} and again["state"] == "success"
    marked = server.post(f"/api/v1/runs/{first['run_id']}/mark/failure")
    assert marked["state"] == "failure"
    status, body, _ = server.request("POST", f"/api/v1/runs/{first['run_id']}/mark/running")
    assert status == 409 and "only as success, failure, error or skipped" in json.loads(body)["error"]

    later = time.time() + 3600
    future = server.post("/api/v1/runs", {"job_id": "greet", "args": {"name": "bob"},
                                          "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(later))})
    assert future["state"] == "scheduled"
    started = server.post(f"/api/v1/runs/{future['run_id']}/start")
    assert started["state"] in ("starting", "running", "success")
    assert server.wait_run(future["run_id"])["state"] == "success"

    skipped = server.post("/api/v1/runs", {"job_id": "greet", "args": {"name": "cy"}, "time": "2099-01-01T00:00:00Z"})
    assert server.post(f"/api/v1/runs/{skipped['run_id']}/skip")["state"] == "skipped"
    status, body, _ = server.request("POST", f"/api/v1/runs/{skipped['run_id']}/skip")
    assert status == 409 and "skipped" in json.loads(body)["error"]
    status, body, _ = server.request("POST", f"/api/v1/runs/{skipped['run_id']}/stop")
    assert status == 409


def test_bad_api_input(server, jobs_dir):
    write_job(jobs_dir, "greet", """
        params: [name]
        program: "echo hello {{ name }}"
    """)
    server.start()
    cases = [
        ("GET", "/api/v1/runs/r999999", None, 404, "no run r999999"),
        ("GET", "/api/v1/runs/..%2F..%2Fetc", None, 404, "not found"),
        ("GET", "/api/v1/runs/r12x", None, 400, "not a run id"),
        ("GET", "/api/v1/runs/abc/log", None, 400, "not a run id"),
        ("GET", "/api/v1/runs?q=state:s", None, 400, "ambiguous"),
        ("GET", "/api/v1/runs?q=%22unterminated", None, 400, "quote"),
        ("GET", "/api/v1/runs?limit=-1", None, 400, "limit"),
        ("GET", "/api/v1/runs?since=yesterdayish", None, 400, "since"),
        ("GET", "/api/v1/jobs/no/such/job", None, 404, "no job"),
        ("POST", "/api/v1/runs", {"job_id": "nope"}, 404, "no job"),
        ("POST", "/api/v1/runs", {"job_id": "greet"}, 400, "name"),
        ("POST", "/api/v1/runs", {"job_id": "greet", "args": {"name": "x", "extra": "y"}}, 400, "extra"),
        ("POST", "/api/v1/runs", {"job_id": "greet", "args": {"name": "x"}, "time": "not a time"}, 400, "time"),
        ("POST", "/api/v1/runs", {"bogus": 1}, 400, "bogus"),
        ("POST", "/api/v1/runs", {"job": {"program": {"type": "nope"}}}, 400, "unknown program type"),
        ("POST", "/api/v1/runs", {"job_id": "greet", "program": "x"}, 400, "exactly one"),
        ("POST", "/api/v1/runs/r1/mark/nosuchstate", None, 400, "unknown state"),
        ("GET", "/api/v1/nothing-here", None, 404, "Not Found"),
    ]
    for method, path, jso, status, text in cases:
        got, body, headers = server.request(method, path, jso)
        assert got == status, (path, got, body)
        assert "application/json" in headers["Content-Type"], path
        assert text.lower() in json.loads(body)["error"].lower(), (path, body)
    # Not JSON at all.
    import urllib.request
    req = urllib.request.Request(server.url + "/api/v1/runs", data=b"{nope", method="POST",
                                 headers={"Authorization": f"Bearer {server.token()}"})
    try:
        urllib.request.urlopen(req)
        raise AssertionError("accepted bad JSON")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and "JSON" in json.loads(exc.read())["error"]


def test_broken_job_file_reported_while_others_run(server, jobs_dir):
    write_job(jobs_dir, "good", """
        program: "echo fine"
        schedule: {type: interval, interval: 1s}
    """)
    write_job(jobs_dir, "bad/broken", """
        program:
          type: shell
          comand: "typo"
    """)
    write_job(jobs_dir, "bad/yaml", "program: [unclosed\n")
    server.start()
    errors = server.get("/api/v1/jobs")["errors"]
    paths = {os.path.basename(os.path.dirname(e["path"])) + "/" + os.path.basename(e["path"]) for e in errors}
    assert {"bad/broken.yaml", "bad/yaml.yaml"} <= paths
    broken = [e for e in errors if e["path"].endswith("broken.yaml")]
    assert any(e["key"] == "program.comand" and "unknown key" in e["message"] for e in broken), broken
    server.wait_for(lambda: any(r["state"] == "success" for r in server.runs("good")), what="good job to run")
    status, body, _ = server.request("GET", "/api/v1/jobs/bad/broken")
    assert status == 404
    assert "failed to load" in json.loads(body)["error"] and "comand" in json.loads(body)["error"]
    check = server.cli("check-jobs", str(jobs_dir))
    assert check.returncode == 1
    assert "broken.yaml" in check.stderr and "yaml.yaml" in check.stderr
    assert "Traceback" not in check.stderr


def test_huge_output_is_capped(running):
    srv = running(output_head=100000, output_tail=100000)
    rid = srv.post("/api/v1/runs", {"program": "head -c 300000000 /dev/zero | tr '\\0' x; echo; echo THE END"})["run_id"]
    run = srv.wait_run(rid, timeout=60)
    assert run["state"] == "success"
    out = run["output"]
    assert out["bytes_total"] == 300000000 + 1 + 8
    assert out["bytes_dropped"] == out["bytes_total"] - 200000
    _, body, _ = srv.request("GET", f"/api/v1/runs/{rid}/output")
    assert body.startswith(b"x" * 100000)
    assert b"bytes of output dropped" in body
    assert body.endswith(b"x\nTHE END\n")
    assert len(body) < 210000


def test_runs_are_recorded_through_the_shepherds_notices(running):
    """With the periodic sweep an hour away, only a shepherd's notices can tell
    the server that a run is running and then done."""
    srv = running(sweep_interval="1h")
    rid = srv.post("/api/v1/runs", {"program": "sleep 1; echo slept"})["run_id"]
    srv.wait_for(lambda: srv.get(f"/api/v1/runs/{rid}")["state"] == "running", timeout=5,
                 what="the run to be running")
    run = srv.wait_run(rid, timeout=10)
    assert run["state"] == "success"
    assert srv.request("GET", f"/api/v1/runs/{rid}/output")[1] == b"slept\n"


def test_run_folders_are_recycled_without_carrying_anything_over(server, data_dir):
    """A finished run's folder is emptied and reused by a later run; nothing of the
    earlier run (result, output, a stop request) reaches the later one, and a spare
    folder that is not clean (left by a crash, or tampered with) is never used."""
    spares = data_dir / "runs" / ".spare"
    stale = spares / "zzzz"  # taken first: spares are used from the end of the sorted list
    stale.mkdir(parents=True)
    (stale / "result.json").write_text(json.dumps({"exit_code": 0, "error": None}))
    (stale / "output").write_text("stale output\n")
    server.start()

    def run(program):
        rid = server.post("/api/v1/runs", {"program": program})["run_id"]
        return server.wait_run(rid), server.request("GET", f"/api/v1/runs/{rid}/output")[1]

    first, out = run("echo first; exit 3")
    assert (first["state"], first["exit_code"], out) == ("failure", 3, b"first\n")
    assert not stale.exists()  # discarded, not reused
    server.wait_for(lambda: (spares / first["run_id"]).is_dir(), what="the folder to become a spare")
    assert not (data_dir / "runs" / first["run_id"]).exists()
    assert sorted(p.name for p in (spares / first["run_id"]).iterdir()) == [
        "output", "pid.json.tmp", "result.json.tmp", "shepherd.json.tmp", "spec.json.tmp"]

    second, out = run("echo second")
    assert (second["state"], second["exit_code"], out) == ("success", 0, b"second\n")
    assert not (spares / first["run_id"]).exists()  # its folder served the second run

    rid = server.post("/api/v1/runs", {"program": "sleep 30"})["run_id"]
    server.wait_run(rid, states=("running",))
    server.post(f"/api/v1/runs/{rid}/stop")
    assert server.wait_run(rid)["signal"] == "SIGTERM"
    server.wait_for(lambda: (spares / rid).is_dir(), what="the stopped run's folder to become a spare")
    later, out = run("sleep 0.5; echo not stopped")  # the folder that held a stop request
    assert (later["state"], out) == ("success", b"not stopped\n")
    assert not (spares / rid).exists()  # it was that folder

"""The sanity checker through the real server: late runs, unplanned jobs, lost runs and
orphan processes, failing jobs; the API, the CLI's exit status, the actions done once."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import write_job


def findings(server, kind=None):
    items = server.get("/api/v1/sanity")["findings"]
    return [f for f in items if kind is None or f["kind"] == kind]


def wait_finding(server, kind, match=lambda f: True, timeout=20):
    return server.wait_for(lambda: next((f for f in findings(server, kind) if match(f)), None),
                           timeout=timeout, what=f"a {kind} finding")


def run_files(data_dir, run_id):
    """(program pid, shepherd pid) of a run in flight, from its run folder."""
    folder = Path(data_dir) / "runs" / run_id
    pid = json.loads((folder / "pid.json").read_text())["pid"]
    shepherd = json.loads((folder / "shepherd.json").read_text())["pid"]
    return pid, shepherd


def wait_running(server, run_id, data_dir):
    server.wait_run(run_id, states=("running",))
    return server.wait_for(lambda: (Path(data_dir) / "runs" / run_id / "pid.json").exists()
                           and run_files(data_dir, run_id), what=f"{run_id}'s pid files")


def kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def test_a_late_run_is_found_and_its_command_action_is_done_once(jobs_dir, data_dir, running):
    """The server is held (SIGSTOP) past a due time: the run starts late, and is reported so."""
    out = data_dir / "fired.txt"
    write_job(jobs_dir, "tick", """
        program: {type: no-op}
        schedule: {type: interval, interval: 2s}
    """)
    action = {"type": "command", "kinds": ["late"],
              "command": f'echo "$APSIS_SANITY_KIND $APSIS_RUN_ID $APSIS_JOB_ID" >> {out}'}
    server = running(sanity_interval=0.5, sanity_late=1, sanity_actions=[action])
    server.wait_for(lambda: server.runs("tick state:success"), what="a first run")
    server.proc.send_signal(signal.SIGSTOP)
    time.sleep(3.5)
    server.proc.send_signal(signal.SIGCONT)
    late = wait_finding(server, "late")
    assert late["job_id"] == "tick" and late["run_id"].startswith("r")
    assert "after its due time" in late["reason"] and "more than sanity_late (1.0 s)" in late["reason"]
    assert late["details"]["lateness"] > 1
    run = server.get(f"/api/v1/runs/{late['run_id']}")
    assert run["state"] == "success"
    time.sleep(2.5)  # several more checks: each finding is acted on once only
    keys = {f["run_id"] for f in findings(server, "late")}
    lines = server.wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= len(keys) and
                            out.read_text().splitlines(), what="the actions' lines")
    # A loaded machine may make a later run late too while we look: read the findings again after.
    keys |= {f["run_id"] for f in findings(server, "late")}
    assert len(lines) == len(set(lines)), f"a finding acted on twice: {lines}"
    assert set(lines) <= {f"late {rid} tick" for rid in keys}
    assert late["run_id"] in {line.split()[1] for line in lines}
    # A restart remembers what was reported: nothing is done again.
    server.stop()
    server = running(sanity_interval=0.5, sanity_late=1, sanity_actions=[action])
    time.sleep(2)
    assert {f["run_id"] for f in findings(server, "late")} >= keys
    after = out.read_text().splitlines()
    assert after[:len(lines)] == lines and len(after) == len(set(after)), after


def test_a_job_whose_calendar_ran_out_is_unplanned(jobs_dir, data_dir, running, tmp_path):
    cals = tmp_path / "cals"
    cals.mkdir()
    (cals / "closing.cal").write_text("2020-01-02\n2020-01-03\n")
    write_job(jobs_dir, "quarterly", """
        program: "true"
        schedule: {type: daily, daytime: "09:00", calendar: closing}
    """)
    write_job(jobs_dir, "once", """
        program: "true"
        schedule: {type: explicit, times: ["2021-05-01T10:00:00Z"]}
    """)
    write_job(jobs_dir, "fine", """
        program: "true"
        schedule: {type: interval, interval: 1h}
    """)
    server = running(calendars_dir=str(cals))
    found = {f["job_id"]: f for f in findings(server, "unplanned")}
    assert set(found) == {"quarterly", "once"}
    for f in found.values():
        assert f["run_id"] is None
        assert "no due time after now" in f["reason"] and "ran out" in f["reason"]


def test_a_program_left_by_its_killed_shepherd_is_an_orphan(jobs_dir, data_dir, running):
    """Kill the shepherd, leave the program: the run ends in error, and its program is found."""
    write_job(jobs_dir, "long", 'program: "sleep 300"\n')
    server = running(sweep_interval=1)
    rid = server.post("/api/v1/runs", {"job_id": "long"})["run_id"]
    pid, shepherd = wait_running(server, rid, data_dir)
    try:
        os.kill(shepherd, signal.SIGKILL)
        run = server.wait_run(rid)
        assert run["state"] == "error" and "supervisor vanished" in run["message"]
        orphan = wait_finding(server, "orphan", lambda f: f["run_id"] == rid)
        assert orphan["job_id"] == "long"
        assert f"pid {pid}: sleep 300" in orphan["reason"]
        assert "though it ended error at" in orphan["reason"] and f"kill -- -{pid}" in orphan["reason"]
        assert orphan["details"]["pids"] == [pid]
    finally:
        kill_group(pid)
    server.wait_for(lambda: not findings(server, "orphan"), what="the orphan gone once killed")


def test_a_running_run_whose_program_is_gone_is_lost(jobs_dir, data_dir, running):
    """Kill the program, and hold its shepherd (SIGSTOP) so that it cannot record it: lost."""
    write_job(jobs_dir, "long", 'program: "sleep 300"\n')
    server = running(sweep_interval=1, sanity_interval=0.5)
    rid = server.post("/api/v1/runs", {"job_id": "long"})["run_id"]
    pid, shepherd = wait_running(server, rid, data_dir)
    os.kill(shepherd, signal.SIGSTOP)
    try:
        os.kill(pid, signal.SIGKILL)
        lost = wait_finding(server, "lost", lambda f: f["run_id"] == rid)
        assert lost["reason"] == (f"recorded as running, but its program (pid {pid}) is gone and its shepherd "
                                  f"(pid {shepherd}) is stopped (SIGSTOP) and has not recorded a result")
    finally:
        os.kill(shepherd, signal.SIGCONT)
    run = server.wait_run(rid)
    assert run["state"] == "failure" and "SIGKILL" in run["message"]
    assert not findings(server, "lost")


def test_failing_jobs_and_the_cli_exit_status(jobs_dir, data_dir, running):
    write_job(jobs_dir, "flaky", """
        program: "exit 3"
        schedule: {type: interval, interval: 1s}
    """)
    server = running(sanity_failures=2)
    failing = wait_finding(server, "failing")
    assert failing["job_id"] == "flaky" and failing["run_id"] is None
    assert failing["reason"].startswith("its last 2 runs failed; the latest, r")
    assert "ended failure at" in failing["reason"] and failing["reason"].endswith(": exit code 3")
    cli = server.cli("sanity")
    assert cli.returncode == 1, cli.stderr
    assert cli.stdout.splitlines()[0].split() == ["KIND", "RUN", "JOB", "REASON"]
    assert any(line.startswith("failing") and "flaky" in line for line in cli.stdout.splitlines())
    as_json = server.cli("sanity", "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["counts"]["failing"] == 1
    (jobs_dir / "flaky.yaml").unlink()
    server.post("/api/v1/jobs/reload")
    ok = server.cli("sanity")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == "nothing found"


def test_the_cli_exits_2_when_it_cannot_check(jobs_dir, data_dir, running):
    server = running()
    server.url = "http://127.0.0.1:1"
    cli = server.cli("sanity")
    assert cli.returncode == 2
    assert "cannot reach apsis-lite at http://127.0.0.1:1" in cli.stderr and "Traceback" not in cli.stderr


@pytest.mark.parametrize("actions, message", [
    ([{"type": "schedule", "job": "x"}], "sanity_actions[0]: type: must be command, webhook or email"),
    ([{"type": "command"}], "sanity_actions[0]: command:"),
    ([{"type": "webhook", "url": "ftp://x"}], "sanity_actions[0]: url: expected an http or https URL"),
    ([{"type": "command", "command": "x", "kinds": ["slow"]}], "sanity_actions[0]: kinds: expected a list of"),
    ([{"type": "command", "command": "x", "if": {"states": ["failure"]}}], "if: does not apply"),
    ("echo", "sanity_actions: expected a list of action mappings"),
])
def test_bad_sanity_actions_stop_the_start_with_a_clear_message(server, data_dir, actions, message):
    import yaml
    config = data_dir / "bad.yaml"
    config.write_text(yaml.safe_dump({"sanity_actions": actions}))
    with pytest.raises(RuntimeError) as exc:
        server.start("--config", str(config), timeout=15)
    assert message in str(exc.value) and "Traceback" not in str(exc.value)


def test_a_webhook_hears_of_each_new_finding_once(jobs_dir, data_dir, running):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    bodies = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        write_job(jobs_dir, "once", """
            program: "true"
            schedule: {type: explicit, times: ["2021-05-01T10:00:00Z"]}
        """)
        hook = {"type": "webhook", "url": f"http://127.0.0.1:{httpd.server_port}/sanity", "kinds": "unplanned"}
        server = running(sanity_interval=0.3, sanity_actions=[hook])
        server.wait_for(lambda: bodies, what="the webhook")
        time.sleep(1.5)  # several checks later: still one
        (body,) = bodies
        assert body["transition"] is None and body["run"] is None
        finding = body["finding"]
        assert finding["kind"] == "unplanned" and finding["job_id"] == "once" and finding["subject"] == "job once"
        assert "ran out" in finding["reason"] and finding["since"].endswith("Z")
        assert [f["job_id"] for f in findings(server, "unplanned")] == ["once"]
    finally:
        httpd.shutdown()
        httpd.server_close()

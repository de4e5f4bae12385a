"""Actions through the real server: webhooks, commands, schedule actions and e-mail."""

import json
import threading
import time
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from apsis_lite.model.actions import parse_action
from apsis_lite.model.schedules import SpecError

from conftest import write_job


class HookServer:
    """An HTTP server on 127.0.0.1 that records POSTs; answers from ``statuses``, then 200."""

    def __init__(self, statuses=(), hold=None):
        self.requests = []
        self.statuses = list(statuses)
        self.hold = hold  # an Event: requests wait for it before answering
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests.append({"path": self.path, "headers": dict(self.headers),
                                      "body": json.loads(body), "time": time.time()})
                if hook.hold is not None:
                    hook.hold.wait(30)
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        if self.hold is not None:
            self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a client that gave up (timed out) before the answer: expected here


@pytest.fixture
def hooks():
    made = []

    def make(**kw):
        made.append(HookServer(**kw))
        return made[-1]
    yield make
    for h in made:
        h.close()


def log_lines(server, run_id):
    return [e["message"] for e in server.get(f"/api/v1/runs/{run_id}/log")["items"]]


def wait_log(server, run_id, text, timeout=20):
    return server.wait_for(
        lambda: next((m for m in log_lines(server, run_id) if text in m), None),
        timeout=timeout, what=f"{text!r} in the log of {run_id}")


def test_if_accepts_states_and_labels_and_rejects_unknown_keys():
    action = parse_action({"type": "webhook", "url": "http://x/h",
                           "if": {"states": ["failure"], "labels": "critical"}})
    assert action.to_jso()["if"] == {"states": ["failure"], "labels": ["critical"]}
    assert action.applies("failure", ("critical", "x")) and not action.applies("failure", ("x",))
    assert not action.applies("success", ("critical",))
    with pytest.raises(SpecError) as exc:
        parse_action({"type": "command", "command": "x", "if": {"state": "failure"}, "retries": -1})
    problems = dict(exc.value.problems)
    assert "if.state" in problems and "retries" in problems


def test_webhook_posts_the_run_and_the_transition(jobs_dir, running, hooks):
    hook = hooks()
    write_job(jobs_dir, "fails", f"""
        params: [date]
        program: "echo boom; exit 3"
        action:
          type: webhook
          url: "{hook.url}/hook/{{{{ date }}}}"
          headers: {{X-Token: secret}}
          if: {{states: [failure, error]}}
    """)
    server = running()
    run = server.post("/api/v1/runs", {"job_id": "fails", "args": {"date": "2026-11-25"}})
    server.wait_run(run["run_id"])
    line = wait_log(server, run["run_id"], "webhook")
    assert line == f"action webhook to {hook.url}/hook/2026-11-25 on failure: delivered: HTTP 200"
    assert len(hook.requests) == 1  # not on scheduled, waiting, starting, running
    req = hook.requests[0]
    assert req["path"] == "/hook/2026-11-25"
    assert req["headers"]["X-Token"] == "secret"
    assert req["headers"]["Content-Type"] == "application/json"
    body = req["body"]
    assert body["transition"]["from"] == "running" and body["transition"]["to"] == "failure"
    assert body["run"]["run_id"] == run["run_id"]
    assert body["run"]["job_id"] == "fails"
    assert body["run"]["args"] == {"date": "2026-11-25"}
    assert body["run"]["state"] == "failure" and body["run"]["exit_code"] == 3


def test_webhook_retries_on_500_with_backoff_then_gives_up(jobs_dir, running, hooks):
    flaky = hooks(statuses=[500, 503])
    broken = hooks(statuses=[500] * 10)
    gone = hooks(statuses=[404])
    write_job(jobs_dir, "ok", f"""
        program: {{type: no-op}}
        action:
          - {{type: webhook, url: "{flaky.url}/a", if: {{states: success}}}}
          - {{type: webhook, url: "{broken.url}/b", retries: 1, if: {{states: success}}}}
          - {{type: webhook, url: "{gone.url}/c", if: {{states: success}}}}
    """)
    server = running(webhook_retry_delay=0.2)
    rid = server.post("/api/v1/runs", {"job_id": "ok"})["run_id"]
    assert wait_log(server, rid, f"{flaky.url}/a").endswith(
        "delivered: HTTP 200 (attempt 3; before: HTTP 500, HTTP 503)")
    times = [r["time"] for r in flaky.requests]
    assert len(times) == 3
    # 0.2 s, then twice that.
    assert times[1] - times[0] >= 0.18 and times[2] - times[1] >= 0.38
    assert wait_log(server, rid, f"{broken.url}/b").endswith(
        "failed: gave up after 2 attempt(s): HTTP 500, HTTP 500")
    assert wait_log(server, rid, f"{gone.url}/c").endswith("failed: HTTP 404 Not Found (not retried)")
    assert len(gone.requests) == 1


def test_a_hanging_webhook_delays_no_other_run(jobs_dir, running, hooks):
    release = threading.Event()
    hang = hooks(hold=release)
    write_job(jobs_dir, "notify", f"""
        program: {{type: no-op}}
        action: {{type: webhook, url: "{hang.url}/slow", timeout: 1, retries: 0}}
    """)
    write_job(jobs_dir, "tick", """
        program: "true"
        schedule: {type: interval, interval: 0.5s}
    """)
    server = running(action_workers=2, min_interval="0.5s")
    # Four transitions each (scheduled, waiting, starting, success): far more
    # hanging webhooks than workers.
    rids = [server.post("/api/v1/runs", {"job_id": "notify"})["run_id"] for _ in range(3)]
    server.wait_for(lambda: len(hang.requests) >= 2, what="hanging webhooks")
    t0 = time.time()
    time.sleep(3)
    ticks = [r for r in server.runs("job:tick")
             if r["state"] == "success" and t0 <= _epoch(r["times"]["schedule"]) < time.time() - 0.5]
    assert len(ticks) >= 4
    for r in ticks:
        late = _epoch(r["times"]["starting"]) - _epoch(r["times"]["schedule"])
        # Waiting behind a hanging webhook would make it 1 s late (its timeout);
        # the margin below that is for a busy machine.
        assert late < 0.5, (r, late)
    # Each hanging attempt gives up after its timeout and says so.
    assert wait_log(server, rids[0], "timed out").endswith("failed: gave up after 1 attempt(s): timed out")
    release.set()


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _epoch(iso):
    from apsis_lite.timeutil import parse_time
    return parse_time(iso).timestamp()


def test_command_action_sees_the_run_in_its_environment_and_stdin(jobs_dir, data_dir, running):
    out = data_dir / "action-out"
    write_job(jobs_dir, "report", f"""
        params: [date]
        program: "echo hello; exit 2"
        metadata: {{labels: [critical]}}
        action:
          - type: command
            command: |
              env | grep ^APSIS_ | sort > '{out}.env'
              cat > '{out}.json'
              echo "done {{{{ date }}}}"
            if: {{states: [failure], labels: [critical]}}
          - type: command
            command: "touch '{out}.other-label'"
            if: {{labels: [unrelated]}}
          - type: command
            command: "echo oops >&2; exit 7"
            if: {{states: failure}}
          - type: email
            to: ops@example.com
            if: {{states: failure}}
    """)
    server = running()
    rid = server.post("/api/v1/runs", {"job_id": "report", "args": {"date": "2026-11-25"}})["run_id"]
    server.wait_run(rid)
    assert wait_log(server, rid, "grep ^APSIS_").endswith("on failure: exit code 0; output:\ndone 2026-11-25")
    env = dict(line.split("=", 1) for line in (out.parent / (out.name + ".env")).read_text().splitlines()
               if "=" in line and not line.startswith("APSIS_EVENT="))
    assert env["APSIS_RUN_ID"] == rid
    assert env["APSIS_JOB_ID"] == "report"
    assert env["APSIS_ARG_date"] == "2026-11-25"
    assert json.loads(env["APSIS_ARGS"]) == {"date": "2026-11-25"}
    assert env["APSIS_STATE"] == "failure" and env["APSIS_PREVIOUS_STATE"] == "running"
    assert env["APSIS_EXIT_CODE"] == "2"
    stdin = json.loads((out.parent / (out.name + ".json")).read_text())
    assert stdin["run"]["run_id"] == rid and stdin["transition"]["to"] == "failure"
    assert wait_log(server, rid, "exit 7").endswith("failed: exit code 7; output:\noops")
    assert wait_log(server, rid, "e-mail to ops@example.com").endswith(
        "failed: no SMTP server configured (set smtp_host in the server's config)")
    assert not (out.parent / (out.name + ".other-label")).exists()


def test_schedule_action_and_successors_pass_shared_params_through(jobs_dir, running):
    write_job(jobs_dir, "first", """
        params: [date, region]
        program: "echo first {{ date }} {{ region }}"
        successors: [second]
        action:
          type: schedule
          job_id: third
          args: {tag: "{{ region }}-late"}
          if: {states: [success]}
    """)
    write_job(jobs_dir, "second", """
        params: [date]
        program: "echo second {{ date }}"
    """)
    write_job(jobs_dir, "third", """
        params: [date, tag]
        program: "echo third {{ date }} {{ tag }}"
    """)
    write_job(jobs_dir, "broken-chain", """
        program: {type: no-op}
        successors: [nowhere]
    """)
    server = running()
    rid = server.post("/api/v1/runs", {"job_id": "first", "args": {"date": "2026-11-25", "region": "eu"}})["run_id"]
    server.wait_run(rid)
    second = server.wait_for(lambda: server.runs("job:second"), what="a run of second")
    third = server.wait_for(lambda: server.runs("job:third"), what="a run of third")
    assert second[0]["args"] == {"date": "2026-11-25"}
    assert third[0]["args"] == {"date": "2026-11-25", "tag": "eu-late"}
    assert server.wait_run(second[0]["run_id"])["state"] == "success"
    assert server.wait_run(third[0]["run_id"])["state"] == "success"
    assert wait_log(server, rid, "schedule 'second'") == (
        f"action schedule 'second' on success: created run {second[0]['run_id']} (date=2026-11-25)")
    assert f"scheduled by an action of {rid}" in log_lines(server, second[0]["run_id"])[0]
    bad = server.post("/api/v1/runs", {"job_id": "broken-chain"})["run_id"]
    assert wait_log(server, bad, "nowhere") == "action schedule 'nowhere' on success failed: no job 'nowhere'"


def test_email_action_is_delivered_through_the_configured_smtp_server(jobs_dir, running):
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((envelope.rcpt_tos, envelope.original_content))
            return "250 OK"

    inbox = Inbox()
    port = _free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        write_job(jobs_dir, "nightly", """
            params: [date]
            program: "echo disk full on {{ date }}; exit 1"
            action:
              type: email
              to: [ops@example.com, oncall@example.com]
              if: {states: [failure]}
        """)
        server = running(smtp_host="127.0.0.1", smtp_port=port, smtp_from="scheduler@example.com")
        rid = server.post("/api/v1/runs", {"job_id": "nightly", "args": {"date": "2026-11-25"}})["run_id"]
        server.wait_run(rid)
        assert wait_log(server, rid, "e-mail") == (
            "action e-mail to ops@example.com, oncall@example.com on failure: sent")
        (rcpts, raw), = inbox.messages
        assert rcpts == ["ops@example.com", "oncall@example.com"]
        msg = message_from_bytes(raw, policy=default_policy)
        assert msg["From"] == "scheduler@example.com"
        assert msg["Subject"] == f"apsis-lite: nightly {rid} failure"
        text = msg.get_content()
        assert f"Run {rid} of job nightly is now failure (was running)." in text
        assert "args: date=2026-11-25" in text
        assert "disk full on 2026-11-25" in text  # the end of its output
    finally:
        smtp.stop()


def test_actions_due_when_the_server_dies_are_done_after_it_restarts(jobs_dir, data_dir, running):
    """Actions are written with the transition that makes them due: one still
    waiting for a worker when the server is killed is done after the restart,
    and says so; one under way is done again (at least once)."""
    out = data_dir / "action-out"
    write_job(jobs_dir, "slow", f"""
        program: {{type: no-op}}
        action: {{type: command, command: "echo slow $APSIS_RUN_ID >> '{out}'; sleep 2"}}
    """)
    write_job(jobs_dir, "quick", f"""
        program: {{type: no-op}}
        action: {{type: command, command: "echo quick $APSIS_RUN_ID >> '{out}'", if: {{states: [success]}}}}
    """)
    server = running(action_workers=1)
    slow = server.post("/api/v1/runs", {"job_id": "slow"})["run_id"]
    server.wait_for(lambda: out.exists(), what="the slow action under way")
    quick = server.post("/api/v1/runs", {"job_id": "quick"})["run_id"]
    assert server.wait_run(quick)["state"] == "success"
    server.kill()  # the quick action still waits for the one worker
    assert out.read_text().count("quick") == 0
    server = running(action_workers=1)
    line = wait_log(server, quick, "action command")
    assert line.startswith("action command") and line.endswith("on success (due before the server restarted): exit code 0")
    lines = out.read_text().splitlines()
    assert lines.count(f"quick {quick}") == 1
    assert lines.count(f"slow {slow}") >= 2  # under way when the server died: done again

"""A job file can only break itself: each bad file beside a good job, through the real server and CLI.

Each of these files once took the server down (a traceback at start-up, a
reload answering 500 from then on), froze it (minutes of CPU, gigabytes of
memory) or loaded and then failed at every planning pass. Now each is
listed with its own error, the good job runs, reloads answer 200 and a job
added later loads; the server keeps answering while it reads them.
"""

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, write_job

GOOD = """
    program: "true"
    schedule: {type: interval, interval: 1s}
"""


def _laughs(depth=9, width=10):
    lines = ["program: echo hi", "metadata:", "  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, depth + 1):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _daily(calendar):
    return f"program: echo hi\nschedule: {{type: daily, daytime: '12:00', calendar: '{calendar}'}}\n"


@dataclass
class Case:
    name: str
    text: str
    key: str | None      # the key the error names (None: the file as a whole)
    message: str         # a part of its message
    freezes: bool = False  # froze the server before


CASES = [
    Case("empty program", "program: ''\n", "program", "must not be empty"),
    Case("impossible date", "program: echo hi\nmetadata: {when: 2026-13-01}\n", None,
         "line 2, column 18: not a valid date or time: '2026-13-01' (month must be in 1..12; "
         "quote it to keep it as text)"),
    Case("interval 1e308", "program: echo hi\nschedule: {type: interval, interval: 1.0e+308}\n",
         "schedule.interval", "too long: 1e+308 (at most 100 years)"),
    Case("interval 2**63", "program: echo hi\nschedule: {type: interval, interval: 9223372036854775808}\n",
         "schedule.interval", "too long: 9223372036854775808 (at most 100 years)"),
    Case("explicit 1e30", "program: echo hi\nschedule: {type: explicit, times: [1.0e+30]}\n",
         "schedule.times[0]", "out of range: 1e+30"),
    Case("explicit -2**63", "program: echo hi\nschedule: {type: explicit, times: [-9223372036854775808]}\n",
         "schedule.times[0]", "out of range: -9223372036854775808"),
    Case("explicit year 1900", "program: echo hi\nschedule: {type: explicit, times: ['1900-01-01T00:00:00Z']}\n",
         "schedule.times[0]", "times must be in the years 1970 to 9999"),
    Case("1,000 nested parentheses", _daily("(" * 1000 + "Mon-Fri" + ")" * 1000),
         "schedule.calendar", "calendar expression too long: 2,007 characters (at most 1,000)"),
    Case("12 nested parentheses", _daily("(" * 12 + "Mon-Fri" + ")" * 12),
         "schedule.calendar", "nested 12 parentheses deep (at most 10)"),
    Case("2,000-term calendar", _daily(" + ".join(["Mon-Fri"] * 2000)),
         "schedule.calendar", "calendar expression too long"),
    Case("60-term calendar", _daily(" + ".join(["Mon"] * 60)),
         "schedule.calendar", "has 60 calendars (at most 50)"),
    Case("recursive anchor", "program: &a [echo, *a]\n", None,
         "line 1, column 10: this anchor is used inside itself (a recursive alias)"),
    Case("recursive metadata", "program: echo hi\nmetadata: &m {x: *m}\n", None,
         "this anchor is used inside itself"),
    Case("date_shift 99999999999",
         "program: echo hi\nschedule: {type: daily, daytime: '12:00', date_shift: 99999999999}\n",
         "schedule.date_shift", "out of range: 99999999999 (at most 3,660 days either way)"),
    Case("cal_shift 1000000000",
         "program: echo hi\nschedule: {type: daily, daytime: '12:00', calendar: Mon-Fri, cal_shift: 1000000000}\n",
         "schedule.cal_shift", "out of range: 1000000000 (at most 366 calendar dates either way)"),
    Case("deep nesting", "program: echo hi\nmetadata: " + "[" * 500 + "]" * 500 + "\n", None,
         "nested more than 100 deep"),
    Case("file over 1 MiB", "program: echo hi\nmetadata: {note: '" + "x" * (1 << 20) + "'}\n", None,
         "too large: more than 1,048,576 bytes (1 MiB)"),
    # These froze the server.
    Case("interval 0.000001s", "program: echo hi\nschedule: {type: interval, interval: 0.000001s}\n",
         "schedule.interval", "0.001 ms is shorter than min_interval (1 s, a setting of the server)",
         freezes=True),
    Case("billion laughs", _laughs(), None,
         "aliases expand to 12,345,678,990 more values (at most 100,000)", freezes=True),
    Case("nested loops", 'program: "{% for a in range(100000) %}{% for b in range(100000) %}x'
                         '{% endfor %}{% endfor %}"\n',
         "program.command", "template stopped: more than 100,000 steps", freezes=True),
    Case("x * 10**9", "program: \"echo {{ 'x' * 10**9 }}\"\n", "program.command",
         "template stopped: repetition would make 1,000,000,000 characters (at most 1,048,576)",
         freezes=True),
    Case("10 ** 10 ** 9", 'program: "echo {{ 10 ** 10 ** 9 }}"\n', "program.command",
         "template stopped: an integer of more than 256 bits", freezes=True),
]


def _errors_for(listing, name):
    return [e for e in listing["errors"] if Path(e["path"]).name == name]


def _peak_rss_mb(server):
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _alive_within(server, seconds):
    t0 = time.monotonic()
    status, _, _ = server.request("GET", "/api/v1/alive", token=False)
    elapsed = time.monotonic() - t0
    assert status == 200 and elapsed < seconds, (status, elapsed)


class AliveWatch:
    """Polls /alive in the background; ``worst`` is the slowest answer seen."""

    def __init__(self, server):
        self.server, self.worst, self._stop = server, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            status, _, _ = self.server.request("GET", "/api/v1/alive", token=False)
            assert status == 200
            self.worst = max(self.worst, time.monotonic() - t0)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def _check_listed(server, case):
    errors = _errors_for(server.get("/api/v1/jobs"), "bad.yaml")
    assert errors, f"bad.yaml not listed: {server.get('/api/v1/jobs')['errors']}"
    assert any(e["key"] == case.key and case.message in e["message"] for e in errors), errors
    for e in errors:
        assert "Traceback" not in e["message"] and not e["message"].startswith("cannot load:")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_file_at_start_up_breaks_only_itself(jobs_dir, running, case):
    write_job(jobs_dir, "good", GOOD)
    (jobs_dir / "bad.yaml").write_text(case.text)
    server = running()
    _alive_within(server, 1.0)
    _check_listed(server, case)
    assert "bad" not in {j["job_id"] for j in server.get("/api/v1/jobs")["items"]}
    server.wait_for(lambda: any(r["state"] == "success" for r in server.runs("job:good")),
                    timeout=15, what="a run of the good job")

    status, body, _ = server.request("POST", "/api/v1/jobs/reload", {})
    assert status == 200, body
    write_job(jobs_dir, "later", 'program: "echo later"\n')
    status, body, _ = server.request("POST", "/api/v1/jobs/reload", {})
    assert status == 200, body
    assert "later" in json.loads(body)["added"]
    assert "later" in {j["job_id"] for j in server.get("/api/v1/jobs")["items"]}
    _check_listed(server, case)
    _alive_within(server, 1.0)
    assert _peak_rss_mb(server) < 300


@pytest.mark.parametrize("case", [c for c in CASES if c.freezes], ids=[c.name for c in CASES if c.freezes])
def test_a_file_that_froze_the_server_is_read_while_it_keeps_answering(jobs_dir, running, case):
    write_job(jobs_dir, "good", GOOD)
    server = running(jobs_watch="off")
    with AliveWatch(server) as watch:
        (jobs_dir / "bad.yaml").write_text(case.text)
        t0 = time.monotonic()
        status, body, _ = server.request("POST", "/api/v1/jobs/reload", {})
        assert status == 200, body
        assert time.monotonic() - t0 < 5
        time.sleep(0.3)
    assert watch.worst < 1.0
    _check_listed(server, case)
    assert _peak_rss_mb(server) < 300
    write_job(jobs_dir, "later", 'program: "echo later"\n')
    assert "later" in server.post("/api/v1/jobs/reload")["added"]


def test_every_bad_file_added_to_a_live_server_breaks_only_itself(jobs_dir, running):
    write_job(jobs_dir, "good", GOOD)
    server = running(jobs_watch="off")
    for i, case in enumerate(CASES):
        (jobs_dir / f"bad{i:02d}.yaml").write_text(case.text)
        t0 = time.monotonic()
        status, body, _ = server.request("POST", "/api/v1/jobs/reload", {})
        assert status == 200, (case.name, body)
        assert time.monotonic() - t0 < 5, case.name
        errors = _errors_for(json.loads(body), f"bad{i:02d}.yaml")
        assert any(e["key"] == case.key and case.message in e["message"] for e in errors), (case.name, errors)
        _alive_within(server, 1.0)
    write_job(jobs_dir, "later", 'program: "echo later"\n')
    assert server.post("/api/v1/jobs/reload")["added"] == ["later"]
    listing = server.get("/api/v1/jobs")
    assert {j["job_id"] for j in listing["items"]} == {"good", "later"}
    assert len({e["path"] for e in listing["errors"]}) == len(CASES)
    server.wait_for(lambda: any(r["state"] == "success" for r in server.runs("job:good")),
                    timeout=15, what="a run of the good job")
    assert _peak_rss_mb(server) < 300


def test_the_file_watcher_reloads_past_a_bad_file(jobs_dir, running):
    write_job(jobs_dir, "good", GOOD)
    server = running(jobs_watch="poll", jobs_poll_interval=0.2)
    (jobs_dir / "bad.yaml").write_text(_laughs())
    server.wait_for(lambda: _errors_for(server.get("/api/v1/jobs"), "bad.yaml"), timeout=10,
                    what="the bad file's error")
    write_job(jobs_dir, "later", 'program: "echo later"\n')
    server.wait_for(lambda: "later" in {j["job_id"] for j in server.get("/api/v1/jobs")["items"]},
                    timeout=10, what="the job added after the bad file")
    assert "reloading jobs" not in server.log()  # no failed reload was logged


def test_a_template_over_the_limits_only_with_its_args_puts_that_run_in_error(jobs_dir, running):
    write_job(jobs_dir, "good", GOOD)
    write_job(jobs_dir, "greedy", """
        params: [time]
        program: "echo {{ time * 1000000 }}"
        schedule: {type: interval, interval: 1s}
    """)
    server = running()
    assert _errors_for(server.get("/api/v1/jobs"), "greedy.yaml") == []
    run = server.wait_for(lambda: next((r for r in server.runs("job:greedy") if r["state"] == "error"), None),
                          timeout=15, what="a greedy run in error")
    assert "program.command: template stopped: repetition would make" in run["message"]
    assert "(at most 1,048,576)" in run["message"]
    server.wait_for(lambda: any(r["state"] == "success" for r in server.runs("job:good")),
                    timeout=15, what="a run of the good job")
    _alive_within(server, 1.0)
    # Run by hand, the same template is refused with the reason.
    status, body, _ = server.request("POST", "/api/v1/runs",
                                     {"job_id": "greedy", "args": {"time": "now-ish"}})
    assert status == 400 and b"template stopped" in body


def test_min_interval_is_a_setting(jobs_dir, running):
    write_job(jobs_dir, "fast", 'program: "true"\nschedule: {type: interval, interval: 0.25s}\n')
    server = running(min_interval="0.2s")
    assert _errors_for(server.get("/api/v1/jobs"), "fast.yaml") == []
    server.wait_for(lambda: len([r for r in server.runs("job:fast") if r["state"] == "success"]) >= 3,
                    timeout=15, what="three runs of a job every 0.25 s")


def test_webhook_retries_are_bounded():
    from apsis_lite.model.jobs import JobErrors, job_from_jso
    with pytest.raises(JobErrors) as exc:
        job_from_jso({"program": "true", "action": {"type": "webhook", "url": "http://x.invalid/",
                                                      "retries": 10**30}}, "j")
    assert [str(e) for e in exc.value.errors] == [
        "j: action.retries: expected a whole number from 0 to 100, got int " + str(10**30)]


def test_min_interval_setting_is_checked(tmp_path):
    from apsis_lite.config import load_config
    from apsis_lite.errors import ConfigError
    assert load_config(None).min_interval == 1.0
    assert load_config(None, min_interval="250ms").min_interval == 0.25
    with pytest.raises(ConfigError, match="config: min_interval: must be at least 1 ms, not 0.0001 s"):
        load_config(None, min_interval="0.1ms")


def test_check_jobs_reports_every_bad_file_and_exits_1(tmp_path):
    root = tmp_path / "jobs"
    write_job(root, "good", GOOD)
    for i, case in enumerate(CASES):
        (root / f"bad{i:02d}.yaml").write_text(case.text)
    proc = subprocess.run([sys.executable, "-m", "apsis_lite", "check-jobs", str(root)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    for i, case in enumerate(CASES):
        lines = [line for line in proc.stderr.splitlines() if f"bad{i:02d}.yaml:" in line]
        where = f"{root}/bad{i:02d}.yaml: {case.key}: " if case.key else f"{root}/bad{i:02d}.yaml: "
        assert any(line.startswith(where) and case.message in line for line in lines), (case.name, lines)
    assert proc.stdout.strip() == f"1 job loaded, {len(CASES)} problems"


def test_check_jobs_takes_min_interval_from_the_config(tmp_path):
    root = tmp_path / "jobs"
    write_job(root, "fast", 'program: "true"\nschedule: {type: interval, interval: 0.25s}\n')
    config = tmp_path / "config.yaml"
    config.write_text("min_interval: 0.1s\n")

    def check(*extra):
        return subprocess.run([sys.executable, "-m", "apsis_lite", "check-jobs", str(root), *extra],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)

    proc = check()
    assert proc.returncode == 1
    assert "schedule.interval: 250 ms is shorter than min_interval (1 s" in proc.stderr
    proc = check("--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1 job loaded, 0 problems"

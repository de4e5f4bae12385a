"""A run due while a page computes a big calendar starts then, not when the page is done.

The calendar's due times are computed on the server's event loop; this checks,
with a real server, that the computation gives way: the run starts before the
page's answer arrives. Not a timing test: the order of two events is checked,
and that the page really was still computing when the run was due.
"""

import os
import time
from datetime import date, datetime, timedelta

from conftest import Server, write_job

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_run_due_while_a_big_calendar_is_computed_starts_meanwhile(jobs_dir, data_dir):
    # Each due time of these costs 0.5 ms of busy work; a month grid counts up to 11 a day
    # for each job: about 0.4 s of holding the loop, were it held.
    for i in range(2):
        write_job(jobs_dir, f"heavy{i}", "program: {type: no-op}\nschedule: {type: tests.held-hourly, hold: 0.5ms}\n")
    write_job(jobs_dir, "tick", "program: {type: no-op}\n")
    config = data_dir / "config.yaml"
    config.write_text("extensions: [schedule_types]\nsanity_interval: 0\n")
    server = Server(jobs_dir, data_dir, ["--config", str(config)], env={"PYTHONPATH": TESTS})
    server.start()
    try:
        # A month wholly ahead: every day of it is computed.
        ahead = (date.today() + timedelta(days=40)).isoformat()
        due = time.time() + 0.15
        when = datetime.fromtimestamp(due).astimezone().isoformat()
        run = server.post("/api/v1/runs", {"job_id": "tick", "time": when})
        status, body, _ = server.request("GET", f"/calendar?date={ahead}")
        answered = time.time()
        assert status == 200, body[:300]
        assert answered > due + 0.1, "the page was done before the run was due: it proves nothing"
        done = server.wait_run(run["run_id"])
        assert done["state"] == "success"
        started = datetime.fromisoformat(done["times"]["starting"].replace("Z", "+00:00")).timestamp()
        assert due <= started < answered
    finally:
        server.stop()

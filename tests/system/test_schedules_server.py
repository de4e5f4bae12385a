"""Through the real server: a daily schedule on a user calendar, with a stop schedule."""

import time
from datetime import datetime, timedelta, timezone

from conftest import Server, write_job


def test_daily_on_a_calendar_runs_and_is_stopped(jobs_dir, data_dir, tmp_path):
    calendars = tmp_path / "calendars"
    calendars.mkdir()
    yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
    (calendars / "closed.cal").write_text(f"# closed yesterday\n{yesterday.isoformat()}\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"calendars_dir: {calendars}\n")
    server = Server(jobs_dir, data_dir, extra_args=["--config", str(config)])
    server.start()
    # A daytime a few seconds from now, whole seconds, in UTC; the job file is
    # written once the server is up, which on a busy machine can take seconds.
    at = (datetime.now(timezone.utc) + timedelta(seconds=3)).replace(microsecond=0)
    today = at.date()
    write_job(jobs_dir, "nightly", f"""
        params: [date]
        program: "echo prev={{{{ calendar('all - closed').before(date) }}}}; sleep 60"
        schedule:
          start:
            type: daily
            daytime: "{at.strftime('%H:%M:%S')}"
            tz: UTC
            calendar: all - closed
          stop:
            type: duration
            duration: 2s
    """)
    try:
        job = server.wait_for(lambda: server.request("GET", "/api/v1/jobs/nightly")[0] == 200
                              and server.get("/api/v1/jobs/nightly"), what="the new job")
        assert job["schedules"][0]["description"] == (
            f"daily at {at.strftime('%H:%M:%S')} on all - closed UTC; stop after 2.0 s")
        run = server.wait_for(lambda: [r for r in server.runs() if r["job_id"] == "nightly"],
                              what="the scheduled run")[0]
        assert run["args"] == {"date": today.isoformat()}
        t0 = time.monotonic()
        done = server.wait_run(run["run_id"], states=("success", "failure", "error"), timeout=30)
        assert time.monotonic() - t0 < 20  # stopped, long before its 60-second sleep ends
        # Ended by the stop signal its stop schedule sent: a success, as in apsis.
        assert (done["state"], done["signal"]) == ("success", "SIGTERM"), done
        log = [e["message"] for e in server.get(f"/api/v1/runs/{run['run_id']}/log")["items"]]
        assert any("stop schedule" in m for m in log), log
        output = server.request("GET", f"/api/v1/runs/{run['run_id']}/output")[1]
        # The business day before today on "all - closed" skips yesterday.
        assert output.startswith(f"prev={(today - timedelta(days=2)).isoformat()}\n".encode())
        # An inline ad hoc job sees the user's calendars too, and so does its rerun.
        adhoc = server.post("/api/v1/runs", {
            "job": {"params": ["date"], "program": "echo {{ calendar('all - closed').before(date) }}"},
            "args": {"date": today.isoformat()}})
        rerun = server.post(f"/api/v1/runs/{server.wait_run(adhoc['run_id'])['run_id']}/rerun")
        for rid in (adhoc["run_id"], rerun["run_id"]):
            assert server.wait_run(rid)["state"] == "success"
            output = server.request("GET", f"/api/v1/runs/{rid}/output")[1]
            assert output == f"{(today - timedelta(days=2)).isoformat()}\n".encode()
    finally:
        server.stop()


def test_every_schedule_type_runs_through_the_server(server, jobs_dir):
    # The jobs are written once the server is up (which on a busy machine can take
    # seconds), so that the explicit time 3 s from now is still ahead of it.
    server.start()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start, stop = now - timedelta(minutes=1), now + timedelta(minutes=30)
    if start.date() != stop.date():  # keep the window inside one UTC day
        start, stop = now, now + timedelta(seconds=30)
    at = now + timedelta(seconds=3)
    jobs = {
        "di": f"""
            params: [date, daytime]
            program: "echo {{{{ date }}}} {{{{ daytime }}}}"
            schedule: {{type: daily-interval, start: "{start:%H:%M:%S}", stop: "{stop:%H:%M:%S}",
                        interval: 2s, tz: UTC}}
            """,
        "cr": """
            params: [time]
            program: "echo {{ time }}"
            schedule: {type: cron, expr: "*/2 * * * * *", tz: UTC}
            """,
        "ex": f"""
            params: [time]
            program: "echo {{{{ time }}}}"
            schedule: {{type: explicit, times: ["{at.isoformat()}"]}}
            """,
        "iv": """
            params: [time]
            program: "echo {{ time }}"
            schedule: {type: interval, interval: 2s}
            """,
    }
    for job_id, text in jobs.items():
        write_job(jobs_dir, job_id, text)
    for job_id in jobs:
        run = server.wait_for(
            lambda job_id=job_id: next((r for r in server.runs(f"job:{job_id} state:success")), None),
            timeout=20, what=f"a successful run of {job_id}")
        output = server.request("GET", f"/api/v1/runs/{run['run_id']}/output")[1].decode()
        args = run["args"]
        expected = f"{args['date']} {args['daytime']}" if job_id == "di" else args["time"]
        assert output == expected + "\n"
    explicit = next(iter(server.runs("job:ex")))
    assert explicit["args"]["time"].startswith(at.strftime("%Y-%m-%dT%H:%M:%S"))

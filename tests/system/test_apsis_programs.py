"""apsis's internal stats program and const condition, in the real server."""

import json

from conftest import write_job


def test_stats_program_and_const_condition(server, jobs_dir, data_dir):
    write_job(jobs_dir, "stats", """\
        params: [date]
        program:
          type: apsis.program.internal.stats.StatsProgram
          path: "stats-{{ date }}.json"
        """)
    write_job(jobs_dir, "nowhere", """\
        program: {type: apsis.program.internal.stats.StatsProgram, path: /nonexistent/folder/stats.json}
        """)
    write_job(jobs_dir, "held", "condition: {type: const, value: false}\nprogram: {type: no-op}\n")
    write_job(jobs_dir, "free", "condition: {type: const, value: true}\nprogram: {type: no-op}\n")
    server.start()
    held = server.post("/api/v1/runs", {"job_id": "held"})["run_id"]
    assert server.wait_run(server.post("/api/v1/runs", {"job_id": "free"})["run_id"])["state"] == "success"

    rid = server.post("/api/v1/runs", {"job_id": "stats", "args": {"date": "2027-01-04"}})["run_id"]
    run = server.wait_run(rid)
    path = data_dir / "stats-2027-01-04.json"
    assert (run["state"], run["message"]) == ("success", f"recorded the server's figures in {path}")
    figures = json.loads(path.read_text())
    assert figures["runs_by_state"]["success"] >= 1 and figures["database_bytes"] > 0
    assert figures["pid"] == server.proc.pid
    assert json.loads(server.cli("output", rid).stdout) == figures  # the same line, as the run's output

    run = server.wait_run(server.post("/api/v1/runs", {"job_id": "nowhere"})["run_id"])
    assert (run["state"], run["message"]) == (
        "failure", "cannot append to /nonexistent/folder/stats.json: No such file or directory")

    # A const false condition never holds: the run waits, saying so.
    run = server.get(f"/api/v1/runs/{held}")
    assert run["state"] == "waiting"
    assert "const condition that is false" in server.cli("show", held).stdout

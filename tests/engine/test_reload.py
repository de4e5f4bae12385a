"""Live job reloading: the incremental folder loader, and edits noticed by the real server."""

import os
import time
from collections import Counter

import pytest

from apsis_lite.engine.reload import KEEPING_LAST_GOOD, JobsFolder
from apsis_lite.timeutil import parse_time

from conftest import write_job


# -- the folder loader -----------------------------------------------------------


def test_folder_reads_only_what_changed_and_keeps_the_last_good_version(jobs_dir):
    clock = [time.time() + 10]  # every file looks settled (not "racy")
    folder = JobsFolder(jobs_dir, clock=lambda: clock[0])
    write_job(jobs_dir, "a", "program: echo a\n")
    write_job(jobs_dir, "sub/b", "program: echo b\n")
    jobs, errors, read = folder.scan()
    assert sorted(jobs) == ["a", "sub/b"] and errors == [] and sorted(read) == ["a.yaml", "sub/b.yaml"]
    assert folder.scan()[2] == []  # nothing changed, nothing read

    write_job(jobs_dir, "a", "program: echo a2\n")
    jobs, errors, read = folder.scan()
    assert read == ["a.yaml"] and jobs["a"].program["command"] == "echo a2"

    write_job(jobs_dir, "a", "program: [unclosed\n")
    jobs, errors, read = folder.scan()
    assert jobs["a"].program["command"] == "echo a2"  # still the last good one
    messages = [(os.path.basename(e.path), e.msg) for e in errors]
    assert messages[0][0] == "a.yaml" and messages[0][1].startswith("not valid YAML: line 2")
    assert messages[1] == ("a.yaml", KEEPING_LAST_GOOD)

    write_job(jobs_dir, "never", "program: {type: bogus}\n")
    write_job(jobs_dir, "sub/b", "nothing: here\n")
    (jobs_dir / "sub" / "b.yaml").unlink()
    write_job(jobs_dir, "a", "program: echo a3\n")
    jobs, errors, _ = folder.scan()
    assert sorted(jobs) == ["a"] and jobs["a"].program["command"] == "echo a3"
    assert [(os.path.basename(e.path), e.key) for e in errors] == [("never.yaml", "program.type")]

    (jobs_dir / "a.yml").write_text("program: echo dup\n")
    jobs, errors, _ = folder.scan()
    assert any("duplicate job id 'a'" in e.msg for e in errors) and jobs["a"].program["command"] == "echo a3"


def test_folder_reads_a_recently_written_file_again_even_if_its_stat_is_unchanged(jobs_dir):
    clock = [time.time()]
    folder = JobsFolder(jobs_dir, clock=lambda: clock[0])
    path = write_job(jobs_dir, "a", "program: echo 1\n")
    st = path.stat()
    folder.scan()
    # Rewritten within the same timestamp tick, same size: only "racy" re-reading catches it.
    path.write_text("program: echo 2\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    jobs, _, read = folder.scan()
    assert read == ["a.yaml"] and jobs["a"].program["command"] == "echo 2"
    clock[0] += 10
    folder.scan()
    assert folder.scan()[2] == []


@pytest.mark.parametrize("fraction_ns, racy_for", [
    (123_456_789, 0.1),  # a file system that keeps fractions of a second: a kernel tick
    (0, 2.0),            # one that keeps whole seconds: up to two of them
])
def test_how_long_a_file_counts_as_recently_written(jobs_dir, fraction_ns, racy_for):
    path = write_job(jobs_dir, "a", "program: echo 1\n")
    mtime_ns = (int(time.time()) - 100) * 1_000_000_000 + fraction_ns
    os.utime(path, ns=(mtime_ns, mtime_ns))
    for age, read_again in [(racy_for - 0.01, True), (racy_for + 0.01, False)]:
        folder = JobsFolder(jobs_dir, clock=lambda: mtime_ns / 1e9 + age)  # noqa: B023 (used at once)
        assert folder.scan()[2] == ["a.yaml"]
        assert folder.scan()[2] == (["a.yaml"] if read_again else []), f"{age} s after its modification"


# -- through the server ---------------------------------------------------------------


def epoch(iso):
    return parse_time(iso).timestamp()


def scheduled_times(server, job_id):
    return sorted(epoch(r["times"]["schedule"]) for r in server.runs(f"job:{job_id} state:scheduled"))


def test_an_edited_job_file_is_re_planned_within_seconds(jobs_dir, running):
    # Each schedule's phase puts its first slot 30 s (then 20 s) from now: no slot
    # comes due while the test counts them, however slowly a busy machine runs it.
    old_phase = int(time.time() + 30) % 60
    write_job(jobs_dir, "tick", f"""
        program: "echo old"
        schedule: {{type: interval, interval: 60s, phase: {old_phase}s}}
    """)
    server = running(horizon="4 min")
    before = scheduled_times(server, "tick")
    assert len(before) == 4 and all(t % 60 == old_phase for t in before)  # a 4 minute horizon

    phase = int(time.time() + 20) % 40
    new_schedule = f"{{type: interval, interval: 40s, phase: {phase}s}}"
    write_job(jobs_dir, "tick", f"""
        program: "echo new"
        schedule: {new_schedule}
    """)

    def replanned():
        nxt = server.get("/api/v1/jobs/tick?next=3")["next_times"]
        times = scheduled_times(server, "tick")
        return nxt if all(epoch(n["time"]) % 40 == phase for n in nxt) and times and \
            all(t % 40 == phase for t in times) else None
    server.wait_for(replanned, what="the new schedule")
    runs = server.runs("job:tick")
    skipped = [r for r in runs if r["state"] == "skipped"]
    assert len(skipped) == 4 and all(r["message"] == "job file changed; re-planned" for r in skipped)
    pending = [r for r in runs if r["state"] == "scheduled"]
    assert len(pending) == 6
    assert all(server.get(f"/api/v1/runs/{r['run_id']}")["program"]["command"] == "echo new" for r in pending)

    # Only the program changes: the same slots, bound again, each exactly once.
    times = scheduled_times(server, "tick")
    write_job(jobs_dir, "tick", f"""
        program: "echo newer"
        schedule: {new_schedule}
    """)
    server.wait_for(lambda: all(
        server.get(f"/api/v1/runs/{r['run_id']}")["program"]["command"] == "echo newer"
        for r in server.runs("job:tick state:scheduled")), what="re-bound runs")
    assert scheduled_times(server, "tick")[:5] == times[:5]

    # A description alone re-plans nothing.
    count = len(server.runs("job:tick"))
    write_job(jobs_dir, "tick", f"""
        program: "echo newer"
        schedule: {new_schedule}
        metadata: {{description: now with a description}}
    """)
    server.wait_for(lambda: server.get("/api/v1/jobs/tick")["metadata"].get("description"),
                    what="the new description")
    assert len(server.runs("job:tick")) == count

    # A restart neither loses nor duplicates a slot.
    server.stop()
    server.start()
    live = Counter(r["times"]["schedule"] for r in server.runs("job:tick") if r["state"] != "skipped")
    assert live and max(live.values()) == 1
    assert scheduled_times(server, "tick")[:5] == times[:5]


def test_a_broken_edit_keeps_the_old_job_running_and_shows_the_error(jobs_dir, running):
    path = write_job(jobs_dir, "beat", """
        program: "echo v1"
        schedule: {type: interval, interval: 1s}
    """)
    server = running()
    write_job(jobs_dir, "beat", """
        program: "echo v2"
        schedule: {type: interval, interval: 1s
    """)
    errors = server.wait_for(lambda: server.get("/api/v1/jobs")["errors"], what="the load error")
    assert errors[0]["path"] == str(path) and errors[0]["message"].startswith("not valid YAML")
    assert errors[1]["message"] == KEEPING_LAST_GOOD
    assert [j["job_id"] for j in server.get("/api/v1/jobs")["items"]] == ["beat"]
    broke_at = time.time()
    ran = server.wait_for(lambda: [r for r in server.runs("job:beat state:success")
                                   if epoch(r["times"]["schedule"]) > broke_at + 1], what="runs after the break")
    assert server.get(f"/api/v1/runs/{ran[0]['run_id']}")["program"]["command"] == "echo v1"
    cli = server.cli("jobs")
    assert cli.returncode == 0 and "beat" in cli.stdout
    assert "not valid YAML" in cli.stderr and KEEPING_LAST_GOOD in cli.stderr

    write_job(jobs_dir, "beat", """
        program: "echo v3"
        schedule: {type: interval, interval: 1s}
    """)
    server.wait_for(lambda: not server.get("/api/v1/jobs")["errors"], what="the fix")
    fixed_at = time.time()
    ran = server.wait_for(lambda: [r for r in server.runs("job:beat state:success")
                                   if epoch(r["times"]["schedule"]) > fixed_at + 1], what="runs after the fix")
    assert server.get(f"/api/v1/runs/{ran[0]['run_id']}")["program"]["command"] == "echo v3"


def test_deleting_a_job_file_stops_new_runs(jobs_dir, running):
    path = write_job(jobs_dir, "gone", """
        program: "true"
        schedule: {type: interval, interval: 1s}
    """)
    server = running(jobs_watch="poll", jobs_poll_interval=0.3)  # the polling fallback
    server.wait_for(lambda: server.runs("job:gone state:success"), what="a first run")
    path.unlink()
    server.wait_for(lambda: server.request("GET", "/api/v1/jobs/gone")[0] == 404,
                    what="the job to go")
    runs = server.runs("job:gone")
    skipped = [r for r in runs if r["state"] == "skipped"]
    assert skipped and all(r["message"] == "job file deleted" for r in skipped)
    assert not [r for r in runs if r["state"] == "scheduled"]
    count = len(runs)
    time.sleep(2.5)
    assert len(server.runs("job:gone")) == count


def test_reload_command_reports_what_changed(jobs_dir, running):
    write_job(jobs_dir, "keep", "program: 'true'\n")
    write_job(jobs_dir, "edit", "program: 'true'\nschedule: {type: interval, interval: 1 min}\n")
    write_job(jobs_dir, "drop", "program: 'true'\n")
    server = running(jobs_watch="off")
    write_job(jobs_dir, "edit", "program: 'false'\nschedule: {type: interval, interval: 1 min}\n")
    write_job(jobs_dir, "new", "program: 'true'\n")
    (jobs_dir / "drop.yaml").unlink()
    time.sleep(0.5)
    assert sorted(j["job_id"] for j in server.get("/api/v1/jobs")["items"]) == ["drop", "edit", "keep"]

    out = server.cli("reload")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "3 jobs; added: new; changed: edit (2 scheduled runs re-planned); removed: drop")
    assert sorted(j["job_id"] for j in server.get("/api/v1/jobs")["items"]) == ["edit", "keep", "new"]
    assert server.cli("reload").stdout.strip() == "3 jobs; added: none; changed: none; removed: none"

    write_job(jobs_dir, "keep", "program: {type: nope}\n")
    out = server.cli("reload")
    assert out.returncode == 1
    assert "keep.yaml: program.type: unknown program type 'nope'" in out.stderr
    assert KEEPING_LAST_GOOD in out.stderr
    body = server.post("/api/v1/jobs/reload")
    assert body["jobs"] == 3 and body["changed"] == [] and len(body["errors"]) == 2

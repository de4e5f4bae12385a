"""Retention, archive, backup and schema versions through the real server and CLI.

Old runs are written into the real database file before the server starts
(as years of history would be), then the server's background task, the
commands and the in-server program types act on them while the scheduler
keeps starting its runs.
"""

import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime

import apsw
import pytest

from conftest import ROOT, write_job

from apsis_lite.store.database import MIGRATIONS, Store

DAY = 86400.0


def history(data_dir, job_id, n, age_days, output=b"old output\n", state="success"):
    """``n`` finished runs of ``job_id`` that finished ``age_days`` ago, with output, in the real file."""
    store = Store(os.path.join(data_dir, "apsis-lite.db"))
    t = time.time() - age_days * DAY
    ids = []
    with store.write():
        for i in range(n):
            run = store.insert_run(job_id, {"n": str(i)}, state, t + i, t + i)
            store.store_output_bytes(run.run_id, output, len(output), 0)
            ids.append(run.run_id)
    store.close()
    return ids


def tick_job(jobs_dir):
    write_job(jobs_dir, "tick", """
        params: [time]
        program: "true"
        schedule: {type: interval, interval: 1s}
    """)


def output(srv, run_id):
    status, body, _ = srv.request("GET", f"/api/v1/runs/r{run_id}/output")
    assert status == 200, (status, body)
    return body


def lateness(runs):
    """Seconds from due to running of each run that ran."""
    out = []
    for r in runs:
        t = r["times"]
        if "running" in t:
            out.append(_epoch(t["running"]) - _epoch(t["schedule"]))
    return out


def _epoch(iso):
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "apsis_lite", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_the_server_prunes_old_runs_and_output_while_runs_start_on_time(running, jobs_dir, data_dir):
    tick_job(jobs_dir)
    old = history(data_dir, "old", 3000, age_days=100, output=b"x" * 2000)
    middling = history(data_dir, "mid", 50, age_days=20)
    recent = history(data_dir, "new", 20, age_days=1)
    srv = running(runs_retention="30d", output_retention="10d", runs_kept_per_job=5,
                  retention_interval="1s", retention_batch=100)
    started = time.time()
    srv.wait_for(lambda: len(srv.runs("job:old")) == 5, timeout=60, what="the old runs to be pruned")
    time.sleep(2)
    ticks = [r for r in srv.runs("job:tick") if _epoch(r["times"]["schedule"]) >= started]
    # The latest five of the old job stay, with their output.
    kept = sorted(int(r["run_id"][1:]) for r in srv.runs("job:old"))
    assert kept == old[-5:]
    assert output(srv, kept[0]) == b"x" * 2000
    # Runs between the two ages stay, but their output is gone, except the latest five's;
    # a run whose output went says when.
    mid = {int(r["run_id"][1:]): r for r in srv.runs("job:mid")}
    assert sorted(mid) == middling
    outputs = {rid: output(srv, rid) for rid in middling}
    assert [rid for rid, data in outputs.items() if data] == middling[-5:], outputs
    gone = srv.get(f"/api/v1/runs/r{middling[0]}")
    assert gone["output_length"] == 0 and gone["output"]["removed"], gone
    # Recent runs are untouched.
    assert all(output(srv, rid) == b"old output\n" for rid in recent)
    # The scheduler kept starting its runs on time meanwhile.
    late = lateness(ticks)
    assert len(late) >= 3, ticks
    assert max(late) < 1.0, late
    assert "Traceback" not in srv.log()
    assert "retention: removed 2995 runs" in srv.log()


def test_archive_moves_runs_to_a_monthly_file_readable_by_cli_and_api(running, jobs_dir, data_dir):
    tick_job(jobs_dir)
    old = history(data_dir, "old", 40, age_days=100)
    srv = running(runs_retention="30d", runs_kept_per_job=2, retention_archive=True, retention_interval="1s")
    srv.wait_for(lambda: len(srv.runs("job:old")) == 2, timeout=60, what="the old runs to be archived")
    folder = data_dir / "archive"
    names = sorted(os.listdir(folder))
    assert names and all(n.startswith("runs-") and n.endswith(".db") for n in names), names
    archived = []
    for name in names:
        page = srv.get(f"/api/v1/runs?archive={name}&limit=1000&q=job:old")
        archived += [int(r["run_id"][1:]) for r in page["items"]]
    assert sorted(archived) == old[:-2]
    # The archive keeps the output and log too, and the filter works there.
    first = srv.get(f"/api/v1/runs?archive={names[0]}&q=n=0")["items"]
    assert first and first[0]["args"] == {"n": "0"}
    # Offline, with no server asked.
    done = cli("runs", "--archive", str(folder / names[0]), "--all", "--json")
    assert done.returncode == 0, done.stderr
    assert {r["job_id"] for r in json.loads(done.stdout)["items"]} == {"old"}
    # Only names in the archive folder.
    for bad in ("../apsis-lite.db", "/etc/passwd", "..%2Fapsis-lite.db", ".x.db", "x.txt"):
        status, body, _ = srv.request("GET", f"/api/v1/runs?archive={bad}")
        assert status == 400 and "archive" in json.loads(body)["error"], (bad, status, body)
    status, body, _ = srv.request("GET", "/api/v1/runs?archive=runs-1999-01.db")
    assert status == 404 and "no archive" in json.loads(body)["error"]


def test_prune_and_archive_commands_beside_a_live_server(running, jobs_dir, data_dir):
    tick_job(jobs_dir)
    history(data_dir, "old", 500, age_days=100)
    history(data_dir, "older", 30, age_days=200)
    srv = running()
    started = time.time()
    dry = cli("prune", "--older-than", "90d", "--keep-per-job", "3", "--dry-run", "--data", str(data_dir))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would remove 524 runs"), dry.stdout
    assert len(srv.runs("job:old")) == 500
    done = cli("archive", "--older-than", "150d", "--keep-per-job", "3", "--data", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("archived 27 runs"), done.stdout
    done = cli("prune", "--older-than", "90d", "--keep-per-job", "3", "--data", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed 497 runs"), done.stdout
    assert len(srv.runs("job:old")) == 3 and len(srv.runs("job:older")) == 3
    time.sleep(1.5)
    assert max(lateness([r for r in srv.runs("job:tick") if _epoch(r["times"]["schedule"]) >= started])) < 1.0
    bad = cli("prune", "--older-than", "soon", "--data", str(data_dir))
    assert bad.returncode == 2 and "--older-than" in bad.stderr and "Traceback" not in bad.stderr


def test_in_server_programs_archive_prune_and_vacuum_from_a_job(running, jobs_dir, data_dir):
    history(data_dir, "old", 60, age_days=100, output=b"y" * 100_000)
    write_job(jobs_dir, "archiver", """
        program: {type: apsis.program.internal.archive.ArchiveProgram, age: 2592000, count: 20, keep_per_job: 0}
    """)
    write_job(jobs_dir, "pruner", """
        program: {type: apsis-lite-prune, older_than: 30d, keep_per_job: 1}
    """)
    write_job(jobs_dir, "vacuum", """
        program: {type: apsis-lite-vacuum}
    """)
    srv = running()
    run = srv.wait_run(srv.post("/api/v1/runs", {"job_id": "archiver"})["run_id"])
    assert run["state"] == "success" and run["message"].startswith("archived 20 runs"), run
    assert len(srv.runs("job:old")) == 40
    run = srv.wait_run(srv.post("/api/v1/runs", {"job_id": "pruner"})["run_id"])
    assert run["state"] == "success" and run["message"].startswith("removed 39 runs"), run
    assert len(srv.runs("job:old")) == 1
    run = srv.wait_run(srv.post("/api/v1/runs", {"job_id": "vacuum"})["run_id"])
    assert run["state"] == "success" and run["message"].startswith("gave back"), run
    bad = cli("check-jobs", str(jobs_dir))
    assert bad.returncode == 0, bad.stdout + bad.stderr
    write_job(jobs_dir, "broken", """
        program: {type: apsis-lite-archive, older_than: 30d, path: ../../etc/x.db}
    """)
    bad = cli("check-jobs", str(jobs_dir))
    assert bad.returncode == 1 and "not an archive file name" in bad.stdout + bad.stderr


def test_apsis_archive_job_with_templated_age_and_absolute_path(running, jobs_dir, data_dir, tmp_path):
    old = history(data_dir, "old", 30, age_days=100)
    folder = tmp_path / "elsewhere"
    write_job(jobs_dir, "archive", f"""
        params: [label, age]
        program:
          type: apsis.program.internal.archive.ArchiveProgram
          age: "{{{{ age }}}}"
          path: "{folder}/{{{{ label }}}}.db"
          count: 1000000
          chunk_size: 7
          chunk_sleep: 0.1
    """)
    write_job(jobs_dir, "self", f"""
        program: {{type: apsis-lite-archive, age: 0, keep_per_job: 0, path: "{data_dir}/apsis-lite.db"}}
    """)
    srv = running()
    run = srv.wait_run(srv.post("/api/v1/runs", {"job_id": "archive",
                                                 "args": {"label": "q4", "age": "2592000"}})["run_id"])
    assert run["state"] == "success" and run["message"].startswith("archived 20 runs"), run
    assert sorted(int(r["run_id"][1:]) for r in srv.runs("job:old")) == old[-10:]
    done = cli("runs", "--archive", str(folder / "q4.db"), "--all", "--json")
    assert done.returncode == 0, done.stderr
    assert sorted(int(r["run_id"][1:]) for r in json.loads(done.stdout)["items"]) == old[:20]
    # A bad bound age is refused naming the key; nothing moves.
    status, body, _ = srv.request("POST", "/api/v1/runs", {"job_id": "archive",
                                                           "args": {"label": "q4", "age": "soon"}})
    assert status == 400 and "program.age: not a duration: 'soon'" in json.loads(body)["error"], body
    # A path that is the server's own database is refused, not written.
    run = srv.wait_run(srv.post("/api/v1/runs", {"job_id": "self"})["run_id"])
    assert run["state"] == "failure" and "the server's own database" in run["message"], run
    assert len(srv.runs("job:old")) == 10
    assert "Traceback" not in srv.log()


def test_a_backup_taken_while_runs_are_written_is_whole(running, jobs_dir, data_dir, tmp_path):
    tick_job(jobs_dir)
    history(data_dir, "old", 2000, age_days=5, output=b"z" * 5000)
    srv = running()
    stop = threading.Event()
    made = []

    def submit():
        while not stop.is_set():
            made.append(srv.post("/api/v1/runs", {"program": "echo hi"})["run_id"])

    writer = threading.Thread(target=submit)
    writer.start()
    try:
        results = []
        for i in range(3):
            target = tmp_path / f"backup-{i}.db"
            results.append((target, cli("backup", str(target), "--data", str(data_dir))))
    finally:
        stop.set()
        writer.join()
    assert len(made) > 5
    for target, done in results:
        assert done.returncode == 0, done.stderr
        assert "integrity check ok" in done.stdout
        check = cli("check-db", str(target))
        assert check.returncode == 0 and "integrity check: ok" in check.stdout, check.stdout + check.stderr
        copy = Store(target, readonly=True)
        assert copy.stats()["runs"] >= 2000
        copy.close()
        assert not os.path.exists(f"{target}.partial")
    # A restored copy serves: the server starts on it and lists the runs.
    srv.stop()
    restored = tmp_path / "restored"
    restored.mkdir()
    os.replace(results[-1][0], restored / "apsis-lite.db")
    from conftest import Server
    again = Server(jobs_dir, restored).start()
    try:
        assert len(again.runs("job:old")) == 2000
    finally:
        again.stop()


def test_a_newer_database_is_refused_naming_both_versions(jobs_dir, data_dir):
    Store(data_dir / "apsis-lite.db").close()
    conn = apsw.Connection(str(data_dir / "apsis-lite.db"))
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 3}")
    conn.close()
    done = cli("serve", "--jobs", str(jobs_dir), "--data", str(data_dir), "--port", "0", timeout=30)
    assert done.returncode == 1
    assert f"schema version {len(MIGRATIONS) + 3}, from a newer apsis-lite" in done.stderr
    assert f"up to {len(MIGRATIONS)}" in done.stderr and "Traceback" not in done.stderr
    check = cli("check-db", "--data", str(data_dir))
    assert check.returncode == 3 and "newer apsis-lite" in check.stderr
    prune = cli("prune", "--older-than", "1d", "--data", str(data_dir))
    assert prune.returncode == 1 and "newer apsis-lite" in prune.stderr


def test_an_older_database_is_migrated_at_start_and_kept(jobs_dir, data_dir):
    # A database as the first release made it: only the first schema step.
    conn = apsw.Connection(str(data_dir / "apsis-lite.db"))
    conn.execute(MIGRATIONS[0])
    conn.execute("INSERT INTO runs (job_id, args, state, time_schedule, time_updated)"
                 " VALUES ('j', '{\"a\": \"1\"}', 'success', 1000, 1000)")
    conn.execute("PRAGMA user_version=1")
    conn.close()
    check = cli("check-db", "--data", str(data_dir))
    assert check.returncode == 0 and "older" in check.stdout
    prune = cli("prune", "--older-than", "1d", "--data", str(data_dir))
    assert prune.returncode == 1 and "older apsis-lite" in prune.stderr
    from conftest import Server
    srv = Server(jobs_dir, data_dir).start()
    try:
        assert [r["args"] for r in srv.runs("a=1")] == [{"a": "1"}]
    finally:
        srv.stop()
    check = cli("check-db", "--data", str(data_dir))
    assert check.returncode == 0 and f"schema version {len(MIGRATIONS)}: this apsis-lite's" in check.stdout


@pytest.mark.parametrize("setting, value, words", [
    ("runs_retention", "0", "runs_retention: must be more than zero"),
    ("runs_retention", "soon", "runs_retention: not a duration"),
    ("runs_kept_per_job", -1, "runs_kept_per_job: must not be negative"),
    ("retention_batch", 0, "retention_batch: must be from 1 to 10000"),
    ("retention_archive", True, "retention_archive: needs runs_retention"),
])
def test_retention_settings_are_checked(jobs_dir, data_dir, setting, value, words):
    import yaml
    config = data_dir / "c.yaml"
    config.write_text(yaml.safe_dump({setting: value}))
    done = cli("serve", "--jobs", str(jobs_dir), "--data", str(data_dir), "--config", str(config), timeout=30)
    assert done.returncode == 1 and words in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_vacuum_turns_an_old_database_to_giving_space_back_and_refuses_beside_a_server(jobs_dir, data_dir):
    # A database made before incremental auto_vacuum: pruning frees pages but keeps the file's size.
    conn = apsw.Connection(str(data_dir / "apsis-lite.db"))
    for step in MIGRATIONS:
        conn.execute(step)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS)}")
    conn.close()
    history(data_dir, "old", 300, age_days=100, output=b"v" * 50_000)
    check = cli("check-db", "--data", str(data_dir))
    assert "auto_vacuum: none" in check.stdout and "apsis-lite vacuum" in check.stdout
    from conftest import Server
    srv = Server(jobs_dir, data_dir).start()
    try:
        refused = cli("vacuum", "--data", str(data_dir))
        assert refused.returncode == 1 and "a server is running" in refused.stderr
    finally:
        srv.stop()
    done = cli("vacuum", "--data", str(data_dir))
    assert done.returncode == 0 and "free space is given back from now on" in done.stdout, done.stderr
    before = os.path.getsize(data_dir / "apsis-lite.db")
    done = cli("prune", "--older-than", "30d", "--keep-per-job", "0", "--data", str(data_dir))
    assert done.returncode == 0 and "gave back" in done.stdout, done.stdout
    assert os.path.getsize(data_dir / "apsis-lite.db") < before / 10

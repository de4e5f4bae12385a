"""A full disk during a backup, an archive, a prune and the server's retention, for real
(a small tmpfs the test fills; see test_full_disk.py): a clear message, the database
whole, nothing half-written left behind, and the work done once there is room.
"""

import os
import time

from test_full_disk import disk_server, fill, free, small_disk  # noqa: F401 — the fixture
from test_retention import cli, history, tick_job

from apsis_lite.store.database import Store


def runs_in(db_path):
    store = Store(db_path, readonly=True)
    try:
        return store.stats()["runs"]
    finally:
        store.close()


def test_a_backup_onto_a_full_disk_says_so_and_leaves_nothing(data_dir, small_disk):  # noqa: F811
    history(data_dir, "old", 300, age_days=5, output=b"b" * 20_000)
    fill(small_disk)
    target = small_disk / "backup.db"
    done = cli("backup", str(target), "--data", str(data_dir))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "disk is full" in done.stderr and "no backup was written" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not [p for p in os.listdir(small_disk) if p.startswith("backup")], os.listdir(small_disk)
    assert cli("check-db", "--data", str(data_dir)).returncode == 0
    free(small_disk)
    done = cli("backup", str(target), "--data", str(data_dir))
    assert done.returncode == 0, done.stderr
    assert runs_in(target) == 300


def test_archive_and_prune_on_a_full_disk_keep_the_database_whole(small_disk):  # noqa: F811
    data = small_disk / "data"
    data.mkdir()
    history(data, "old", 400, age_days=100, output=b"a" * 10_000)
    db = str(data / "apsis-lite.db")
    fill(small_disk)
    done = cli("archive", "--older-than", "30d", "--keep-per-job", "0", "--data", str(data))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "disk is full" in done.stderr and "Traceback" not in done.stderr, done.stderr
    check = cli("check-db", "--data", str(data))
    assert check.returncode == 4 and "cannot be checked now: the disk is full" in check.stderr, check.stderr
    free(small_disk)
    check = cli("check-db", "--data", str(data))
    assert check.returncode == 0 and "integrity check: ok" in check.stdout, check.stdout + check.stderr
    # Nothing was removed that is not in an archive: the archive copy comes first.
    archived = 0
    for name in os.listdir(data / "archive") if (data / "archive").exists() else ():
        if name.endswith(".db"):
            archived += runs_in(str(data / "archive" / name))
    assert runs_in(db) + archived >= 400
    assert runs_in(db) >= 400 - archived
    done = cli("archive", "--older-than", "30d", "--keep-per-job", "0", "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert runs_in(db) == 0
    assert sum(runs_in(str(data / "archive" / n)) for n in os.listdir(data / "archive")
               if n.endswith(".db")) == 400


def test_prune_on_a_full_disk_removes_whole_batches_or_nothing(small_disk):  # noqa: F811
    data = small_disk / "data"
    data.mkdir()
    history(data, "old", 400, age_days=100, output=b"p" * 10_000)
    db = str(data / "apsis-lite.db")
    # Opened once so that its WAL and shared-memory files exist, as beside a running server.
    keep_open = Store(db)
    try:
        fill(small_disk)
        done = cli("prune", "--older-than", "30d", "--keep-per-job", "0", "--batch-size", "50",
                   "--data", str(data))
        out = done.stdout + done.stderr
        assert "Traceback" not in out
        if done.returncode == 0:
            # Deleting needs little room: SQLite found it in the WAL it had.
            assert done.stdout.startswith("removed 400 runs"), out
        else:
            assert done.returncode == 1 and "disk is full" in done.stderr, out
    finally:
        keep_open.close()
        free(small_disk)
    check = cli("check-db", "--data", str(data))
    assert check.returncode == 0 and "integrity check: ok" in check.stdout, check.stdout + check.stderr
    left = runs_in(db)
    assert left % 50 == 0, f"{left} runs left: a batch was cut in the middle"
    done = cli("prune", "--older-than", "30d", "--keep-per-job", "0", "--data", str(data))
    assert done.returncode == 0 and runs_in(db) == 0, done.stdout + done.stderr


def test_the_servers_retention_waits_out_a_full_disk(jobs_dir, small_disk, tmp_path):  # noqa: F811
    data = small_disk / "data"
    data.mkdir()
    tick_job(jobs_dir)
    history(data, "old", 300, age_days=100, output=b"c" * 10_000)
    config = tmp_path / "c.yaml"
    config.write_text("runs_retention: 30d\nretention_archive: true\nruns_kept_per_job: 0\n"
                      "retention_interval: 4s\n")
    srv = disk_server(jobs_dir, small_disk, tmp_path)
    srv.extra_args = ["--config", str(config)]
    srv.start()
    fill(small_disk)  # before the first pass, 4 s after the start
    try:
        srv.wait_for(lambda: "retention: stopped for now" in srv.log(), timeout=60,
                     what="the retention task to meet the full disk")
        free(small_disk)
        srv.wait_for(lambda: not srv.runs("job:old"), timeout=60, what="the archive to be done")
        time.sleep(1)
    finally:
        srv.stop()
    log = srv.log()
    assert "Traceback" not in log, log
    assert "disk is full" in log
    names = [n for n in os.listdir(data / "archive") if n.endswith(".db")]
    assert sum(runs_in(str(data / "archive" / n)) for n in names) == 300
    assert cli("check-db", "--data", str(data)).returncode == 0

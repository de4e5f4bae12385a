"""``apsis-lite import-apsis``: an apsis database (made with apsis's schema, see
``apsis_db``) imported with the real CLI, then looked at through a real server."""

import shutil
import sqlite3
import subprocess
import sys
import time
import tracemalloc

import pytest

from apsis_db import ApsisDB
from conftest import ROOT, Server, _kill_agents, short_tmpdir, write_job

DAY = "2026-11-02T"


def cli(*args):
    result = subprocess.run([sys.executable, "-m", "apsis_lite", *args], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


def make_history(path):
    db = ApsisDB(path)
    ids = {
        "ok": db.run("prices/load", {"date": "2026-11-02"}, "success",
                     {"schedule": DAY + "10:00:00", "waiting": DAY + "10:00:00", "starting": DAY + "10:00:00",
                      "running": DAY + "10:00:01", "success": DAY + "10:00:05"},
                     log=[(DAY + "10:00:00", "scheduled"), (DAY + "10:00:01", "running"),
                          (DAY + "10:00:05", "success")],
                     output=b"loaded 42 prices\n", compression="gzip", meta={"return_code": 0}),
        "fail": db.run("prices/load", {"date": "2026-11-01"}, "failure",
                       {"schedule": DAY + "09:00:00", "running": DAY + "09:00:01", "failure": DAY + "09:00:02"},
                       log=[(DAY + "09:00:02", "program failed: return code 3")],
                       output=b"no prices\n", compression="deflate", meta={"return_code": 3}),
        "killed": db.run("report", {"n": 7}, "failure",
                         {"schedule": DAY + "11:00:00", "running": DAY + "11:00:01", "failure": DAY + "11:00:09"},
                         output=b"", meta={"status": {"exit_code": None, "signal": "SIGTERM"}}),
        "running": db.run("report", {"n": 8}, "running",
                          {"schedule": DAY + "12:00:00", "running": DAY + "12:00:01"}, output=b"half"),
        "scheduled": db.run("report", {"n": 9}, "scheduled", {"schedule": "2026-11-03T12:00:00"}),
        "skipped": db.run("report", {"n": 10}, "skipped", {"schedule": DAY + "08:00:00", "skipped": DAY + "08:00:00"},
                          log=[(DAY + "08:00:00", "skipped: duplicate")]),
    }
    db.close()
    return ids


@pytest.fixture(scope="module")
def world():
    folder = short_tmpdir("al-apsis-")
    apsis_db = f"{folder}/apsis.db"
    ids = make_history(apsis_db)
    data = f"{folder}/data"
    first = cli("import-apsis", apsis_db, "--data", data)
    # A job of the same name exists here: its imported runs are its history.
    write_job(f"{folder}/jobs", "report", "params: [n]\nprogram: 'echo report {{ n }}'\n")
    srv = Server(f"{folder}/jobs", data).start()
    again = srv.cli("import-apsis", apsis_db, "--data", data)  # while the server runs
    yield {"srv": srv, "ids": ids, "first": first, "again": again, "apsis_db": apsis_db, "data": data,
           "folder": folder}
    srv.stop()
    _kill_agents(data)
    shutil.rmtree(folder, ignore_errors=True)


def by_apsis_id(srv):
    runs = {}
    for item in srv.runs():
        run = srv.get(f"/api/v1/runs/{item['run_id']}")
        runs[run_apsis_id(srv, run)] = run
    return runs


def run_apsis_id(srv, run):
    log = srv.get(f"/api/v1/runs/{run['run_id']}/log")["items"]
    line = [e["message"] for e in log if e["message"].startswith("imported from apsis run ")][0]
    return line.split()[4]


def test_every_run_comes_over_with_its_state_times_args_and_exit(world):
    assert world["first"].returncode == 0, world["first"].stderr
    assert world["first"].stdout.startswith(f"{world['apsis_db']}: imported 6 runs; 5 log lines; 4 outputs (31 bytes); "
                                              "2 unfinished in apsis")
    runs = by_apsis_id(world["srv"])
    ok, fail, killed = runs["r1"], runs["r2"], runs["r3"]
    assert (ok["job_id"], ok["args"], ok["state"], ok["exit_code"]) == ("prices/load", {"date": "2026-11-02"},
                                                                        "success", 0)
    assert ok["times"]["schedule"] == "2026-11-02T10:00:00Z"
    assert ok["times"]["running"] == "2026-11-02T10:00:01Z" and ok["times"]["success"] == "2026-11-02T10:00:05Z"
    assert ok["elapsed"] == 4.0
    assert (fail["state"], fail["exit_code"]) == ("failure", 3)
    assert (killed["state"], killed["signal"], killed["args"]) == ("failure", "SIGTERM", {"n": "7"})
    assert runs["r6"]["state"] == "skipped"


def test_unfinished_runs_come_in_finished_and_are_never_started(world):
    runs = by_apsis_id(world["srv"])
    running, scheduled = runs["r4"], runs["r5"]
    assert running["state"] == "error"
    assert "where it was running: its outcome is unknown" in running["message"]
    assert scheduled["state"] == "skipped"
    assert "where it was scheduled and had not started" in scheduled["message"]
    # The server has been up meanwhile, with the job 'report' loaded: nothing of these ran.
    assert [r for r in world["srv"].runs("job:report") if r["state"] not in ("error", "skipped", "failure")] == []


def test_logs_and_output_come_over(world):
    srv = world["srv"]
    runs = by_apsis_id(srv)
    log = srv.get(f"/api/v1/runs/{runs['r1']['run_id']}/log")["items"]
    assert [e["message"] for e in log][:3] == ["scheduled", "running", "success"]
    assert log[1]["time"] == "2026-11-02T10:00:01Z"
    for apsis_id, text in (("r1", b"loaded 42 prices\n"), ("r2", b"no prices\n"), ("r3", b""), ("r4", b"half")):
        status, body, _ = srv.request("GET", f"/api/v1/runs/{runs[apsis_id]['run_id']}/output")
        assert (status, body) == (200, text), apsis_id
    assert runs["r1"]["output"]["bytes_total"] == len(b"loaded 42 prices\n")
    shown = srv.cli("show", runs["r2"]["run_id"])
    assert "imported from apsis run r2" in shown.stdout and "program failed: return code 3" in shown.stdout


def test_imported_runs_are_found_by_the_run_filter(world):
    found = world["srv"].runs("date=2026-11-02")
    assert [r["job_id"] for r in found] == ["prices/load"]
    assert len(world["srv"].runs("job:report state:fail")) == 1


def test_importing_again_adds_nothing_and_says_so(world):
    again = world["again"]
    assert again.returncode == 0, again.stderr
    assert "imported 0 runs" in again.stdout and "6 already imported before" in again.stdout
    assert len(world["srv"].runs()) == 6


def test_a_foreign_file_is_refused_and_nothing_changes(world):
    result = cli("import-apsis", f"{world['data']}/apsis-lite.db", "--data", world["data"])
    assert result.returncode == 1
    assert "this is an apsis-lite database, not an apsis one" in result.stderr
    assert "nothing was imported" in result.stderr
    assert len(world["srv"].runs()) == 6


@pytest.mark.parametrize("kind, message", [
    ("text", "not an SQLite database"),
    ("other", "not an apsis database: no table 'runs'"),
    ("partial", "not an apsis database: table 'runs' lacks args, job_id"),
])
def test_a_file_that_is_not_apsis_is_said_to_be_so(tmp_path, kind, message):
    from apsis_lite.store.apsis_import import NotApsisDatabase, open_apsis
    path = tmp_path / f"{kind}.db"
    if kind == "text":
        path.write_text("date,price\n2026-11-02,4\n")
    else:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE prices (d TEXT)" if kind == "other" else
                     "CREATE TABLE runs (run_id TEXT, timestamp REAL, state TEXT, times TEXT)")
        conn.close()
    with pytest.raises(NotApsisDatabase, match=message):
        open_apsis(path)


def test_a_missing_file_is_a_usage_error(world):
    result = cli("import-apsis", f"{world['folder']}/nope.db", "--data", world["data"])
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_large_output_is_streamed_not_held_in_memory(tmp_path):
    from apsis_lite.store.apsis_import import Importer, open_apsis
    from apsis_lite.store.database import Store
    db = ApsisDB(tmp_path / "apsis.db")
    big = b"0123456789abcdef" * (1 << 20)  # 16 MiB, compressed to a few KiB
    db.run("big", {}, "success", {"schedule": DAY + "10:00:00", "success": DAY + "10:01:00"},
           output=big, compression="gzip")
    db.close()
    del big
    store = Store(str(tmp_path / "data" / "apsis-lite.db"))
    src, has_output = open_apsis(tmp_path / "apsis.db")
    importer = Importer(store, src, has_output, "apsis.db", time.time())
    rows = list(importer.rows())
    tracemalloc.start()
    importer.import_batch(rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert importer.tally.output_bytes == 16 << 20
    assert peak < 6 << 20, f"peak {peak} bytes while importing 16 MiB of output"
    assert store.read_output(1, 16 * 1048576 - 16) == b"0123456789abcdef"
    store.close()
    src.close()


def test_a_file_damaged_past_its_first_pages_ends_in_a_message_not_a_traceback(tmp_path):
    """A damaged apsis file is found out only while its runs are read: one message, what was
    imported before stays, and no traceback (``cli`` checks)."""
    db = ApsisDB(tmp_path / "apsis.db")
    for n in range(400):
        db.run("report", {"n": n}, "success", {"schedule": DAY + "10:00:00", "success": DAY + "10:00:01"},
               log=[(DAY + "10:00:01", "done " + "x" * 500)])
    db.close()
    path = tmp_path / "apsis.db"
    data = bytearray(path.read_bytes())
    page = 4096
    for start in range(len(data) // 2 // page * page, len(data) - page, 3 * page):
        data[start:start + page] = b"\xff" * page  # whole pages of garbage, past the schema
    path.write_bytes(bytes(data))
    result = cli("import-apsis", str(path), "--data", str(tmp_path / "data"))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "run the same command again" in result.stderr or "not an apsis database" in result.stderr, \
        result.stderr

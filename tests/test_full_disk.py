"""A full disk, for real: the data folder on a small tmpfs that the test fills.

While the disk is full the server keeps serving reads, says what is wrong
(``/alive`` 503, ``/stats``, a banner), refuses changes with 503, and loses,
doubles or wedges nothing; when space returns it goes on by itself.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, Server, short_tmpdir, write_job

DISK_SIZE = "24m"


@pytest.fixture
def small_disk():
    """A fresh tmpfs of DISK_SIZE, mounted for this test (needs root or CAP_SYS_ADMIN)."""
    mount_point = Path(short_tmpdir("al-disk-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0755", "tmpfs",
                           str(mount_point)], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(mount_point, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs for a full disk here (mount says: {done.stderr.strip()}); "
                    "these tests need root or CAP_SYS_ADMIN")
    yield mount_point
    _kill_agents_under(mount_point)
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
    shutil.rmtree(mount_point, ignore_errors=True)


def _kill_agents_under(root):
    pid_file = Path(root) / "data" / "agent" / "agent.pid"
    try:
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        pass


def fill(disk):
    """Fill the tmpfs to the last byte."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (1 << 20, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free < 64 * 1024


def free(disk):
    (disk / "filler").unlink()


def disk_server(jobs_dir, disk, log_dir):
    srv = Server(jobs_dir, disk / "data")
    srv.log_path = Path(log_dir) / "server.log"  # not on the disk that fills
    return srv


def alive(srv):
    status, body, _ = srv.request("GET", "/api/v1/alive", token=False)
    return status, json.loads(body)


def interval_jobs(jobs_dir, ledger, n=3):
    for i in range(n):
        write_job(jobs_dir, f"tick{i}", f"""
            params: [time]
            program: "echo tick{i} {{{{ time }}}} >> {ledger}"
            schedule: {{type: interval, interval: 1s}}
        """)


def test_a_full_disk_loses_doubles_and_wedges_nothing(jobs_dir, small_disk, tmp_path):
    ledger = tmp_path / "ledger"
    interval_jobs(jobs_dir, ledger)
    srv = disk_server(jobs_dir, small_disk, tmp_path).start()
    try:
        srv.wait_for(lambda: len(srv.runs("state:success")) >= 6, what="first runs")
        fill(small_disk)
        srv.wait_for(lambda: alive(srv)[0] == 503, timeout=30, what="/alive to say the disk is full")
        status, body = alive(srv)
        assert body["ok"] is False and "disk is full" in body["error"], body
        # Reads go on; the problem is shown; changes are refused with the reason.
        stats = srv.get("/api/v1/stats")
        assert "disk is full" in stats["health"]["storage_error"]
        status, body, headers = srv.request("POST", "/api/v1/runs", {"program": "true"})
        assert status == 503 and "disk is full" in json.loads(body)["error"], body
        assert headers.get("Retry-After")
        status, page, _ = srv.request("GET", "/jobs")
        assert status == 200 and b"Scheduler problem" in page and b"disk is full" in page
        time.sleep(4)  # slots fall due while nothing can be written
        full_until = time.time()
        free(small_disk)
        srv.wait_for(lambda: alive(srv)[0] == 200, timeout=30, what="scheduling to resume")
        time.sleep(3)
        now = time.time()
        runs = srv.runs()
        log = srv.log()
    finally:
        srv.stop()
    assert "Traceback" not in log, log
    assert "the database can be written again" in log
    # No slot ran twice.
    lines = ledger.read_text().splitlines()
    assert len(lines) == len(set(lines)), sorted(l for l in lines if lines.count(l) > 1)
    # Every slot from the first on has exactly one run; none is stuck.
    for i in range(3):
        mine = [r for r in runs if r["job_id"] == f"tick{i}"]
        slots = sorted(r["args"]["time"] for r in mine)
        assert len(slots) == len(set(slots)), f"a slot of tick{i} has two runs"
        times = sorted(r["times"]["schedule"] for r in mine)
        first = _epoch(times[0])
        due = [t for t in times if _epoch(t) <= now - 2]
        assert len(due) == round(_epoch(due[-1]) - first) + 1, f"tick{i} has a hole in its slots"
        for r in mine:
            if _epoch(r["times"]["schedule"]) <= now - 2:
                assert r["state"] in ("success", "error"), r
                if r["state"] == "error":  # a run the full disk cut short says why
                    assert r["message"], r
        # The slots due while the disk was full ran after it was freed.
        during = [r for r in mine if full_until - 3 <= _epoch(r["times"]["schedule"]) <= full_until]
        assert during and all(r["state"] == "success" for r in during), during


def test_sigterm_on_a_full_disk_exits_cleanly(jobs_dir, small_disk, tmp_path):
    interval_jobs(jobs_dir, tmp_path / "ledger", n=1)
    srv = disk_server(jobs_dir, small_disk, tmp_path).start()
    srv.wait_for(lambda: srv.runs("state:success"), what="a run")
    fill(small_disk)
    srv.wait_for(lambda: alive(srv)[0] == 503, timeout=30, what="the full disk to be seen")
    proc = srv.proc
    srv.stop()
    assert proc.returncode == 0
    log = srv.log()
    assert "Traceback" not in log, log
    assert "stopped" in log
    for name in ("server.url", "server.pid", "notify.sock"):
        assert not (small_disk / "data" / name).exists(), name


def test_a_server_started_on_a_full_disk_waits_for_space(jobs_dir, small_disk, tmp_path):
    ledger = tmp_path / "ledger"
    interval_jobs(jobs_dir, ledger, n=1)
    srv = disk_server(jobs_dir, small_disk, tmp_path).start()
    srv.wait_for(lambda: srv.runs("state:success"), what="a run")
    srv.stop()
    fill(small_disk)
    out = open(tmp_path / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "apsis_lite", "serve", "--jobs", str(jobs_dir),
                             "--data", str(small_disk / "data"), "--port", "0"],
                            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        url = _wait_for_line(tmp_path / "server.log", proc, "listening on ")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/api/v1/alive", timeout=5)
        assert refused.value.code == 503
        body = json.loads(refused.value.read())
        assert "cannot be" in body["error"] and "starting" in body["error"], body
        time.sleep(2)
        assert proc.poll() is None, "the server died on a full disk"
        lines_before = ledger.read_text().count("\n")
        free(small_disk)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/api/v1/alive", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("the server did not start once there was space")
        deadline = time.monotonic() + 20
        while ledger.read_text().count("\n") <= lines_before:
            assert time.monotonic() < deadline, "nothing was scheduled after space returned"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        out.close()
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log
    assert (small_disk / "data" / "server.url").exists() is False


def _wait_for_line(path, proc, marker, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, path.read_text()
        for line in path.read_text().splitlines():
            if marker in line:
                return line.split(marker, 1)[1].split(",")[0].strip()
        time.sleep(0.05)
    raise AssertionError(f"no {marker!r} line:\n{path.read_text()}")


def _epoch(iso):
    from apsis_lite.timeutil import parse_time
    return parse_time(iso).timestamp()

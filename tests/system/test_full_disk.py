"""A full disk, for real: the data folder on a small tmpfs that the test fills.

While the disk is full the server keeps serving reads, says what is wrong
(``/alive`` 503, ``/stats``, a banner), refuses changes with 503, and loses,
doubles or wedges nothing; when space returns it goes on by itself.
"""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

import strategies_output
from conftest import ROOT, Server, short_tmpdir, write_job

from apsis_lite.agent import AgentClient, is_alive, read_json, request_stop, write_spec
from apsis_lite.agent.sink import OutputSink

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


# --- the shepherd on a full disk ------------------------------------------------------------

LOST = re.compile(rb"\n\[apsis-lite: (\d+) bytes of output lost: no space left on device\]\n")


def lines(first, last):
    return b"".join(b"line %06d\n" % i for i in range(first, last))


def wait_until_storing_is_tried_again(sink):
    time.sleep(max(0.0, sink.retry.at - time.monotonic()))


def test_output_lost_in_the_head_is_counted_and_marked_where_it_was(small_disk):
    run_dir = small_disk / "run"
    run_dir.mkdir()
    sink = OutputSink(str(run_dir), head=1 << 20, tail=1 << 20)
    stream = lines(0, 10_000)
    sink.write(stream[:5000])
    fill(small_disk)
    for i in range(5000, 60_000, 100):  # stored until the file's last page is full
        sink.write(stream[i:i + 100])
    free(small_disk)
    wait_until_storing_is_tried_again(sink)
    sink.write(stream[60_000:])
    info = sink.finish()
    out = (run_dir / "output").read_bytes()
    before, count, after = LOST.split(out)
    assert len(before) >= 5000 and before == stream[:len(before)]
    assert after == stream[60_000:] and len(before) + int(count) == 60_000
    assert info == {"bytes_total": len(stream), "bytes_kept": len(before) + len(after),
                    "bytes_dropped": 0, "bytes_lost": int(count),
                    "error": "cannot store output: no space left on device"}


def test_output_lost_past_the_head_is_marked_in_the_tail(small_disk):
    run_dir = small_disk / "run"
    run_dir.mkdir()
    head, tail = 1100, 1 << 20
    sink = OutputSink(str(run_dir), head=head, tail=tail)
    stream = lines(0, 100_000)  # 1.1 MB: more than head and tail
    dropped = len(stream) - head - tail
    sink.write(stream[:300_000])
    fill(small_disk)
    for i in range(300_000, 900_000, 4096):
        sink.write(stream[i:min(i + 4096, 900_000)])
    free(small_disk)
    wait_until_storing_is_tried_again(sink)
    sink.write(stream[900_000:])
    info = sink.finish()
    out = (run_dir / "output").read_bytes()
    dropped_line = b"\n[apsis-lite: %d bytes of output dropped]\n" % dropped
    assert out.startswith(stream[:head] + dropped_line)
    before, count, after = LOST.split(out[head + len(dropped_line):])
    window = stream[head + dropped:]
    assert len(before) >= 300_000 - head - dropped and before == window[:len(before)]
    assert after == stream[900_000:] and len(before) + int(count) + len(after) == len(window)
    assert info == {"bytes_total": len(stream), "bytes_kept": head + len(before) + len(after),
                    "bytes_dropped": dropped, "bytes_lost": int(count),
                    "error": "cannot store output: no space left on device"}
    assert not (run_dir / "output.tail").exists()


def test_a_tail_that_finds_no_room_at_the_end_is_given_up_not_waited_for(small_disk):
    run_dir = small_disk / "run"
    run_dir.mkdir()
    sink = OutputSink(str(run_dir), head=1000, tail=1 << 20)
    stream = lines(0, 50_000)  # 550 kB, nearly all of it in the tail
    sink.write(stream)
    fill(small_disk)
    info = sink.finish()
    assert (run_dir / "output").read_bytes() == stream[:1000] + (
        b"\n[apsis-lite: %d bytes of output lost: no space left on device]\n" % (len(stream) - 1000))
    assert info["bytes_lost"] == len(stream) - 1000 and info["bytes_kept"] == 1000
    assert not (run_dir / "output.tail").exists()  # its room is given back at once


def test_the_line_that_says_what_was_lost_waits_for_room(small_disk):
    run_dir = small_disk / "run"
    run_dir.mkdir()
    sink = OutputSink(str(run_dir), head=1 << 20, tail=1 << 20)
    page = os.sysconf("SC_PAGE_SIZE")
    stream = lines(0, 1000)[:page + 500]
    sink.write(stream[:page])  # the file's pages are full
    fill(small_disk)
    sink.write(stream[page:])
    for _ in range(3):
        with pytest.raises(OSError) as no_room:
            sink.finish()
        assert no_room.value.errno == errno.ENOSPC
    free(small_disk)
    info = sink.finish()
    assert (run_dir / "output").read_bytes() == stream[:page] + (
        b"\n[apsis-lite: 500 bytes of output lost: no space left on device]\n")
    assert info["bytes_lost"] == 500


MARKER = re.compile(rb"\n\[apsis-lite: (\d+) bytes of output (dropped|lost: no space left on device)\]\n")


# More examples for a longer search: APSIS_LITE_FUZZ_EXAMPLES=20000 (a quarter of them here).
@settings(deadline=None, max_examples=max(int(os.environ.get("APSIS_LITE_FUZZ_EXAMPLES", "400")) // 4, 25),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sizes=strategies_output.sizes, steps=strategies_output.steps)
def test_stored_output_and_its_lines_add_up_to_what_was_printed(small_disk, sizes, steps):
    """Whenever the disk fills and empties, ``output`` is the stream's head,
    then its tail, with lines that stand for exactly the bytes dropped or
    lost at the places they are missing from, and the counts agree."""
    head, tail = sizes
    run_dir = small_disk / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    total = sum(step[1] for step in steps if step[0] == "write")
    stream = b"".join(b"%09d\n" % i for i in range(0, total + 10, 10))[:total]
    full = False
    sink = OutputSink(str(run_dir), head=head, tail=tail)
    offset = 0
    try:
        for step in steps:
            if step[0] == "write":
                sink.write(stream[offset:offset + step[1]])
                offset += step[1]
            elif step[0] == "fill":
                fill(small_disk)
                full = True
            elif step[0] == "free" and full:
                free(small_disk)
                full = False
            elif step[0] == "later":
                sink.retry.at = 0.0
        try:
            info = sink.finish()
        except OSError as exc:
            assert full and exc.errno == errno.ENOSPC  # only the lines saying what was lost wait
            free(small_disk)
            full = False
            info = sink.finish()
        out = (run_dir / "output").read_bytes()
    finally:
        sink.close()
        if full:
            free(small_disk)
    pos = kept = lost = dropped = 0
    pieces = MARKER.split(out)
    for i in range(0, len(pieces), 3):
        data = pieces[i]
        assert data == stream[pos:pos + len(data)], f"stored bytes not the stream's at {pos}"
        pos += len(data)
        kept += len(data)
        if i + 1 < len(pieces):
            count, what = int(pieces[i + 1]), pieces[i + 2]
            assert count > 0
            if what == b"dropped":
                assert pos >= head and dropped == 0
                dropped = count
            else:
                lost += count
            pos += count
    assert pos == total
    assert dropped == max(0, total - head - tail)
    assert info["bytes_total"] == total and info["bytes_kept"] == kept
    assert info["bytes_dropped"] == dropped and info.get("bytes_lost", 0) == lost
    assert not (run_dir / "output.tail").exists()


@pytest.fixture
def agent_client(tmp_path):
    from agents import AGENT_COMMAND, agent_env, terminate_agent
    client = AgentClient(str(tmp_path / "agent"), AGENT_COMMAND, env=agent_env())
    yield client
    terminate_agent(client)


def test_a_shepherd_on_a_full_disk_runs_the_program_and_holds_its_result_until_there_is_room(
        small_disk, agent_client, tmp_path):
    from agents import make_spec, wait_for
    run_dir = str(small_disk / "run")
    flag = tmp_path / "flag"
    ledger = tmp_path / "ledger"
    write_spec(run_dir, make_spec("full", ["sh", "-c", f"echo $$ >> {ledger}; echo lost; "
                                           f"while [ ! -e {flag} ]; do sleep 0.01; done; echo lost too"]))
    fill(small_disk)
    first = agent_client.start(run_dir)
    wait_for(lambda: ledger.exists())  # started, though neither shepherd.json nor pid.json could be written
    program = int(ledger.read_text())
    time.sleep(0.5)
    for name in ("shepherd.json", "pid.json", "result.json"):
        assert not os.path.exists(os.path.join(run_dir, name)), name
    flag.touch()
    wait_for(lambda: not os.path.exists(f"/proc/{program}/cmdline") or
             open(f"/proc/{program}/stat").read().split(") ")[1][0] == "Z")
    time.sleep(1.0)
    assert is_alive(run_dir) and read_json(run_dir, "result.json") is None
    # Busy waiting for room, it is not handed another run.
    other = str(tmp_path / "other")
    write_spec(other, make_spec("other", ["echo", "other"]))
    assert agent_client.start(other) != first
    assert wait_for(lambda: read_json(other, "result.json"))["exit_code"] == 0
    free(small_disk)
    result = wait_for(lambda: read_json(run_dir, "result.json"), timeout=15)
    assert result["exit_code"] == 0 and result["error"] is None
    assert result["output"]["bytes_lost"] == len(b"lost\nlost too\n")
    assert open(os.path.join(run_dir, "output"), "rb").read() == (
        b"\n[apsis-lite: 14 bytes of output lost: no space left on device]\n")
    assert read_json(run_dir, "pid.json")["pid"] == program
    assert read_json(run_dir, "shepherd.json")["pid"] == first
    wait_for(lambda: not is_alive(run_dir))
    assert ledger.read_text().split() == [str(program)]


def test_a_stop_asked_for_before_the_shepherd_could_write_its_pid_file_is_carried_out(
        small_disk, agent_client, tmp_path):
    from agents import make_spec, wait_for
    run_dir = str(small_disk / "run")
    ledger = tmp_path / "ledger"
    write_spec(run_dir, make_spec("full", ["sh", "-c", f"echo $$ >> {ledger}; exec sleep 300"]))
    fill(small_disk)
    agent_client.start(run_dir)
    wait_for(lambda: ledger.exists())
    time.sleep(2.0)  # the shepherd's pauses between tries grow meanwhile
    free(small_disk)
    assert request_stop(run_dir, "SIGTERM", 5.0)  # alive, but no shepherd.json to find it by
    assert not os.path.exists(os.path.join(run_dir, "shepherd.json"))
    result = wait_for(lambda: read_json(run_dir, "result.json"), timeout=15)
    assert result["stopped"] and result["signal"] == "SIGTERM"


def test_a_run_that_ends_on_a_full_disk_is_recorded_once_when_there_is_room(jobs_dir, small_disk, tmp_path):
    ledger, ended = tmp_path / "ledger", tmp_path / "ended"
    write_job(jobs_dir, "talk", f"""
        program: "echo started >> {ledger}; pad=$(printf %01000d 0); i=0;
                  while [ $i -lt 60 ]; do i=$((i+1)); echo line $i $pad; sleep 0.05; done; touch {ended}"
    """)
    srv = disk_server(jobs_dir, small_disk, tmp_path).start()
    try:
        rid = srv.post("/api/v1/runs", {"job_id": "talk"})["run_id"]
        srv.wait_for(lambda: srv.request("GET", f"/api/v1/runs/{rid}/output")[1].startswith(b"line 1 0"),
                     what="the first output")
        fill(small_disk)
        srv.wait_for(ended.exists, timeout=30, what="the program to end")
        time.sleep(3)  # the disk stays full a while after the end
        assert srv.get(f"/api/v1/runs/{rid}")["state"] == "running"
        free(small_disk)
        run = srv.wait_run(rid, timeout=30)
        _, output, _ = srv.request("GET", f"/api/v1/runs/{rid}/output")
        runs = srv.runs()
        log = srv.log()
    finally:
        srv.stop()
    assert "Traceback" not in log, log
    assert (run["state"], run["exit_code"]) == ("success", 0), run
    assert [r["run_id"] for r in runs if r["job_id"] == "talk"] == [rid]
    assert ledger.read_text() == "started\n"  # started once
    stream = b"".join(b"line %d %s\n" % (i, b"0" * 1000) for i in range(1, 61))
    before, count, after = LOST.split(output)
    assert run["message"] == f"exit code 0 ({int(count)} bytes of output lost: the disk was full)"
    assert before.startswith(b"line 1 0") and before == stream[:len(before)]
    assert after == stream[len(stream) - len(after):] and len(before) + int(count) + len(after) == len(stream)


def test_a_stop_that_finds_no_room_for_its_request_is_delivered_once_there_is(small_disk, tmp_path):
    """The database has room (another disk) but the run folders' disk is full."""
    from apsis_lite.config import load_config
    from apsis_lite.engine.core import Engine
    from apsis_lite.engine.launcher import LocalLauncher
    from apsis_lite.store.database import Store

    data = Path(short_tmpdir("al-data-"))
    os.symlink(small_disk, data / "runs")
    config = load_config(None, data_dir=str(data), jobs_dir=str(tmp_path), sweep_interval=1000)
    store = Store(config.db_path)
    engine = Engine(config, store, LocalLauncher(config))
    try:
        engine.set_jobs({}, [])
        engine.recover()
        run = engine.submit_program(f"echo started > {tmp_path}/started; exec sleep 60")
        engine.tick(engine.clock())
        deadline = time.monotonic() + 20
        while store.get_run(run.run_id).state != "running":
            assert time.monotonic() < deadline, store.run_log(run.run_id)
            engine._next_sweep = 0
            engine.tick(engine.clock())
            time.sleep(0.05)
        fill(small_disk)
        stopped = engine.stop(run.run_id)  # committed; its request finds no room
        assert stopped.state == "stopping"
        time.sleep(1)
        assert store.get_run(run.run_id).state == "stopping"  # still running: nothing was delivered
        free(small_disk)
        deadline = time.monotonic() + 20
        while store.get_run(run.run_id).state == "stopping":
            assert time.monotonic() < deadline, store.run_log(run.run_id)
            engine._next_sweep = 0  # the sweep delivers it again, then collects the result
            engine.tick(engine.clock())
            time.sleep(0.1)
        after = store.get_run(run.run_id)
        assert (after.state, after.message) == (
            "success", "killed by SIGTERM (stopped): it was asked to stop with that signal"), after
    finally:
        engine.launcher.close()
        store.close()
        pid_file = data / "agent" / "agent.pid"
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass
        shutil.rmtree(data, ignore_errors=True)

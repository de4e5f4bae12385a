"""Tests of the agent, shepherds and run-folder protocol, with real processes.

Each test gets its own agent, started the way the server starts it (through
AgentClient), and runs real programs; nothing is mocked, because what matters
here is how processes, signals, pipes and files behave together.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from apsis_lite.agent import (
    AgentClient,
    AgentError,
    is_alive,
    read_json,
    request_stop,
    revoke,
    send_signal,
    signal_from_name,
    write_spec,
)
from apsis_lite.agent.protocol import atomic_write_json, unix_address
from apsis_lite.agent.shepherd import Shepherd

from agents import AGENT_COMMAND, MiB, ROOT, agent_env, make_spec, process_gone, terminate_agent, wait_for  # noqa: F401



def wait_result(run_dir, timeout=30.0) -> dict:
    return wait_for(lambda: read_json(run_dir, "result.json"), timeout)


def output_of(run_dir) -> bytes:
    try:
        return (Path(run_dir) / "output").read_bytes()
    except FileNotFoundError:  # The shepherd has not got that far yet.
        return b""


def wait_until_file(path) -> str:
    """A shell loop that ends once ``path`` exists: a program the test lets finish."""
    return f'while [ ! -e "{path}" ]; do sleep 0.01; done'


@pytest.fixture
def state_dir(tmp_path) -> str:
    # Deliberately under tmp_path, whose long names exercise the
    # /proc/self/fd route around the 108-byte Unix socket path limit.
    return str(tmp_path / "agent-state-folder-with-a-rather-long-name-to-test-socket-paths")


@pytest.fixture
def client(state_dir):
    client = AgentClient(state_dir, AGENT_COMMAND, env=agent_env())
    yield client
    terminate_agent(client)


@pytest.fixture
def start(client, tmp_path):
    """start(run_id, argv, **spec overrides) -> run_dir, through the agent."""

    def start(run_id, argv, **overrides):
        run_dir = str(tmp_path / "runs" / run_id)
        write_spec(run_dir, make_spec(run_id, argv, **overrides))
        client.start(run_dir)
        return run_dir

    return start


# ---------------------------------------------------------------------------


def test_echo_output_and_result(client, tmp_path):
    run_dir = str(tmp_path / "runs" / "r1")
    write_spec(run_dir, make_spec("r1", ["echo", "hello world"]))
    shepherd_pid = client.start(run_dir)

    result = wait_result(run_dir)
    assert result["exit_code"] == 0
    assert result["signal"] is None
    assert result["error"] is None
    assert result["timed_out"] is False
    assert result["stopped"] is False
    assert result["output"] == {"bytes_total": 12, "bytes_kept": 12, "bytes_dropped": 0}
    assert result["start"] <= result["end"]
    assert 0 <= result["elapsed"] < 5
    assert set(result["rusage"]) == {"utime", "stime", "maxrss_kb"}
    assert result["rusage"]["maxrss_kb"] > 0
    assert output_of(run_dir) == b"hello world\n"

    files = set(os.listdir(run_dir))
    assert {"spec.claimed.json", "shepherd.json", "pid.json", "output", "result.json"} <= files
    assert not files & {"spec.json", "output.tail", "spec.revoked.json"}
    assert not any(name.endswith(".tmp") for name in files)

    shepherd = read_json(run_dir, "shepherd.json")
    assert shepherd["pid"] == shepherd_pid
    assert isinstance(shepherd["start_time"], int)
    pid = read_json(run_dir, "pid.json")
    assert pid["pid"] == pid["pgid"] != shepherd_pid
    assert isinstance(pid["start_time"], int)
    assert pid["time"] == pytest.approx(result["start"])

    wait_for(lambda: not is_alive(run_dir))
    assert request_stop(run_dir, "TERM", 1) is False
    assert send_signal(run_dir, "TERM") is False


def test_failing_command_exit_code(start):
    run_dir = start("r1", ["bash", "-c", "echo oops >&2; exit 7"])
    result = wait_result(run_dir)
    assert result["exit_code"] == 7
    assert result["error"] is None
    assert output_of(run_dir) == b"oops\n"


def test_exec_failure_is_reported(start):
    run_dir = start("r1", ["no-such-program-xyz", "arg"])
    result = wait_result(run_dir)
    assert result["exit_code"] is None
    assert result["signal"] is None
    assert result["error"] == "exec failed: cannot run 'no-such-program-xyz': No such file or directory"
    assert output_of(run_dir) == b""


def test_bad_cwd_is_reported(start):
    run_dir = start("r1", ["true"], cwd="/nonexistent/dir")
    result = wait_result(run_dir)
    assert result["exit_code"] is None
    assert "cannot chdir to '/nonexistent/dir'" in result["error"]


def test_bad_spec_is_reported(start):
    run_dir = start("r1", [])
    result = wait_result(run_dir)
    assert result["exit_code"] is None
    assert result["error"].startswith("bad spec: argv")


def test_env_and_cwd_are_honoured(start, tmp_path):
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    env = {"PATH": os.environ["PATH"], "GREETING": "bonjour"}
    run_dir = start(
        "r1", ["bash", "-c", 'echo "$GREETING"; pwd; echo "${HOME-unset}"'],
        env=env, cwd=str(workdir),
    )
    assert wait_result(run_dir)["exit_code"] == 0
    assert output_of(run_dir).decode() == f"bonjour\n{workdir}\nunset\n"


def test_program_gets_only_devnull_stdin_and_the_output_pipe(start):
    # The lock and the shepherd's other descriptors are close-on-exec: the
    # program must not keep the run "alive" after the shepherd is gone.
    run_dir = start("r1", ["bash", "-c", "ls /proc/$$/fd; readlink /proc/$$/fd/0; echo stdin:; cat"])
    assert wait_result(run_dir)["exit_code"] == 0
    assert output_of(run_dir).decode() == "0\n1\n2\n/dev/null\nstdin:\n"


def test_output_is_readable_while_running(start, tmp_path):
    go = tmp_path / "go"
    run_dir = start("r1", ["bash", "-c", f"echo first; {wait_until_file(go)}; echo second"])
    wait_for(lambda: output_of(run_dir) == b"first\n")
    assert read_json(run_dir, "result.json") is None
    assert is_alive(run_dir)
    go.touch()
    wait_result(run_dir)
    assert output_of(run_dir) == b"first\nsecond\n"


def test_stop_kills_the_whole_process_tree(start):
    run_dir = start("r1", ["bash", "-c", "sleep 100 & echo $!; sleep 100"])
    grandchild = int(wait_for(lambda: output_of(run_dir).strip()))
    program = read_json(run_dir, "pid.json")["pid"]
    assert not process_gone(grandchild)

    assert request_stop(run_dir, "TERM", 5) is True
    result = wait_result(run_dir)
    assert result["stopped"] is True
    assert result["timed_out"] is False
    assert result["exit_code"] is None
    assert result["signal"] == "SIGTERM"
    assert result["elapsed"] < 5
    assert read_json(run_dir, "stop.json") == {"signal": "SIGTERM", "grace_period": 5.0}
    wait_for(lambda: process_gone(program) and process_gone(grandchild))


def test_stop_escalates_to_sigkill(start):
    run_dir = start("r1", ["bash", "-c", "trap '' TERM; echo ready; sleep 100"])
    wait_for(lambda: output_of(run_dir) == b"ready\n")
    program = read_json(run_dir, "pid.json")["pid"]

    assert request_stop(run_dir, "SIGTERM", 0.3) is True
    result = wait_result(run_dir)
    assert result["stopped"] is True
    assert result["signal"] == "SIGKILL"
    assert 0.3 <= result["elapsed"] < 5
    wait_for(lambda: process_gone(program))


# A program that leaves a grandchild ignoring SIGTERM in its group, writes the
# grandchild's pid, and itself dies on SIGTERM (dash's ``wait`` is interrupted).
STUBBORN_GRANDCHILD = "sh -c 'trap \"\" TERM; exec sleep 100' & echo $!; wait"


def stubborn_program(run_dir):
    """(program pid, grandchild pid) once the program above is under way."""
    grandchild = int(wait_for(lambda: output_of(run_dir).strip()))
    wait_for(lambda: read_json(run_dir, "pid.json"))
    program = read_json(run_dir, "pid.json")["pid"]
    # Until the grandchild has run ``trap``, SIGTERM would still kill it.
    wait_for(lambda: Path(f"/proc/{grandchild}/cmdline").read_bytes().startswith(b"sleep"))
    return program, grandchild


def test_stop_kills_what_the_program_leaves_in_its_group(start):
    run_dir = start("r1", ["sh", "-c", STUBBORN_GRANDCHILD])
    program, grandchild = stubborn_program(run_dir)

    stopped_at = time.monotonic()
    assert request_stop(run_dir, "TERM", 1.0) is True
    wait_for(lambda: process_gone(program))
    time.sleep(0.3)  # The program is gone, the grace period is not over...
    assert not process_gone(grandchild)
    assert read_json(run_dir, "result.json") is None  # ...so the run is not over.
    assert is_alive(run_dir)

    result = wait_result(run_dir)
    assert process_gone(grandchild)
    assert 1.0 <= time.monotonic() - stopped_at < 6
    assert result["stopped"] is True
    assert result["signal"] == "SIGTERM"  # The program's own end.
    assert result["group_killed"] == 1
    assert result["group_left"] == 0
    assert result["elapsed"] >= 1.0  # It ends when its group does.


def test_timeout_kills_what_the_program_leaves_in_its_group(start):
    run_dir = start("r1", ["sh", "-c", STUBBORN_GRANDCHILD],
                    timeout={"duration": 0.5, "signal": "SIGTERM"},
                    stop={"signal": "SIGTERM", "grace_period": 0.5})
    program, grandchild = stubborn_program(run_dir)
    result = wait_result(run_dir)
    assert process_gone(program) and process_gone(grandchild)
    assert result["timed_out"] is True
    assert result["signal"] == "SIGTERM"
    assert result["group_killed"] == 1
    assert 1.0 <= result["elapsed"] < 6


def test_stop_does_not_wait_for_a_group_that_obeys(start):
    run_dir = start("r1", ["sh", "-c", "sleep 100 & echo $!; wait"])
    grandchild = int(wait_for(lambda: output_of(run_dir).strip()))
    assert request_stop(run_dir, "TERM", 30) is True
    result = wait_result(run_dir, timeout=10)
    assert process_gone(grandchild)
    assert result["group_killed"] == 0
    assert result["elapsed"] < 5


def test_stop_requested_before_the_run_started(client, tmp_path):
    run_dir = str(tmp_path / "runs" / "r1")
    write_spec(run_dir, make_spec("r1", ["sleep", "100"]))
    assert request_stop(run_dir, "term", 1) is False  # No shepherd yet...
    client.start(run_dir)
    result = wait_result(run_dir)  # ...but the one that starts honours it.
    assert result["stopped"] is True
    assert result["signal"] == "SIGTERM"


def test_timeout(start):
    run_dir = start("r1", ["sleep", "100"], timeout={"duration": 0.3, "signal": "SIGTERM"})
    result = wait_result(run_dir)
    assert result["timed_out"] is True
    assert result["stopped"] is False
    assert result["signal"] == "SIGTERM"
    assert 0.3 <= result["elapsed"] < 10


def test_timeout_escalates_after_the_stop_grace_period(start):
    run_dir = start(
        "r1", ["bash", "-c", "trap '' TERM; sleep 100"],
        timeout={"duration": 0.2, "signal": "TERM"},
        stop={"signal": "SIGTERM", "grace_period": 0.2},
    )
    result = wait_result(run_dir)
    assert result["timed_out"] is True
    assert result["signal"] == "SIGKILL"
    assert 0.4 <= result["elapsed"] < 10


def test_send_signal_reaches_the_program(start):
    script = "trap 'echo got-usr1; exit 9' USR1; echo ready; while true; do sleep 0.05; done"
    run_dir = start("r1", ["bash", "-c", script])
    wait_for(lambda: output_of(run_dir) == b"ready\n")
    assert send_signal(run_dir, "usr1") is True
    result = wait_result(run_dir)
    assert result["exit_code"] == 9
    # (bash may also report that its ``sleep`` died of SIGUSR1.)
    assert output_of(run_dir).startswith(b"ready\n")
    assert output_of(run_dir).endswith(b"got-usr1\n")


def test_huge_output_uses_bounded_disk_and_memory(start):
    total = 200_000_000
    run_dir = start("r1", ["head", "-c", str(total), "/dev/zero"], output_head=MiB, output_tail=MiB)
    result = wait_result(run_dir, timeout=30)
    assert result["exit_code"] == 0
    dropped = total - 2 * MiB
    assert result["output"] == {"bytes_total": total, "bytes_kept": 2 * MiB, "bytes_dropped": dropped}

    marker = f"\n[apsis-lite: {dropped} bytes of output dropped]\n".encode()
    data = output_of(run_dir)
    assert len(data) == 2 * MiB + len(marker)
    assert data[MiB:MiB + len(marker)] == marker
    assert data.count(b"\0") == 2 * MiB
    assert not os.path.exists(os.path.join(run_dir, "output.tail"))
    # A forked copy of the agent: shared pages, plus one read chunk.
    assert result["shepherd_maxrss_kb"] < 60_000


def test_tail_holds_the_last_bytes_in_order(start):
    count = 300_000  # About 2 MB of distinct lines: the ring wraps many times.
    run_dir = start("r1", ["seq", "1", str(count)], output_head=1000, output_tail=10_000)
    result = wait_result(run_dir)
    full = "".join(f"{i}\n" for i in range(1, count + 1)).encode()
    dropped = len(full) - 11_000
    assert result["output"] == {"bytes_total": len(full), "bytes_kept": 11_000, "bytes_dropped": dropped}
    marker = f"\n[apsis-lite: {dropped} bytes of output dropped]\n".encode()
    assert output_of(run_dir) == full[:1000] + marker + full[-10_000:]
    assert output_of(run_dir).endswith(b"\n299999\n300000\n")


def test_output_past_the_head_but_within_the_tail_is_kept_whole(start):
    run_dir = start("r1", ["seq", "1", "2000"], output_head=100, output_tail=MiB)
    result = wait_result(run_dir)
    full = "".join(f"{i}\n" for i in range(1, 2001)).encode()
    assert result["output"]["bytes_dropped"] == 0
    assert output_of(run_dir) == full


@pytest.mark.parametrize("head, tail", [(0, 100), (100, 0), (0, 0), (5, 3)])
def test_output_caps_at_the_edges(start, head, tail):
    run_dir = start("r1", ["seq", "1", "1000"], output_head=head, output_tail=tail)
    result = wait_result(run_dir)
    full = "".join(f"{i}\n" for i in range(1, 1001)).encode()
    dropped = len(full) - head - tail
    marker = f"\n[apsis-lite: {dropped} bytes of output dropped]\n".encode()
    assert output_of(run_dir) == full[:head] + marker + full[len(full) - tail:]
    assert result["output"]["bytes_dropped"] == dropped


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_idle_shepherd_uses_no_cpu(start, tmp_path):
    # The program closes its output early and then idles: the shepherd must
    # sleep in poll, not spin on the closed pipe.
    go = tmp_path / "go"
    run_dir = start("r1", ["bash", "-c", f"exec >&- 2>&-; {wait_until_file(go)}"])
    shepherd = wait_for(lambda: read_json(run_dir, "pid.json")) and read_json(run_dir, "shepherd.json")["pid"]
    time.sleep(0.1)
    before = cpu_ticks(shepherd)
    time.sleep(0.5)
    assert cpu_ticks(shepherd) - before <= 1
    go.touch()
    assert wait_result(run_dir)["exit_code"] == 0


def test_background_grandchild_does_not_hold_up_the_result(start):
    run_dir = start("r1", ["bash", "-c", "sleep 30 & echo $!"])
    result = wait_result(run_dir)
    grandchild = int(output_of(run_dir))
    try:
        assert result["exit_code"] == 0
        assert result["elapsed"] < 10
        assert not process_gone(grandchild)  # Left alone, like cron does.
    finally:
        os.kill(grandchild, signal.SIGKILL)


def test_duplicate_start_runs_the_program_once(client, tmp_path):
    run_dir = str(tmp_path / "runs" / "r1")
    write_spec(run_dir, make_spec("r1", ["bash", "-c", "echo $$"]))
    client.start(run_dir)
    try:
        client.start(run_dir)  # Races with the first shepherd's claim.
    except AgentError as exc:
        assert "already claimed" in str(exc)
    result = wait_result(run_dir)
    time.sleep(0.2)
    assert result["exit_code"] == 0
    assert output_of(run_dir) == f"{read_json(run_dir, 'pid.json')['pid']}\n".encode()


def test_run_survives_agent_kill(client, start, tmp_path):
    go = tmp_path / "go"
    run_dir = start("r1", ["sh", "-c", f"{wait_until_file(go)}; echo finished"])
    wait_for(lambda: read_json(run_dir, "pid.json"))
    agent_pid = client.ping()
    os.kill(agent_pid, signal.SIGKILL)
    client._proc.wait(timeout=30)

    assert read_json(run_dir, "result.json") is None
    assert is_alive(run_dir)
    go.touch()  # the program ends after its agent is gone
    result = wait_result(run_dir)
    assert result["exit_code"] == 0
    assert output_of(run_dir) == b"finished\n"

    # The client notices the dead agent and starts a new one.
    run_dir_2 = start("r2", ["true"])
    assert wait_result(run_dir_2)["exit_code"] == 0
    assert client.ping() != agent_pid


def test_revoke_before_claim_prevents_the_start(client, tmp_path):
    run_dir = str(tmp_path / "runs" / "r1")
    write_spec(run_dir, make_spec("r1", ["touch", str(tmp_path / "ran")]))
    assert revoke(run_dir) is True
    assert revoke(run_dir) is False
    with pytest.raises(AgentError, match="already claimed or revoked"):
        client.start(run_dir)
    time.sleep(0.1)
    assert sorted(os.listdir(run_dir)) == ["spec.revoked.json"]
    assert not (tmp_path / "ran").exists()


def test_shepherd_whose_claim_loses_does_nothing(tmp_path):
    # The agent checks for spec.json, but a revoke can land between that
    # check and the shepherd's claim; the claim rename must then lose.
    run_dir = str(tmp_path / "r1")
    write_spec(run_dir, make_spec("r1", ["touch", str(tmp_path / "ran")]))
    revoke(run_dir)
    assert Shepherd(run_dir).run() == 0
    assert sorted(os.listdir(run_dir)) == ["spec.revoked.json"]
    assert not (tmp_path / "ran").exists()


def test_revoke_after_claim_fails(start):
    run_dir = start("r1", ["true"])
    wait_result(run_dir)
    assert revoke(run_dir) is False


def test_second_agent_on_the_same_dir_exits(client, state_dir):
    first = client.ping()
    done = subprocess.run(AGENT_COMMAND + [state_dir], env=agent_env(), timeout=30, capture_output=True)
    assert done.returncode == 0
    # A log line, timed to the millisecond like the server's.
    assert re.search(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ INFO apsis_lite.agent: "
                     rb"another agent already serves", done.stderr, re.M), done.stderr
    assert client.ping() == first
    assert int((Path(state_dir) / "agent.pid").read_text()) == first


def test_agent_exits_when_idle(tmp_path):
    state_dir = tmp_path / "state"
    proc = subprocess.Popen(
        AGENT_COMMAND + [str(state_dir), "--idle-timeout", "0.3"],
        env=agent_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert not (state_dir / "agent.sock").exists()
    assert not (state_dir / "agent.pid").exists()


def test_idle_shepherds_retire_after_their_ttl(tmp_path):
    state_dir = str(tmp_path / "state")
    # Long enough that the shepherd is still there when checked on a busy machine.
    client = AgentClient(state_dir, AGENT_COMMAND + ["--shepherd-ttl", "1.5"], env=agent_env())
    try:
        run_dir = str(tmp_path / "runs" / "t1")
        write_spec(run_dir, make_spec("t1", ["true"]))
        shepherd = client.start(run_dir)
        wait_result(run_dir)
        assert not process_gone(shepherd)  # idle, waiting for another run
        wait_for(lambda: process_gone(shepherd))
        # The agent forks a fresh one for the next run.
        again = str(tmp_path / "runs" / "t2")
        write_spec(again, make_spec("t2", ["true"]))
        assert client.start(again) != shepherd
        assert wait_result(again)["exit_code"] == 0
    finally:
        terminate_agent(client)


class NotifyListener:
    """A stand-in for the server's notification socket."""

    def __init__(self, path: str):
        self.lines: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with unix_address(path) as address:
            self.sock.bind(address)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
            self.lines.extend(data.decode().splitlines())

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def test_notifications(start, tmp_path):
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    try:
        run_dir = start("r1", ["echo", "hi"], notify=str(tmp_path / "notify.sock"))
        wait_result(run_dir)
        wait_for(lambda: len(listener.lines) >= 2)
        assert listener.lines == ["running r1", "done r1"]

        # A program that never ran is never "running".
        run_dir = start("r2", ["no-such-program-xyz"], notify=str(tmp_path / "notify.sock"))
        wait_result(run_dir)
        wait_for(lambda: len(listener.lines) >= 3)
        assert listener.lines[2:] == ["done r2"]
    finally:
        listener.close()


def test_notify_socket_missing_is_harmless(start, tmp_path):
    run_dir = start("r1", ["echo", "hi"], notify=str(tmp_path / "nobody-listens.sock"))
    assert wait_result(run_dir)["exit_code"] == 0


def test_burst_of_200_runs(client, tmp_path):
    run_dirs = []
    for i in range(200):
        run_dir = str(tmp_path / "runs" / f"b{i}")
        write_spec(run_dir, make_spec(f"b{i}", ["true"]))
        run_dirs.append(run_dir)
    client.ping()  # Agent start-up is not what we measure.

    began = time.monotonic()
    shepherds = [client.start(run_dir) for run_dir in run_dirs]
    started = time.monotonic() - began
    for run_dir in run_dirs:
        assert wait_result(run_dir, timeout=30)["exit_code"] == 0
    finished = time.monotonic() - began
    programs = {read_json(run_dir, "pid.json")["pid"] for run_dir in run_dirs}
    assert len(programs) == 200  # every run got its own program process
    print(f"\n200 runs: all accepted in {started:.3f}s, all results in {finished:.3f}s, "
          f"{len(set(shepherds))} shepherds")


def test_finished_shepherd_is_reused_and_ignores_stale_stops(client, tmp_path):
    first = str(tmp_path / "runs" / "first")
    write_spec(first, make_spec("first", ["true"]))
    shepherd = client.start(first)
    wait_result(first)
    wait_for(lambda: not is_alive(first))
    # The shepherd tells the agent it is free only after it has flushed the
    # first run's outcome to disk (no server took its notice): a few fsyncs
    # after it let go of the run, longer on a busy disk.
    time.sleep(0.5)
    second = str(tmp_path / "runs" / "second")
    write_spec(second, make_spec("second", ["sh", "-c", "sleep 0.5; echo survived"]))
    assert client.start(second) == shepherd  # no fork: the idle shepherd took it
    wait_for(lambda: read_json(second, "pid.json") is not None)
    # A stop aimed at the finished first run reaches the same process...
    os.kill(shepherd, signal.SIGTERM)
    result = wait_result(second)
    # ...but only a stop.json in the second run's folder stops the second run.
    assert result["exit_code"] == 0 and not result["stopped"]
    assert output_of(second) == b"survived\n"


def _children_of(pid) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rindex(b")") + 2:].split()[1]) == pid:
                found.add(int(entry))
    return found


def test_shepherds_forked_ahead_take_the_runs_that_come(client, tmp_path):
    agent = client.ping()
    client.warm(6)
    warmed = wait_for(lambda: len(kids := _children_of(agent)) == 6 and kids, timeout=10)
    time.sleep(0.3)  # each says it is idle once forked
    run_dirs = []
    for i in range(6):
        run_dirs.append(str(tmp_path / "runs" / f"w{i}"))
        write_spec(run_dirs[-1], make_spec(f"w{i}", ["sh", "-c", f"echo {i}"]))
    # No fork at the due time: every run goes to a shepherd that was waiting.
    assert set(client.start_many(run_dirs)) == warmed
    for i, run_dir in enumerate(run_dirs):
        assert wait_result(run_dir)["exit_code"] == 0
        assert output_of(run_dir) == f"{i}\n".encode()
    client.warm(3)  # as many are idle already: none forked
    time.sleep(0.3)
    assert _children_of(agent) == warmed
    for count in (-1, "3", None):
        with pytest.raises(AgentError, match="count must be a whole number"):
            client._request({"op": "warm", "count": count})


def test_start_many_pipelines_and_reports_each(client, tmp_path):
    run_dirs = []
    for i in range(50):
        run_dir = str(tmp_path / "runs" / f"m{i}")
        write_spec(run_dir, make_spec(f"m{i}", ["sh", "-c", f"echo {i}"]))
        run_dirs.append(run_dir)
    missing = str(tmp_path / "runs" / "never-written")
    results = client.start_many(run_dirs + [missing, run_dirs[0]])
    assert all(isinstance(pid, int) for pid in results[:50])
    # No spec: refused. The same run twice in one batch: the second shepherd
    # finds the spec claimed (or the request is refused) and the program runs once.
    assert isinstance(results[50], AgentError)
    for i, run_dir in enumerate(run_dirs):
        assert wait_result(run_dir, timeout=30)["exit_code"] == 0
        assert output_of(run_dir) == f"{i}\n".encode()


def test_starts_sent_without_waiting_are_answered_each_once(client, tmp_path):
    # Batches sent one after another, a request of another kind between them:
    # its reply comes after those owed to the batches, which are kept for collect_starts.
    run_dirs = []
    for i in range(30):
        run_dir = str(tmp_path / "runs" / f"s{i}")
        write_spec(run_dir, make_spec(f"s{i}", ["sh", "-c", f"echo {i}"]))
        run_dirs.append(run_dir)
    missing = str(tmp_path / "runs" / "never-written")
    client.send_starts(run_dirs[:2])
    client.send_starts(run_dirs[2:10] + [missing])
    assert client.ping() > 0
    client.send_starts(run_dirs[10:] + [run_dirs[0]])
    answers = client.collect_starts()
    assert set(answers) == set(run_dirs) | {missing}
    assert isinstance(answers[missing], AgentError)
    for i, run_dir in enumerate(run_dirs):
        assert wait_result(run_dir, timeout=30)["exit_code"] == 0
        assert output_of(run_dir) == f"{i}\n".encode()
    assert client.collect_starts() == {}


def test_many_clients_at_once(client, state_dir, tmp_path):
    """Several connections (e.g. server plus a CLI) served concurrently."""
    client.ping()
    others = [AgentClient(state_dir, AGENT_COMMAND, env=agent_env()) for _ in range(5)]
    try:
        errors = []

        def work(n, other):
            try:
                for i in range(10):
                    run_dir = str(tmp_path / "runs" / f"c{n}-{i}")
                    write_spec(run_dir, make_spec(f"c{n}-{i}", ["true"]))
                    other.start(run_dir)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n, c)) for n, c in enumerate(others)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert errors == []
        for n in range(5):
            for i in range(10):
                assert wait_result(str(tmp_path / "runs" / f"c{n}-{i}"))["exit_code"] == 0
    finally:
        for other in others:
            other.close()


# An agent that dies, as under kill -9, with the first request it reads
# unanswered, as many times as ``crashes-left`` in its state folder says;
# then the real agent.
CRASHING_AGENT = """
import os, socket, sys
state_dir = sys.argv[-1]
counter = os.path.join(state_dir, "crashes-left")
left = int(open(counter).read())
if left <= 0:
    from apsis_lite.agent import main
    sys.exit(main([state_dir]))
open(counter, "w").write(str(left - 1))
path = os.path.join(state_dir, "agent.sock")
if os.path.exists(path):
    os.unlink(path)
listener = socket.socket(socket.AF_UNIX)
listener.bind(path)
listener.listen(8)
conn, _ = listener.accept()
conn.recv(65536)
os._exit(9)
"""


@pytest.mark.parametrize("sent", [False, True], ids=["start_many", "send_starts"])
@pytest.mark.parametrize("crashes", [1, 2])
def test_start_survives_agents_that_die_one_after_the_other(crashes, sent):
    # The first try meets an agent that dies (and the second too): a later
    # one, on a new agent, starts the runs, each once.
    base = tempfile.mkdtemp(prefix="al-crash-", dir="/tmp")  # Short: a socket path.
    state_dir = os.path.join(base, "agent")
    os.makedirs(state_dir)
    Path(state_dir, "crashes-left").write_text(str(crashes))
    client = AgentClient(state_dir, [sys.executable, "-c", CRASHING_AGENT], env=agent_env())
    try:
        run_dirs = []
        for i in range(3):
            run_dirs.append(os.path.join(base, "runs", f"r{i}"))
            write_spec(run_dirs[-1], make_spec(f"r{i}", ["echo", str(i)]))
        if sent:
            client.send_starts(run_dirs[:1])
            client.send_starts(run_dirs[1:])
            answers = client.collect_starts()
            results = [answers[run_dir] for run_dir in run_dirs]
        else:
            results = client.start_many(run_dirs)
        assert all(isinstance(pid, int) for pid in results), results
        assert Path(state_dir, "crashes-left").read_text() == "0"
        for i, run_dir in enumerate(run_dirs):
            assert wait_result(run_dir)["exit_code"] == 0
            assert output_of(run_dir) == f"{i}\n".encode()
    finally:
        terminate_agent(client)
        shutil.rmtree(base, ignore_errors=True)


def test_agent_rejects_bad_requests(client, state_dir):
    client.ping()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        with unix_address(client.socket_path) as address:
            sock.connect(address)
        sock.sendall(b'not json\n{"op": "dance"}\n{"op": "start", "run_dir": "relative"}\n{"op": "ping"}\n')
        data = b""
        while data.count(b"\n") < 4:
            data += sock.recv(4096)
    replies = [json.loads(line) for line in data.splitlines()]
    assert [r["ok"] for r in replies] == [False, False, False, True]
    assert "bad request" in replies[0]["error"]
    assert "unknown op" in replies[1]["error"]
    assert "absolute" in replies[2]["error"]


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import sys, time, gevent
from apsis_lite.agent import AgentClient, write_spec, read_json, request_stop, is_alive

state_dir, base, command = sys.argv[1], sys.argv[2], sys.argv[3:]
client = AgentClient(state_dir, command)
ticks = []
ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(1000)])

def run(name, argv):
    run_dir = f"{base}/{name}"
    write_spec(run_dir, {"run_id": name, "argv": argv, "stop": {"signal": "TERM", "grace_period": 1}})
    client.start(run_dir)
    return run_dir

jobs = [gevent.spawn(run, f"g{i}", ["echo", str(i)]) for i in range(20)]
gevent.joinall(jobs, raise_error=True)
sleeper = run("sleeper", ["sleep", "100"])
while not read_json(sleeper, "pid.json"):
    time.sleep(0.01)
assert request_stop(sleeper, "TERM", 1)
for name in [f"g{i}" for i in range(20)] + ["sleeper"]:
    while not read_json(f"{base}/{name}", "result.json"):
        time.sleep(0.01)
assert read_json(sleeper, "result.json")["stopped"]
assert len(ticks) > 5, ticks  # The hub kept running while we waited.
client.close()
print("ok", client.ping())
"""


def test_client_under_gevent(tmp_path):
    pytest.importorskip("gevent")
    state_dir = str(tmp_path / "state")
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT, state_dir, str(tmp_path / "runs")] + AGENT_COMMAND,
        env=agent_env(), capture_output=True, text=True, timeout=30,
    )
    agent_pid = int((Path(state_dir) / "agent.pid").read_text())
    os.kill(agent_pid, signal.SIGTERM)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", str(agent_pid)]
    for i in range(20):
        assert output_of(str(tmp_path / "runs" / f"g{i}")) == f"{i}\n".encode()
    wait_for(lambda: process_gone(agent_pid))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("SIGTERM", signal.SIGTERM),
        ("TERM", signal.SIGTERM),
        ("term", signal.SIGTERM),
        (" sigkill ", signal.SIGKILL),
        ("9", signal.SIGKILL),
        (15, signal.SIGTERM),
        (signal.SIGUSR1, signal.SIGUSR1),
    ],
)
def test_signal_from_name(text, expected):
    assert signal_from_name(text) is expected


@pytest.mark.parametrize("text", ["SIGNOPE", "", "999", -1, None, "SIG_DFL", True])
def test_signal_from_name_rejects(text):
    with pytest.raises(ValueError, match="unknown signal"):
        signal_from_name(text)


def test_read_json_tolerates_missing_and_broken_files(tmp_path):
    assert read_json(str(tmp_path), "result.json") is None
    (tmp_path / "result.json").write_text('{"exit_code": ')
    assert read_json(str(tmp_path), "result.json") is None
    (tmp_path / "result.json").write_text("[1]")
    assert read_json(str(tmp_path), "result.json") is None
    atomic_write_json(str(tmp_path / "result.json"), {"exit_code": 0})
    assert read_json(str(tmp_path), "result.json") == {"exit_code": 0}
    assert not (tmp_path / "result.json.tmp").exists()


def test_is_alive_without_a_shepherd(tmp_path):
    assert is_alive(str(tmp_path)) is False
    assert is_alive(str(tmp_path / "no such run")) is False

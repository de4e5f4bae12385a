"""Runs on a remote host: a job with ``host:`` runs there through the agent installed
over ssh (a real sshd on 127.0.0.1 whose login user is the 'remote' side), its
output, exit status and rusage recorded; stop, timeout, restarts and network faults."""

import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from datetime import datetime

import pytest

from apsis_lite.config import HostSettings
from apsis_lite.hosts import ssh
from conftest import write_job
from remote_hosts import clean_remote_cache, link, make_target, remote_cache, sshd, stranger_key  # noqa: F401 (fixtures)
from sshd import LOGIN_USER


def host_config(sshd, key=None, port=None, name="box"):
    """The server's hosts: setting for the session's sshd (or a relay to it on ``port``)."""
    known_hosts = sshd.known_hosts
    if port:  # the same host key, known under the relay's port
        known_hosts = sshd.folder / f"known_hosts_{port}"
        known_hosts.write_text(f"[127.0.0.1]:{port} {(sshd.folder / 'host_key.pub').read_text()}")
    return {name: {"hostname": "127.0.0.1", "user": LOGIN_USER, "port": port or sshd.port,
                   "identity_file": str(key or sshd.client_key),
                   "ssh_options": ["IdentitiesOnly=yes", f"UserKnownHostsFile={known_hosts}"]}}


def start_run(server, job_id):
    return server.post("/api/v1/runs", {"job_id": job_id})["run_id"]


def output(server, rid) -> str:
    _, body, _ = server.request("GET", f"/api/v1/runs/{rid}/output")
    return body.decode()


def run_meta(server, rid) -> dict:
    """The run's meta as stored (where the engine keeps the host a run ran on)."""
    with sqlite3.connect(f"file:{server.data_dir / 'apsis-lite.db'}?mode=ro", uri=True) as db:
        (meta,) = db.execute("SELECT meta FROM runs WHERE run_id=?", (int(rid[1:]),)).fetchone()
    return json.loads(meta)


def messages(server, rid):
    return [e["message"] for e in server.get(f"/api/v1/runs/{rid}/log")["items"]]


def remote_pids(pattern) -> list[int]:
    """Pids of the login user's processes whose command line has ``pattern``."""
    found = subprocess.run(["pgrep", "-u", LOGIN_USER, "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def remote_run_folders() -> list[str]:
    """The run folders in the login user's state folders (one per server)."""
    state = os.path.join(remote_cache(), "state")
    return sorted(run for server in os.listdir(state) for run in os.listdir(os.path.join(state, server, "runs")))


def wait_until(predicate, timeout=20, what="condition", server=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    if server is None:
        raise AssertionError(f"timed out waiting for {what}")
    runs = [(r["run_id"], r["state"], r["message"]) for r in server.get("/api/v1/runs")["items"]]
    logs = [open(os.path.join(root, "agent.log")).read()[-2000:]
            for root, _, files in os.walk(remote_cache()) if "agent.log" in files]
    raise AssertionError(f"timed out waiting for {what}; runs: {runs}\nremote agent logs: {logs}\n{server.log()}")


@pytest.fixture
def remote_server(clean_remote_cache, running, sshd):
    """A server whose config has the host ``box`` (the session's sshd). (The cache is
    cleaned after the servers stopped: one still running would install its agent again.)"""
    def start(**settings):
        return running(hosts=host_config(sshd), sweep_interval="1s", **settings)
    yield start
    for pid in remote_pids("apsis-remote-test"):
        os.kill(pid, signal.SIGKILL)


def test_a_job_with_host_runs_there_and_its_output_and_exit_are_recorded(jobs_dir, remote_server):
    write_job(jobs_dir, "remote", """\
        program:
          type: shell
          command: 'echo "as $(id -un) in $PWD run $APSIS_RUN_ID"; echo to-stderr >&2; exit 3'
          host: box
        """)
    server = remote_server()
    rid = start_run(server, "remote")
    run = server.wait_run(rid, timeout=30)
    home = pwd.getpwnam(LOGIN_USER).pw_dir
    assert run["state"] == "failure" and run["exit_code"] == 3, run["message"]
    assert output(server, rid) == f"as {LOGIN_USER} in {home} run {rid}\nto-stderr\n"
    assert run_meta(server, rid)["remote"]["host"] == "box"
    assert run["rusage"]["maxrss_kb"] > 0
    assert any(m.startswith("running as pid") and m.endswith("on host box") for m in messages(server, rid))
    # Collected once, then its folder on the host is removed.
    wait_until(lambda: remote_run_folders() == [], timeout=10, what="the remote folder removed")


def test_output_streams_back_while_the_run_goes_on(jobs_dir, remote_server):
    write_job(jobs_dir, "slow", """\
        program:
          type: shell
          command: 'echo first; sleep 30 # apsis-remote-test'
          host: box
        """)
    server = remote_server()
    rid = start_run(server, "slow")
    wait_until(lambda: output(server, rid) == "first\n", what="live output")
    assert server.get(f"/api/v1/runs/{rid}")["state"] == "running"


def _alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is as good as dead
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def grandchild_of(server, rid) -> int:
    """The pid the program printed first: a process it left in the background."""
    wait_until(lambda: output(server, rid).strip(), what="the grandchild's pid in the output", server=server)
    return int(output(server, rid).split()[0])


def test_stop_kills_the_remote_program_and_its_grandchildren(jobs_dir, remote_server):
    write_job(jobs_dir, "long", """\
        program:
          type: shell
          command: 'sleep 300 & echo $!; wait'
          host: box
        """)
    server = remote_server()
    rid = start_run(server, "long")
    grandchild = grandchild_of(server, rid)
    assert _alive(grandchild) and pwd.getpwuid(os.stat(f"/proc/{grandchild}").st_uid).pw_name == LOGIN_USER
    server.wait_run(rid, states=("running",))
    server.post(f"/api/v1/runs/{rid}/stop")
    run = server.wait_run(rid)
    # Ended by the stop's own signal: a success, as in apsis.
    assert run["state"] == "success" and run["signal"] == "SIGTERM", (messages(server, rid), server.log())
    assert run["message"].startswith("killed by SIGTERM (stopped")
    wait_until(lambda: not _alive(grandchild), timeout=5, what="the grandchild to die")


def test_a_timeout_kills_the_remote_group(jobs_dir, remote_server):
    write_job(jobs_dir, "late", """\
        program:
          type: shell
          command: 'sleep 300 & echo $!; wait'
          host: box
          timeout: {duration: 1s, signal: SIGTERM}
        """)
    server = remote_server()
    rid = start_run(server, "late")
    grandchild = grandchild_of(server, rid)
    run = server.wait_run(rid, timeout=30)
    assert run["state"] == "failure" and run["message"].startswith("killed by SIGTERM (timed out"), run["message"]
    assert run["timed_out"]
    wait_until(lambda: not _alive(grandchild), timeout=5, what="the grandchild to die")


def test_kill_9_of_the_server_mid_run_then_restart_reattaches_and_records_once(jobs_dir, remote_server):
    write_job(jobs_dir, "through", """\
        program:
          type: shell
          command: 'echo before; sleep 3; echo after'
          host: box
        """)
    server = remote_server()
    rid = start_run(server, "through")
    wait_until(lambda: output(server, rid) == "before\n", what="the run to start", server=server)
    server.kill()
    time.sleep(4)  # the run ends while no server is there
    server = remote_server()
    run = server.wait_run(rid, timeout=30)
    assert run["state"] == "success", run["message"]
    assert output(server, rid) == "before\nafter\n"
    assert sum(1 for e in server.get(f"/api/v1/runs/{rid}/log")["items"] if e["state"] == "success") == 1
    assert len(server.get("/api/v1/runs")["items"]) == 1


def test_kill_9_of_the_server_then_restart_reattaches_a_run_still_going(jobs_dir, remote_server):
    write_job(jobs_dir, "going", """\
        program:
          type: shell
          command: 'echo before; sleep 6; echo after'
          host: box
        """)
    server = remote_server()
    rid = start_run(server, "going")
    wait_until(lambda: output(server, rid) == "before\n", what="the run to start", server=server)
    server.kill()
    server = remote_server()
    assert server.get(f"/api/v1/runs/{rid}")["state"] == "running"
    run = server.wait_run(rid, timeout=30)
    assert run["state"] == "success" and output(server, rid) == "before\nafter\n", (run["message"], server.log())
    assert "re-attached after restart" in messages(server, rid)


def test_an_unreachable_host_is_an_error_with_sshs_message(jobs_dir, running, sshd):
    from sshd import free_port
    write_job(jobs_dir, "nowhere", """\
        program:
          type: shell
          command: 'echo never'
          host: box
        """)
    server = running(hosts=host_config(sshd, port=free_port()))
    run = server.wait_run(start_run(server, "nowhere"), timeout=30)
    assert run["state"] == "error"
    assert run["message"].startswith(f"could not start: host box ({LOGIN_USER}@127.0.0.1:")
    assert run["message"].endswith("is unreachable: connection refused")


def test_a_host_that_never_answers_holds_up_no_other_run(jobs_dir, running, sshd):
    # A listener that accepts and says nothing: ssh waits its ConnectTimeout for the banner,
    # as with a host that drops packets. Runs due meanwhile elsewhere start on time.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        hosts = host_config(sshd, port=silent.getsockname()[1])
        hosts["box"]["ssh_options"].append("ConnectTimeout=5")
        write_job(jobs_dir, "stuck", "program: {type: shell, command: 'echo never', host: box}\n")
        write_job(jobs_dir, "here", "program: {type: program, argv: ['true']}\n")
        server = running(hosts=hosts)
        stuck = start_run(server, "stuck")
        time.sleep(0.5)  # the start is on its way to the silent host
        began = time.monotonic()
        here = server.wait_run(start_run(server, "here"), timeout=30)
        assert here["state"] == "success" and time.monotonic() - began < 3, here
        assert server.get(f"/api/v1/runs/{stuck}")["state"] == "starting"
        run = server.wait_run(stuck, timeout=60)
        assert run["state"] == "error"
        assert run["message"].startswith(f"could not start: host box ({LOGIN_USER}@127.0.0.1:"), run["message"]
    finally:
        silent.close()


def test_the_engines_checks_never_wait_for_a_host(tmp_path, sshd):
    # The engine asks the launcher about a remote run (is it alive? claimed?) in its pass;
    # the launcher answers from what its poller last heard, never by asking a host itself,
    # which for a host that drops packets would hold the pass for ssh's ConnectTimeout.
    from apsis_lite.config import load_config
    from apsis_lite.engine.remote_launcher import HostLauncher
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    hosts = host_config(sshd, port=silent.getsockname()[1])
    hosts["box"]["ssh_options"].append("ConnectTimeout=5")
    config = load_config(None, data_dir=str(tmp_path / "data"), jobs_dir=str(tmp_path), hosts=hosts)
    # A run in flight there, as a server finds it at start-up: its mirror folder here.
    folder = os.path.join(config.runs_dir, "r7")
    os.makedirs(folder)
    with open(os.path.join(folder, "remote.json"), "w") as f:
        json.dump({"host": "box", "user": None, "spec": {}}, f)
    launcher = HostLauncher(config)
    try:
        assert launcher.is_remote(7)
        began = time.monotonic()
        assert launcher.is_alive(7) and launcher.claimed(7) and launcher.spec_pending_since(7) is None
        assert time.monotonic() - began < 1  # unknown, so left as it is: not decided by waiting
    finally:
        launcher.close()
        silent.close()


def test_a_refused_key_is_an_error_saying_so(jobs_dir, running, sshd, stranger_key):
    write_job(jobs_dir, "refused", """\
        program:
          type: shell
          command: 'echo never'
          host: box
        """)
    server = running(hosts=host_config(sshd, key=stranger_key))
    run = server.wait_run(start_run(server, "refused"), timeout=30)
    assert run["state"] == "error"
    assert run["message"] == (f"could not start: host box ({LOGIN_USER}@127.0.0.1:{sshd.port}): authentication "
                              f"refused for {LOGIN_USER}: is the server's key in that user's authorized_keys?")


def test_the_network_lost_mid_run_the_run_survives_and_is_collected_when_it_is_back(jobs_dir, clean_remote_cache,
                                                                                     running, sshd, link):
    write_job(jobs_dir, "cut", """\
        program:
          type: shell
          command: 'echo before; sleep 3; echo after'
          host: box
        """)
    server = running(hosts=host_config(sshd, port=link.port), sweep_interval="1s")
    rid = start_run(server, "cut")
    wait_until(lambda: output(server, rid) == "before\n", what="the run to start", server=server)
    link.down()
    time.sleep(5)  # the run ends on the host meanwhile; polls and sweeps fail
    assert server.get(f"/api/v1/runs/{rid}")["state"] == "running"
    assert "is unreachable: connection refused; its runs are left as they are" in server.log()
    link.up()
    run = server.wait_run(rid, timeout=30)
    assert run["state"] == "success" and output(server, rid) == "before\nafter\n", (run["message"], server.log())


def test_a_host_down_at_start_is_an_error_and_the_next_run_tries_again(jobs_dir, clean_remote_cache,
                                                                       running, sshd, link):
    write_job(jobs_dir, "again", """\
        program:
          type: shell
          command: 'echo here'
          host: box
        """)
    server = running(hosts=host_config(sshd, port=link.port))
    link.down()
    first = server.wait_run(start_run(server, "again"), timeout=30)
    assert first["state"] == "error" and first["message"].endswith("is unreachable: connection refused")
    link.up()
    second = server.wait_run(start_run(server, "again"), timeout=30)
    assert second["state"] == "success", second
    assert output(server, second["run_id"]) == "here\n"


def test_the_ssh_master_connection_killed_mid_run_the_run_survives(jobs_dir, remote_server, data_dir):
    write_job(jobs_dir, "master", """\
        program:
          type: shell
          command: 'echo before; sleep 3; echo after'
          host: box
        """)
    server = remote_server()
    rid = start_run(server, "master")
    wait_until(lambda: output(server, rid) == "before\n", what="the run to start", server=server)
    control = f"{data_dir}/ssh/.*mux"  # the master names itself "ssh: CONTROL_PATH [mux]"
    masters = subprocess.run(["pgrep", "-f", control], capture_output=True, text=True).stdout.split()
    assert masters, "no ssh master connection"
    for pid in masters:
        os.kill(int(pid), signal.SIGKILL)
    run = server.wait_run(rid, timeout=30)
    assert run["state"] == "success" and output(server, rid) == "before\nafter\n", (run["message"], server.log())


def remote_run_folder(rid) -> str:
    (folder,) = [os.path.join(root, rid) for root, dirs, _ in os.walk(os.path.join(remote_cache(), "state"))
                 if rid in dirs]
    return folder


def _kill_remote_run(rid):
    """SIGKILL a remote run's shepherd and program group, as a crash or a power cut of the host would."""
    folder = remote_run_folder(rid)
    with open(os.path.join(folder, "shepherd.json")) as f:
        os.kill(json.load(f)["pid"], signal.SIGKILL)
    with open(os.path.join(folder, "pid.json")) as f:
        os.killpg(json.load(f)["pgid"], signal.SIGKILL)


@pytest.mark.parametrize("rebooted", [False, True])
def test_a_remote_run_whose_supervisor_vanished_says_so_and_a_host_restart_says_that(
        jobs_dir, remote_server, rebooted):
    write_job(jobs_dir, "crash", """\
        program:
          type: shell
          command: 'echo going; sleep 300'
          host: box
        """)
    server = remote_server()
    rid = start_run(server, "crash")
    wait_until(lambda: output(server, rid) == "going\n", what="the run to start", server=server)
    if rebooted:
        # The boot the run started in, as the host recorded it, is not the host's boot now.
        with open(os.path.join(remote_run_folder(rid), "boot.json"), "w") as f:
            json.dump({"boot_id": "an-earlier-boot"}, f)
    _kill_remote_run(rid)
    run = server.wait_run(rid, timeout=30)
    assert run["state"] == "error"
    assert run["message"] == ("host box restarted while it ran, or before its result was recorded" if rebooted
                              else "its supervisor vanished without recording a result")


def test_a_host_group_spreads_its_runs_and_each_runs_on_the_host_recorded(jobs_dir, clean_remote_cache,
                                                                           running, sshd):
    # Two names for the session's sshd, so that each run's recorded host can be told apart.
    write_job(jobs_dir, "grouped", """\
        program:
          type: shell
          command: 'echo "on $(id -un)"'
          host: web
        """)
    hosts = {**host_config(sshd, name="web1"), **host_config(sshd, name="web2")}
    server = running(hosts=hosts, host_groups={"web": {"hosts": ["web1", "web2"], "select": "round-robin"}},
                     sweep_interval="1s")
    rids = [start_run(server, "grouped") for _ in range(4)]
    runs = [server.wait_run(rid, timeout=60) for rid in rids]
    assert [r["state"] for r in runs] == ["success"] * 4, [r["message"] for r in runs]
    assert sorted(r["host"] for r in runs) == ["web1", "web1", "web2", "web2"]
    for rid, run in zip(rids, runs):
        assert output(server, rid) == f"on {LOGIN_USER}\n"
        assert run_meta(server, rid)["remote"]["host"] == run["host"]
    assert sorted(r["run_id"] for r in server.runs("host:web2")) == sorted(r["run_id"] for r in runs
                                                                           if r["host"] == "web2")


def test_the_remote_command_refuses_a_run_id_that_is_a_path(tmp_path):
    from apsis_lite.hosts.install import shipped_zipapp
    pyz = tmp_path / "agent.pyz"
    pyz.write_bytes(shipped_zipapp().data)
    secret = tmp_path / "keep"
    secret.mkdir()
    for request in ({"op": "poll", "remove": ["../../keep"]}, {"op": "poll", "runs": {"/etc": 0}},
                    {"op": "launch"}):
        done = subprocess.run(["python3", str(pyz), "remote", str(tmp_path / "state")],
                              input=json.dumps(request).encode(), capture_output=True, timeout=30)
        assert done.returncode == 2 and done.stdout == b""
        assert done.stderr.decode().startswith("bad request: "), done.stderr
    assert secret.is_dir()
    served = subprocess.run(["python3", str(pyz), "remote", str(tmp_path / "state"), "--serve"],
                            input=b'{"op": "poll", "runs": {"r1": 0}}\n{"op": "poll", "runs": {"x": 0}}\n',
                            capture_output=True, timeout=30)
    ready, known, refused = [json.loads(line) for line in served.stdout.splitlines()]
    assert ready["ready"] and known["runs"] == {"r1": {"exists": False}}
    assert refused == {"error": "bad request: not a run id: 'x'"}


def test_a_remote_programs_user_is_the_ssh_login_user(jobs_dir, clean_remote_cache, running, sshd):
    from sshd import NO_PYTHON_USER
    for job_id, user in (("as-remote", LOGIN_USER), ("as-nopython", NO_PYTHON_USER)):
        write_job(jobs_dir, job_id, f"""\
            program:
              type: shell
              command: 'id -un'
              host: box
              user: {user}
            """)
    hosts = host_config(sshd)
    hosts["box"]["user"] = NO_PYTHON_USER  # the host's login user, which each job's user: replaces
    server = running(hosts=hosts)
    ran = server.wait_run(start_run(server, "as-remote"), timeout=30)
    assert ran["state"] == "success" and output(server, ran["run_id"]) == f"{LOGIN_USER}\n"
    refused = server.wait_run(start_run(server, "as-nopython"), timeout=30)
    assert refused["state"] == "error"
    assert refused["message"] == ("could not start: no python3 on host box: the agent needs Python 3 as "
                                  "python3 on the login user's PATH")


def test_a_host_that_never_answers_delays_no_other_hosts_output_or_result(jobs_dir, clean_remote_cache,
                                                                          running, sshd):
    # Each host has its own poller: one that keeps ssh waiting for its ConnectTimeout on
    # every poll holds up neither the live output nor the collection of another host's runs.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        hosts = {**host_config(sshd), **host_config(sshd, port=silent.getsockname()[1], name="dead")}
        hosts["dead"]["ssh_options"].append("ConnectTimeout=20")  # each poll of it: 20 s
        write_job(jobs_dir, "stuck", "program: {type: shell, command: 'echo never', host: dead}\n")
        write_job(jobs_dir, "good", "program: {type: shell, command: 'echo first; sleep 2; echo done', host: box}\n")
        server = running(hosts=hosts, sweep_interval="1s")
        start_run(server, "stuck")
        began = time.monotonic()
        rid = start_run(server, "good")
        wait_until(lambda: output(server, rid) == "first\n", timeout=10, what="live output", server=server)
        assert time.monotonic() - began < 6, "live output came late"
        run = server.wait_run(rid, timeout=10)
        assert run["state"] == "success" and output(server, rid) == "first\ndone\n", run["message"]
        assert time.monotonic() - began < 8, "the run was collected late"
    finally:
        silent.close()


def test_a_stop_asked_while_the_host_is_unreachable_is_sent_when_it_answers_warned_once(
        jobs_dir, clean_remote_cache, running, sshd, link):
    write_job(jobs_dir, "cut-stop", """\
        program:
          type: shell
          command: 'sleep 300 & echo $!; wait'
          host: box
        """)
    server = running(hosts=host_config(sshd, port=link.port), sweep_interval="0.5s")
    rid = start_run(server, "cut-stop")
    grandchild = grandchild_of(server, rid)
    server.wait_run(rid, states=("running",))
    link.down()
    wait_until(lambda: "is unreachable: connection refused" in server.log(), what="the host to be missed",
               server=server)
    server.post(f"/api/v1/runs/{rid}/stop")
    time.sleep(1.5)  # sweeps and polls while the host does not answer
    assert server.get(f"/api/v1/runs/{rid}")["state"] == "stopping"
    assert _alive(grandchild)
    assert server.log().count(f"run {rid}: its stop cannot reach its host now") == 1, server.log()
    link.up()
    run = server.wait_run(rid, timeout=30)
    assert run["state"] == "success" and run["signal"] == "SIGTERM", (run["message"], server.log())
    assert f"run {rid}: its stop reached host box" in server.log()
    wait_until(lambda: not _alive(grandchild), timeout=5, what="the grandchild to die")


def test_a_restart_while_the_host_is_unreachable_says_so_and_re_attaches_when_it_answers(
        jobs_dir, clean_remote_cache, running, sshd, link):
    write_job(jobs_dir, "away", """\
        program:
          type: shell
          command: 'echo before; sleep 60 # apsis-remote-test'
          host: box
        """)
    server = running(hosts=host_config(sshd, port=link.port), sweep_interval="0.5s")
    rid = start_run(server, "away")
    wait_until(lambda: output(server, rid) == "before\n", what="the run to start", server=server)
    server.kill()
    link.down()
    server = running(hosts=host_config(sshd, port=link.port), sweep_interval="0.5s")
    wait_until(lambda: "is unreachable: connection refused" in server.log(), what="the host to be missed",
               server=server)
    time.sleep(1)  # sweeps while the host does not answer
    said = messages(server, rid)
    assert "after restart: not heard from host box yet; the run is left as it is until it answers" in said
    assert "re-attached after restart" not in said
    assert server.get(f"/api/v1/runs/{rid}")["state"] == "running"
    link.up()
    try:
        wait_until(lambda: "re-attached after restart" in messages(server, rid), what="re-attached", server=server)
        assert server.get(f"/api/v1/runs/{rid}")["state"] == "running"
        time.sleep(0.6)  # more sweeps: said once
        assert messages(server, rid).count("re-attached after restart") == 1
    finally:
        for pid in remote_pids("apsis-remote-test"):
            os.kill(pid, signal.SIGKILL)


def test_a_large_output_is_recorded_promptly_and_a_run_beside_it_is_not_starved(jobs_dir, remote_server):
    # 16 MiB (the default head and tail, whole) comes back in a few polls after the run
    # ends; a run on the same host that prints a line meanwhile shows it within a poll or two.
    write_job(jobs_dir, "big", """\
        program:
          type: shell
          command: 'head -c 16777216 /dev/zero | tr "\\\\0" x'
          host: box
        """)
    write_job(jobs_dir, "small", """\
        program:
          type: shell
          command: 'sleep 1; echo small; sleep 1'
          host: box
        """)
    server = remote_server()
    small = start_run(server, "small")
    big = start_run(server, "big")
    run = server.wait_run(big, timeout=30)
    recorded = time.time()  # an upper bound: wait_run asks every 0.1 s or so
    assert run["state"] == "success" and run["output_length"] == 16 << 20, run
    lag = recorded - datetime.fromisoformat(run["times"]["success"]).timestamp()  # the program's end
    print(f"16 MiB recorded {lag:.2f} s after the run ended")
    assert lag < 5, f"16 MiB recorded {lag:.1f} s after the run ended"
    wait_until(lambda: output(server, small) == "small\n", timeout=3, what="the small run's output", server=server)


def test_a_run_goes_on_and_is_collected_while_a_newer_agent_replaces_the_one_it_started_with(
        jobs_dir, remote_server, make_target, tmp_path):
    # A newer server installs its agent under a new name and removes the old file, while
    # the old agent, its shepherd and its session still run from it.
    from apsis_lite.hosts.install import AGENT_SOURCE, build_zipapp, install_agent
    write_job(jobs_dir, "upgraded", """\
        program:
          type: shell
          command: 'echo before; sleep 1; echo after'
          host: box
        """)
    server = remote_server()
    rid = start_run(server, "upgraded")
    wait_until(lambda: output(server, rid) == "before\n", what="the run to start", server=server)
    (old,) = [f for f in os.listdir(remote_cache()) if f.endswith(".pyz")]
    newer = tmp_path / "agent"
    shutil.copytree(AGENT_SOURCE, newer, ignore=shutil.ignore_patterns("__pycache__"))
    with open(newer / "__init__.py", "a") as f:
        f.write("# a newer version\n")
    installed = install_agent(make_target(), build_zipapp(newer))
    assert installed.uploaded and [f for f in os.listdir(remote_cache()) if f.endswith(".pyz")] == [
        os.path.basename(installed.path)] != [old]
    run = server.wait_run(rid, timeout=30)
    assert run["state"] == "success" and output(server, rid) == "before\nafter\n", (run["message"], server.log())


def test_apsis_procstar_jobs_run_on_a_host_of_their_group_as_their_sudo_user(jobs_dir, clean_remote_cache,
                                                                            running, sshd):
    # The shapes of apsis's procstar examples: an argv on the default group, a shell
    # command on a named group with sudo_user (the login user there).
    write_job(jobs_dir, "ps-argv", """\
        params: [count]
        program:
          type: procstar
          argv: [/usr/bin/bash, -c, 'for i in $(seq {{ count }}); do echo $i; done']
        """)
    write_job(jobs_dir, "ps-shell", f"""\
        program:
          type: procstar-shell
          group_id: batch
          sudo_user: {LOGIN_USER}
          command: 'echo "$(id -un) $APSIS_JOB_ID"'
        """)
    hosts = host_config(sshd, name="b1")
    hosts["b1"]["user"] = "nobody"  # the group's login user, which sudo_user replaces
    server = running(hosts={**hosts, **host_config(sshd, name="d1")},
                     host_groups={"default": {"hosts": ["d1"]}, "batch": {"hosts": ["b1"]}})
    argv = server.wait_run(server.post("/api/v1/runs", {"job_id": "ps-argv", "args": {"count": "3"}})["run_id"],
                           timeout=30)
    shell = server.wait_run(start_run(server, "ps-shell"), timeout=30)
    assert (argv["state"], argv["host"], output(server, argv["run_id"])) == ("success", "d1", "1\n2\n3\n"), argv
    assert (shell["state"], shell["host"], output(server, shell["run_id"])) == (
        "success", "b1", f"{LOGIN_USER} ps-shell\n"), shell

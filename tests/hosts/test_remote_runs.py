"""Runs on a remote host: a job with ``host:`` runs there through the agent installed
over ssh (a real sshd on 127.0.0.1 whose login user is the 'remote' side), its
output, exit status and rusage recorded; stop, timeout, restarts and network faults."""

import json
import os
import pwd
import signal
import sqlite3
import subprocess
import time

import pytest

from apsis_lite.config import HostSettings
from apsis_lite.hosts import ssh
from conftest import write_job
from remote_hosts import clean_remote_cache, remote_cache, sshd, stranger_key  # noqa: F401 (fixtures)
from sshd import LOGIN_USER


def host_config(sshd, key=None, port=None, name="box"):
    """The server's hosts: setting for the session's sshd."""
    return {name: {"hostname": "127.0.0.1", "user": LOGIN_USER, "port": port or sshd.port,
                   "identity_file": str(key or sshd.client_key),
                   "ssh_options": ["IdentitiesOnly=yes", f"UserKnownHostsFile={sshd.known_hosts}"]}}


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


def wait_until(predicate, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def remote_server(running, sshd, clean_remote_cache):
    """A server whose config has the host ``box`` (the session's sshd)."""
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
    assert run["state"] == "failure" and run["exit_code"] == 3, run
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

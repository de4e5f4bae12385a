"""user: on a server that is not root, with sudo_for_user: the run's program goes through the
real ``sudo -n``, allowed by a sudoers drop-in the set-up writes (and removes).

The suite runs as root (as in CI); the server's side here is a forked test
process that has given up root for good and become the test's server user,
then builds the spec as the launcher does and starts it as the agent does.
"""

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from apsis_lite.agent.program import ExecFailed, Program
from apsis_lite.agent.protocol import parse_spec
from apsis_lite.config import load_config
from apsis_lite.engine.launcher import LocalLauncher
from apsis_lite.model.jobs import load_jobs_dir
from apsis_lite.model.programs import parse_program
from apsis_lite.model.runs import Run
from conftest import write_job
from users import RUN_AS_USER, SUDO_SERVER_USER, ensure_user

SHOW = ('echo "user=$(id -un)"; echo "home=$HOME|$USER|$LOGNAME"; echo "cwd=$(pwd)"; '
        'echo "run=$APSIS_RUN_ID|$APSIS_ARG_day|$MODE"; echo "leaked=${SERVER_SECRET-none}"')


@pytest.fixture(scope="module")
def users():
    if os.geteuid() != 0:
        raise RuntimeError("these tests need root to make their users and sudoers rule: run the suite "
                           "as root, as .ci/run does")
    if not shutil.which("sudo"):
        raise RuntimeError("these tests need sudo: 'make test' installs it (Debian's sudo)")
    return ensure_user(SUDO_SERVER_USER), ensure_user(RUN_AS_USER)


@pytest.fixture(scope="module")
def sudoers(users):
    """A sudoers.d rule letting the server user run anything as the run-as user, no password."""
    fd, path = tempfile.mkstemp(prefix="apsis-lite-test-", dir="/etc/sudoers.d")  # no '.': sudo reads it
    try:
        os.write(fd, f"{SUDO_SERVER_USER} ALL=({RUN_AS_USER}) NOPASSWD: ALL\n".encode())
        os.close(fd)
        os.chmod(path, 0o440)
        subprocess.run(["visudo", "-cqf", path], check=True)
        yield path
    finally:
        os.unlink(path)


def _as_server_user(users, fn):
    """``fn()``'s JSON-able result, computed in a child that has become the server user for good."""
    server = users[0]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(server.pw_gid)
            os.setuid(server.pw_uid)
            os.chdir("/")
            result = fn()
        except BaseException as exc:
            result = {"raised": type(exc).__name__, "message": str(exc)}
        finally:
            try:
                os.write(w, json.dumps(result).encode())
            finally:
                os._exit(0)
    os.close(w)
    with open(r, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _spec(tmp_path, program, sudo_for_user=True, args=None):
    """The spec the launcher writes for a run of ``program``, read back as the shepherd reads it."""
    data = Path(tempfile.mkdtemp(prefix="al-sudo-"))
    config = load_config(data_dir=str(data), sudo_for_user=sudo_for_user)
    os.environ["SERVER_SECRET"] = "s3cret"  # in the server's environment, not the run's
    try:
        launcher = LocalLauncher(config)
    finally:
        del os.environ["SERVER_SECRET"]
    run = Run(run_id=7, job_id="j", args=args or {"day": "mon"}, state="starting", time_schedule=0.0)
    spec = launcher.spec(run, parse_program(program))
    shutil.rmtree(data)
    return parse_spec(spec, str(tmp_path))


def _start(spec):
    """Start the spec as the shepherd does; its output and exit status, or the start's error."""
    def go():
        program = Program()
        try:
            out = program.spawn(spec)
        except ExecFailed as exc:
            return {"error": str(exc)}
        with open(out, "rb") as pipe:
            output = pipe.read().decode()
        _, status = os.waitpid(program.pid, 0)
        return {"output": output, "status": os.waitstatus_to_exitcode(status)}
    return go


def _lines(output):
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def test_the_program_runs_as_the_user_through_sudo(users, sudoers, tmp_path):
    other = users[1]
    spec = _spec(tmp_path, {"type": "shell", "command": SHOW, "user": RUN_AS_USER, "env": {"MODE": "full"}})
    got = _as_server_user(users, _start(spec))
    assert got.get("status") == 0, got
    seen = _lines(got["output"])
    assert seen["user"] == RUN_AS_USER
    assert seen["home"] == f"{other.pw_dir}|{RUN_AS_USER}|{RUN_AS_USER}"
    assert seen["cwd"] == other.pw_dir, "without cwd: the user's home"
    assert seen["run"] == "r7|mon|full", "the run's own variables are passed on"
    assert seen["leaked"] == "none", "the server's environment is not"


def test_cwd_is_where_the_program_starts_and_a_missing_one_fails_the_run(users, sudoers, tmp_path):
    spec = _spec(tmp_path, {"type": "shell", "command": "pwd", "user": RUN_AS_USER, "cwd": "/tmp"})
    assert _as_server_user(users, _start(spec)) == {"output": "/tmp\n", "status": 0}
    spec = _spec(tmp_path, {"type": "shell", "command": "pwd", "user": RUN_AS_USER, "cwd": "/no/such/dir"})
    got = _as_server_user(users, _start(spec))
    assert got["status"] == 126 and got["output"] == f"cannot chdir to /no/such/dir as {RUN_AS_USER}\n"


def test_a_user_sudo_refuses_is_the_runs_error_and_nothing_runs(users, sudoers, tmp_path):
    marker = tmp_path / "ran"
    tmp_path.chmod(0o777)
    spec = _spec(tmp_path, {"type": "shell", "command": f"touch {marker}", "user": "nobody"})
    got = _as_server_user(users, _start(spec))
    assert got["error"].startswith("exec failed: cannot run as 'nobody': sudo -n refused: sudo: "), got
    assert got["error"].endswith(f"(the sudoers policy must let '{SUDO_SERVER_USER}' run commands as "
                                 "'nobody' without a password)")
    assert not marker.exists()


def test_without_sudo_for_user_the_agent_refuses_to_switch(users, sudoers, tmp_path):
    spec = _spec(tmp_path, {"type": "shell", "command": "id -un", "user": RUN_AS_USER}, sudo_for_user=False)
    assert _as_server_user(users, _start(spec)) == {"error": (
        f"exec failed: cannot run as '{RUN_AS_USER}': the agent runs as '{SUDO_SERVER_USER}', not root "
        "(and the config does not set sudo_for_user)")}


def test_the_setting_decides_whether_the_job_file_loads(users):
    folder = Path(tempfile.mkdtemp(prefix="al-jobs-"))
    try:
        folder.chmod(0o755)
        write_job(folder, "as-other", f"program: {{type: shell, command: id, user: {RUN_AS_USER}}}\n")
        (folder / "as-other.yaml").chmod(0o644)

        def load(sudo_for_user):
            def go():
                jobs, errors = load_jobs_dir(str(folder), sudo_for_user=sudo_for_user)
                return [sorted(jobs), [f"{e.key}: {e.msg}" for e in errors]]
            return go
        assert _as_server_user(users, load(True)) == [["as-other"], []]
        refused = _as_server_user(users, load(False))
        assert refused[0] == [] and refused[1][0].startswith(
            f"program.user: cannot run programs as '{RUN_AS_USER}': the server runs as '{SUDO_SERVER_USER}'")
    finally:
        shutil.rmtree(folder)


def _gone(pid):
    """No process ``pid`` but perhaps a zombie not yet reaped by whoever inherited it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _stop_and_wait(spec, grace):
    """Start ``spec``, read the first line (a pid), stop it as a stop does (the signal, then
    SIGKILL after ``grace``); whether that pid and the group are gone, and how long it took."""
    def go():
        import signal
        import time
        from apsis_lite.agent.processes import group_members
        program = Program()
        out = program.spawn(spec)
        with open(out, "rb") as pipe:
            child = int(pipe.readline())
            started = time.monotonic()
            program.stop(signal.SIGTERM, grace)
            while group_members(program.pid) and time.monotonic() < started + 20:
                time.sleep(0.05)
                program.check_deadlines()
            gone = time.monotonic() - started
            pipe.read()
        _, status = os.waitpid(program.pid, 0)
        return {"child_gone": _gone(child), "seconds": gone,
                "status": os.waitstatus_to_exitcode(status)}
    return go


def test_a_stop_reaches_the_users_whole_group_through_sudo(users, sudoers, tmp_path):
    # sudo passes a signal on to its command only: the background sleep needs the group's.
    spec = _spec(tmp_path, {"type": "shell", "user": RUN_AS_USER, "command": "sleep 30 & echo $!; wait"})
    got = _as_server_user(users, _stop_and_wait(spec, grace=20))
    assert got["child_gone"] and got["seconds"] < 5, got
    assert got["status"] == -15, "the run ends killed by SIGTERM"


def test_the_sigkill_after_the_grace_period_reaches_the_users_processes(users, sudoers, tmp_path):
    spec = _spec(tmp_path, {"type": "shell", "user": RUN_AS_USER,
                            "command": "trap '' TERM; sleep 30 & echo $!; wait"})  # both ignore SIGTERM
    got = _as_server_user(users, _stop_and_wait(spec, grace=1))
    assert got["child_gone"] and 1 <= got["seconds"] < 5, got
    assert got["status"] == -9

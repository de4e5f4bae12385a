"""A job's ``user:`` is never ignored: a root server runs the program as that user, anything else refuses.

The server here runs as root (as in CI); the test user is made by the test
set-up. For a server that is not root, the job loader runs with the test
process's effective uid dropped to the test user's (a real identity, no
stand-in), and then gives it back.
"""

import contextlib
import os
import stat
import tempfile
from pathlib import Path

import pytest

from apsis_lite.errors import BadRequest
from apsis_lite.model.jobs import adhoc_job, load_jobs_dir
from conftest import write_job
from users import RUN_AS_USER, ensure_user

WHO = """\
program:
  type: shell
  user: {user}
  command: |
    echo "user=$(id -un)"
    echo "group=$(id -gn)"
    echo "uid=$(id -u)"
    echo "env=$HOME|$USER|$LOGNAME|$SHELL"
    echo "cwd=$(pwd)"
    echo "groups=$(id -G)"
"""


@pytest.fixture(scope="module")
def other():
    if os.geteuid() != 0:
        raise RuntimeError("these tests need a server running as root: run the suite as root, as .ci/run does")
    return ensure_user(RUN_AS_USER)


def _lines(server, run_id):
    _, body, _ = server.request("GET", f"/api/v1/runs/{run_id}/output")
    return dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)


def test_a_root_server_runs_the_program_as_the_named_user(other, server, jobs_dir):
    write_job(jobs_dir, "as-other", WHO.format(user=RUN_AS_USER))
    server.start()
    run = server.wait_run(server.post("/api/v1/runs", {"job_id": "as-other", "time": "now"})["run_id"])
    assert run["state"] == "success", run
    seen = _lines(server, run["run_id"])
    assert seen["user"] == RUN_AS_USER and seen["uid"] == str(other.pw_uid)
    assert seen["group"] == RUN_AS_USER
    assert seen["env"] == f"{other.pw_dir}|{RUN_AS_USER}|{RUN_AS_USER}|{other.pw_shell}"
    assert seen["cwd"] == other.pw_dir, "without cwd: the user's home, as a login"
    assert "0" not in seen["groups"].split(), "no group of root's is kept"


def test_the_user_owns_what_the_program_makes_and_cannot_touch_root_files(other, server, jobs_dir):
    shared = Path(tempfile.mkdtemp(prefix="al-runas-"))
    shared.chmod(0o777)
    private = Path(tempfile.mkdtemp(prefix="al-root-"))  # 0700, root's
    try:
        write_job(jobs_dir, "writes", f"""\
            program:
              type: shell
              user: {RUN_AS_USER}
              cwd: {shared}
              command: |
                touch made
                touch {private}/nope 2>&1 || echo refused
        """)
        server.start()
        run = server.wait_run(server.post("/api/v1/runs", {"job_id": "writes", "time": "now"})["run_id"])
        assert run["state"] == "success", run
        assert (shared / "made").stat().st_uid == other.pw_uid
        assert not (private / "nope").exists()
        assert b"refused" in server.request("GET", f"/api/v1/runs/{run['run_id']}/output")[1]
    finally:
        for d in (shared, private):
            for f in d.iterdir():
                f.unlink()
            d.rmdir()


def test_naming_the_servers_own_user_needs_no_switch(server, jobs_dir):
    write_job(jobs_dir, "as-me", WHO.format(user="root"))
    server.start()
    run = server.wait_run(server.post("/api/v1/runs", {"job_id": "as-me", "time": "now"})["run_id"])
    assert run["state"] == "success" and _lines(server, run["run_id"])["user"] == "root"


def test_a_user_that_does_not_exist_is_refused_when_the_file_loads(server, jobs_dir):
    write_job(jobs_dir, "nobody-here", WHO.format(user="no-such-user-x"))
    write_job(jobs_dir, "fine", "program: {type: no-op}\n")
    server.start()
    errors = server.get("/api/v1/jobs")["errors"]
    assert [(e["key"], e["message"]) for e in errors if "nobody-here" in e["path"]] == [
        ("program.user", "no such user on this machine: 'no-such-user-x'")]
    assert [j["job_id"] for j in server.get("/api/v1/jobs")["items"]] == ["fine"]
    check = server.cli("check-jobs", str(jobs_dir))
    assert check.returncode != 0 and "no such user on this machine: 'no-such-user-x'" in check.stdout + check.stderr
    assert "Traceback" not in check.stderr


def test_a_templated_user_is_checked_when_the_run_starts(other, server, jobs_dir):
    write_job(jobs_dir, "as-arg", """\
        params: [who]
        program: {type: shell, user: "{{ who }}", command: id -un}
    """)
    server.start()
    good = server.post("/api/v1/runs", {"job_id": "as-arg", "args": {"who": RUN_AS_USER}, "time": "now"})
    bad = server.post("/api/v1/runs", {"job_id": "as-arg", "args": {"who": "no-such-user-y"}, "time": "now"})
    good, bad = server.wait_run(good["run_id"]), server.wait_run(bad["run_id"])
    assert good["state"] == "success"
    assert server.request("GET", f"/api/v1/runs/{good['run_id']}/output")[1] == f"{RUN_AS_USER}\n".encode()
    assert bad["state"] == "error"
    assert "cannot run as 'no-such-user-y': no such user on this machine" in bad["message"], bad


def test_an_ad_hoc_program_naming_an_unknown_user_is_a_bad_request(server):
    server.start()
    status, body, _ = server.request("POST", "/api/v1/runs", {
        "program": {"type": "shell", "command": "id", "user": "no-such-user-z"}, "time": "now"})
    assert status == 400 and b"program.user: no such user on this machine: 'no-such-user-z'" in body


@contextlib.contextmanager
def _effective_user(entry):
    """The test process as ``entry``'s user (effective ids only), then root again."""
    os.setegid(entry.pw_gid)
    os.seteuid(entry.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_a_server_that_is_not_root_refuses_a_file_naming_another_user(other):
    folder = Path(tempfile.mkdtemp(prefix="al-jobs-"))
    folder.chmod(0o755)
    try:
        write_job(folder, "as-root", WHO.format(user="root"))
        write_job(folder, "as-self", WHO.format(user=RUN_AS_USER))
        for f in folder.iterdir():
            f.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        with _effective_user(other):
            jobs, errors = load_jobs_dir(str(folder))
            with pytest.raises(BadRequest) as refused:
                adhoc_job({"type": "shell", "command": "id", "user": "root"}, "adhoc")
        assert sorted(jobs) == ["as-self"], "its own user needs no switch"
        assert [(e.key, e.msg) for e in errors] == [(
            "program.user",
            f"cannot run programs as 'root': the server runs as '{RUN_AS_USER}', not root, and runs "
            "programs only as itself (run the server as root, set sudo_for_user: true in its config "
            "with a sudoers rule, or remove user:)")]
        assert "cannot run programs as 'root'" in str(refused.value)
    finally:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


def test_a_stop_ends_the_users_whole_process_group(other, server, jobs_dir):
    pidfile = Path(tempfile.mkdtemp(prefix="al-pid-"))
    pidfile.chmod(0o777)
    pidfile = pidfile / "grandchild"
    write_job(jobs_dir, "long", f"""\
        program:
          type: shell
          user: {RUN_AS_USER}
          command: |
            sh -c 'trap "" TERM; echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 300' &
            wait
          stop: {{signal: SIGTERM, grace_period: 1s}}
    """)
    server.start()
    rid = server.post("/api/v1/runs", {"job_id": "long", "time": "now"})["run_id"]
    grandchild = int(server.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(),
                                     what="the grandchild's pid"))
    assert Path(f"/proc/{grandchild}").stat().st_uid == other.pw_uid
    server.post(f"/api/v1/runs/{rid}/stop")
    run = server.wait_run(rid, timeout=30)
    # The shell died by the stop's SIGTERM (success, as in apsis); the grandchild needed SIGKILL.
    assert run["state"] in ("success", "failure", "error"), run
    stat_line = Path(f"/proc/{grandchild}/stat")
    assert not stat_line.exists() or stat_line.read_text().split(") ")[1][0] == "Z", \
        "the user's grandchild outlived the stop"
    os.unlink(pidfile)
    pidfile.parent.rmdir()

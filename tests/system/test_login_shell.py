"""login_shell: true runs a shell program through a login shell (bash -l), which reads the
profile files of the HOME it is given, through the real server and agent."""

import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import write_job

SHOW = 'echo "profile=${FROM_PROFILE-unset} login=$(shopt -q login_shell && echo yes || echo no)"'


@pytest.fixture
def homes():
    """Two homes: one with a .bash_profile (bash reads it before .profile), one with only a .profile."""
    root = Path(tempfile.mkdtemp(prefix="al-home-"))
    (root / "bash").mkdir()
    (root / "bash" / ".bash_profile").write_text("export FROM_PROFILE=bash_profile\n")
    (root / "bash" / ".profile").write_text("export FROM_PROFILE=profile-not-read\n")
    (root / "plain").mkdir()
    (root / "plain" / ".profile").write_text('export FROM_PROFILE="dot profile"\n')
    yield root
    shutil.rmtree(root)


def _output(server, job_id):
    run = server.wait_run(server.post("/api/v1/runs", {"job_id": job_id})["run_id"])
    assert run["state"] == "success", run
    return server.request("GET", f"/api/v1/runs/{run['run_id']}/output")[1].decode()


def test_a_login_shell_reads_the_profile_of_its_home(server, jobs_dir, homes):
    for name, login, home in [("bash-login", "true", "bash"), ("plain-login", "true", "plain"),
                              ("not-login", "false", "bash")]:
        write_job(jobs_dir, name, f"""\
            program:
              type: shell
              login_shell: {login}
              env: {{HOME: {homes / home}}}
              command: '{SHOW}'
            """)
    server.start()
    assert _output(server, "bash-login") == "profile=bash_profile login=yes\n"
    assert _output(server, "plain-login") == "profile=dot profile login=yes\n"
    assert _output(server, "not-login") == "profile=unset login=no\n"
    job = server.get("/api/v1/jobs/bash-login")
    assert job["program"]["login_shell"] is True


def test_login_shell_must_be_true_or_false(server, jobs_dir):
    write_job(jobs_dir, "bad", "program: {type: shell, command: 'true', login_shell: sometimes}\n")
    server.start()
    errors = server.get("/api/v1/jobs")["errors"]
    assert [(e["key"], e["message"]) for e in errors] == [
        ("program.login_shell", "expected true or false, got str 'sometimes'")]

"""Files on disk: everything the server, its agent and its shepherds create under the data
folder is owner-only (files 0600, folders 0700) whatever the umask they were started with,
and programs and command actions get that umask back; files an older version left readable
by others are tightened at start."""

import os
import stat
import time
from contextlib import contextmanager

import pytest
from conftest import Server, write_job


@contextmanager
def umask(value):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def readable_by_others(root):
    """Every path under ``root`` (``root`` too) whose mode lets its group or others in, with that mode."""
    found = []
    for folder, dirs, files in os.walk(root):
        for path in [folder] + [os.path.join(folder, name) for name in files]:
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                found.append(f"{os.path.relpath(path, root)} {stat.filemode(mode)}")
    return found


@pytest.mark.parametrize("started_with", [0o022, 0o000])
def test_the_data_folder_is_owner_only_and_programs_get_the_umask_started_with(
        jobs_dir, data_dir, tmp_path, started_with):
    out = tmp_path / "made"
    write_job(jobs_dir, "show", f"""
        program: "umask; touch '{out}.program'"
        action: {{type: command, command: "umask > '{out}.action'"}}
    """)
    write_job(jobs_dir, "long", "program: 'umask; sleep 60'\n")
    with umask(started_with):
        srv = Server(jobs_dir, data_dir, ["--log-file", str(data_dir / "logs" / "apsis-lite.log")]).start()
    try:
        # Users, their tokens and a used login link: files the CLI and the login page write.
        result = srv.cli("user", "add", "ann", "--role", "viewer", "--password-stdin",
                         "--data", str(data_dir), input="ann's password\n")
        assert result.returncode == 0, result.stderr
        srv.request("GET", srv.login_link()[len(srv.url):], token=False)
        done = srv.wait_run(srv.post("/api/v1/runs", {"job_id": "show"})["run_id"])
        assert done["state"] == "success", done
        expected = f"{started_with:04o}\n"
        assert srv.request("GET", f"/api/v1/runs/{done['run_id']}/output")[1].decode() == expected
        assert stat.S_IMODE(os.stat(f"{out}.program").st_mode) == 0o666 & ~started_with
        srv.wait_for(lambda: os.path.exists(f"{out}.action") and open(f"{out}.action").read(),
                     what="the command action")
        assert open(f"{out}.action").read() == expected
        # A run in flight: its folder, spec, pid files and output so far.
        running = srv.post("/api/v1/runs", {"job_id": "long"})["run_id"]
        srv.wait_run(running, states=("running",))
        srv.wait_for(lambda: srv.request("GET", f"/api/v1/runs/{running}/output")[1] == expected.encode(),
                     what="the long run's output")
        names = {os.path.relpath(os.path.join(d, f), data_dir) for d, _, fs in os.walk(data_dir) for f in fs}
        for name in ("apsis-lite.db", "apsis-lite.db-wal", "apsis-lite.db-shm", "token", "users.json",
                     "used-login-links", "sessions", "server.url", "server.pid", "notify.sock", "agent/agent.pid",
                     "agent/agent.sock", "agent/agent.log", "logs/apsis-lite.log",
                     f"runs/{running}/output", f"runs/{running}/spec.claimed.json"):
            assert name in names, (name, sorted(names))
        assert readable_by_others(data_dir) == []
        assert stat.S_IMODE(os.stat(data_dir / "runs").st_mode) == 0o700
        srv.post(f"/api/v1/runs/{running}/stop")
        srv.wait_run(running)
    finally:
        srv.stop()


def test_files_an_older_version_left_readable_are_tightened_at_start(jobs_dir, data_dir):
    with umask(0o022):
        srv = Server(jobs_dir, data_dir).start()
        done = srv.wait_run(srv.post("/api/v1/runs", {"program": "true"})["run_id"])
        assert done["state"] == "success"
        srv.stop()
    # As an older version left them: the database, the run folders, the agent's folder
    # (and no sign that the server has been through them).
    (data_dir / ".owner-only").unlink()
    loosened = []
    for folder, dirs, files in os.walk(data_dir):
        for path in [folder] + [os.path.join(folder, f) for f in files]:
            os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
            loosened.append(path)
    assert len(readable_by_others(data_dir)) == len(loosened) > 10
    started = time.monotonic()
    with umask(0o022):
        srv.start()
    try:
        assert readable_by_others(data_dir) == []
        assert time.monotonic() - started < 10
    finally:
        srv.stop()
    # Once: what is loosened later (by hand) is not the server's doing, and is left as it is.
    os.chmod(data_dir / "apsis-lite.db", 0o640)
    srv.start()
    try:
        # (SQLite gives the -wal and -shm files the database's mode.)
        assert sorted(readable_by_others(data_dir)) == [f"apsis-lite.db{end} -rw-r-----" for end in ("", "-shm", "-wal")]
    finally:
        srv.stop()


def test_user_add_sets_the_users_file_mode_and_leaves_folders_it_did_not_create_alone(jobs_dir, data_dir,
                                                                                      tmp_path):
    # As with users_file: /etc/apsis-lite/users.json, the folder shared with services that read it.
    shared = tmp_path / "etc" / "apsis-lite"
    shared.mkdir(parents=True)
    os.chmod(tmp_path / "etc", 0o755)
    os.chmod(shared, 0o755)
    config = tmp_path / "apsis-lite.yaml"
    config.write_text(f"users_file: {shared / 'users.json'}\n")
    with umask(0o022):
        srv = Server(jobs_dir, data_dir, ["--config", str(config)]).start()
    try:
        result = srv.cli("user", "add", "ann", "--role", "operator", "--password-stdin", "--config", str(config),
                         "--data", str(data_dir), input="ann's password\n")
        assert result.returncode == 0, result.stderr
        token = srv.cli("user", "token", "ann", "--config", str(config), "--data", str(data_dir)).stdout.strip()
        assert srv.request("GET", "/api/v1/runs", token=token)[0] == 200  # the server reads the file
        assert stat.S_IMODE(os.stat(shared / "users.json").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(shared).st_mode) == 0o755
        assert stat.S_IMODE(os.stat(tmp_path / "etc").st_mode) == 0o755
        assert [p.name for p in shared.iterdir()] == ["users.json"]  # no temporary file left beside it
    finally:
        srv.stop()
    # A users file in folders that do not exist yet: they are made, owner-only.
    config.write_text(f"users_file: {tmp_path / 'new' / 'deeper' / 'users.json'}\n")
    with umask(0o022):
        result = srv.cli("user", "add", "bob", "--role", "viewer", "--password-stdin", "--config", str(config),
                         input="bob's password\n")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "deeper").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "deeper" / "users.json").st_mode) == 0o600

"""The ssh transport against a real sshd on 127.0.0.1: commands run as the login
user, the master connection is reused, and every failure is one clear message
naming the host."""

import os
import re
import stat
import subprocess

import pytest

from apsis_lite.config import HostSettings
from apsis_lite.hosts import ssh
from remote_hosts import clean_remote_cache, make_target, sshd, stranger_key  # noqa: F401 (fixtures)
from sshd import NO_PYTHON_USER, free_port


def test_a_command_runs_as_the_login_user_with_its_words_and_stdin_intact(make_target):
    target = make_target()
    assert ssh.call(target, ["id", "-un"]).stdout == b"apsis-remote\n"
    words = ["a b", "it's", "$HOME", "*", "`id`", ";", "ü"]
    out = ssh.call(target, ["printf", "%s|", *words]).stdout.decode()
    assert out == "|".join(words) + "|"
    data = bytes(range(256)) * 64
    assert ssh.call(target, ["cat"], stdin=data).stdout == data
    done = ssh.call(target, ["sh", "-c", "echo oops >&2; exit 7"])
    assert (done.status, done.stderr) == (7, b"oops\n")
    assert ssh.failure(target, done) is None  # the program's own failure is not the transport's


def _master_pid(target):
    check = subprocess.run(ssh.ssh_argv(target, control="check"), capture_output=True, text=True, timeout=10)
    assert check.returncode == 0, check.stderr
    return int(re.search(r"pid=(\d+)", check.stderr).group(1))


def test_the_second_command_reuses_the_master_connection(make_target):
    target = make_target()
    assert not ssh.master_running(target)
    ssh.call(target, ["true"])
    socket_path = target.control_path()
    info = os.stat(socket_path)
    assert stat.S_ISSOCK(info.st_mode)
    assert len(socket_path) + 17 < 108  # ssh binds it with a random suffix first
    assert ssh.master_running(target)
    master = _master_pid(target)
    assert ssh.call(target, ["id", "-un"]).stdout == b"apsis-remote\n"
    assert _master_pid(target) == master
    assert os.stat(socket_path).st_ino == info.st_ino
    ssh.close_master(target)
    assert not ssh.master_running(target) and not os.path.exists(socket_path)


def test_a_data_folder_too_long_for_a_socket_address_gets_a_short_private_control_folder(make_target, tmp_path):
    long_data_dir = tmp_path / ("d" * 100) / "data"
    folder = ssh.control_dir(str(long_data_dir))
    assert len(folder) < 60 and folder != str(long_data_dir / "ssh")
    assert ssh.control_dir(str(long_data_dir)) == folder  # stable across restarts
    target = ssh.Target(make_target().settings, folder)
    try:
        assert ssh.call(target, ["echo", "hi"]).stdout == b"hi\n"
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert ssh.master_running(target)
    finally:
        ssh.close_master(target)


def test_the_command_line_passes_only_what_the_config_gives():
    bare = ssh.ssh_argv(ssh.Target(HostSettings("web1", "web1"), "/tmp/x"), "true")
    assert not {"-l", "-p", "-i"} & set(bare)
    assert bare[-3:] == ["--", "web1", "true"]
    options = [bare[i + 1] for i, word in enumerate(bare) if word == "-o"]
    assert "BatchMode=yes" in options and "ControlMaster=auto" in options
    assert any(o.startswith("ControlPath=/tmp/x/") for o in options)
    full = ssh.ssh_argv(ssh.Target(HostSettings("web1", "w.example", "deploy", 2222, "/k", ("ConnectTimeout=3",)), "/tmp/x"))
    assert full[full.index("-l") + 1] == "deploy" and full[full.index("-p") + 1] == "2222"
    assert full[full.index("-i") + 1] == "/k" and full[-1] == "w.example"
    # ssh keeps the first value it reads: the host's own options come before the defaults.
    assert full.index("ConnectTimeout=3") < full.index(f"ConnectTimeout={ssh.CONNECT_TIMEOUT}")


def test_a_host_reached_through_its_ssh_options_alone(make_target, sshd):
    target = make_target(user=None, port=None, identity_file=None, ssh_options=(
        f"Port={sshd.port}", f"User={sshd.user}", f"IdentityFile={sshd.client_key}", "IdentitiesOnly=yes",
        f"UserKnownHostsFile={sshd.known_hosts}"))
    assert ssh.call(target, ["id", "-un"]).stdout == b"apsis-remote\n"


def _failure(target, argv=("true",)):
    with pytest.raises(ssh.HostError) as caught:
        ssh.call(target, list(argv))
    message = str(caught.value)
    assert target.name in message
    return message


def test_a_port_nobody_listens_on_is_unreachable(make_target):
    message = _failure(make_target(name="downhost", port=free_port()))
    assert "host downhost (apsis-remote@127.0.0.1:" in message
    assert message.endswith("is unreachable: connection refused")


def test_an_unknown_host_name_is_unreachable(make_target):
    message = _failure(make_target(name="ghost", hostname="no-such-host.invalid"))
    assert message.endswith("is unreachable: unknown host name")


def test_a_key_the_server_refuses(make_target, stranger_key):
    message = _failure(make_target(name="locked", identity_file=str(stranger_key)))
    assert "authentication refused for apsis-remote" in message


def test_an_unknown_host_key_is_not_accepted_without_asking(make_target, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    message = _failure(make_target(name="newhost", known_hosts=empty))
    assert "the host key is unknown" in message and "known_hosts" in message
    assert empty.read_text() == ""  # nothing was added behind the user's back


def test_a_changed_host_key_is_refused(make_target, sshd, tmp_path, stranger_key):
    other = tmp_path / "known_hosts"
    other.write_text(f"[127.0.0.1]:{sshd.port} {(tmp_path / 'stranger_key.pub').read_text()}")
    message = _failure(make_target(name="moved", known_hosts=other))
    assert "the host key has changed" in message and "ssh-keygen -R" in message


def test_a_login_user_without_python3(make_target):
    message = _failure(make_target(name="bare", user=NO_PYTHON_USER), ["python3", "--version"])
    assert message.startswith("no python3 on host bare")


def test_a_command_that_does_not_finish_in_time(make_target):
    target = make_target(name="slow")
    with pytest.raises(ssh.HostError, match=r"host slow \(.*\): no answer within 0.5 s"):
        ssh.run_shell(target, "sleep 10", timeout=0.5)


def test_a_stale_control_socket_does_not_stop_the_next_command(make_target):
    target = make_target()
    ssh.call(target, ["true"])
    master = _master_pid(target)
    os.kill(master, 9)
    assert os.path.exists(target.control_path())  # left behind by the dead master
    assert ssh.call(target, ["echo", "again"]).stdout == b"again\n"

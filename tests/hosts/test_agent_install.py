"""The agent zipapp: it runs on its own, and a host gets it once per version,
checked before it takes its real name (a real sshd on 127.0.0.1, whose login
user's home is the 'remote' cache)."""

import os
import shutil
import subprocess
import sys

import pytest

from apsis_lite.hosts import install, ssh
from remote_hosts import clean_remote_cache, make_target, sshd, stranger_key  # noqa: F401 (fixtures)
from sshd import NO_PYTHON_USER


def _isolated_python(*args, cwd):
    """This Python with neither site-packages nor the checkout: only what the zipapp carries."""
    return subprocess.run([sys.executable, "-I", "-S", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_the_zipapp_runs_the_agent_with_nothing_else_installed(tmp_path):
    pyz = tmp_path / "agent.pyz"
    pyz.write_bytes(install.shipped_zipapp().data)
    shown = _isolated_python(str(pyz), "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "usage:" in shown.stdout and "state_dir" in shown.stdout
    every_module = ("import pkgutil, sys; sys.path.insert(0, sys.argv[1]); import apsis_lite.agent as a; "
                    "names = [m.name for m in pkgutil.iter_modules(a.__path__)]; "
                    "[__import__('apsis_lite.agent.' + n) for n in names]; print(len(names), a.__file__)")
    imported = _isolated_python("-c", every_module, str(pyz), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    count, where = imported.stdout.split()
    modules = [p for p in install.AGENT_SOURCE.glob("*.py") if p.name != "__init__.py"]
    assert int(count) == len(modules) and where.startswith(str(pyz))


def test_the_zipapp_is_named_by_its_contents(tmp_path):
    assert install.build_zipapp().name == install.shipped_zipapp().name  # same sources, same bytes
    changed = _changed_agent(tmp_path)
    assert install.build_zipapp(changed).name != install.shipped_zipapp().name


def _changed_agent(tmp_path):
    copy = tmp_path / "agent"
    shutil.copytree(install.AGENT_SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "protocol.py", "a") as f:
        f.write("\n# a newer agent\n")
    return copy


def _remote_stat(target, path):
    done = ssh.call(target, ["stat", "-c", "%i %Y %a %U", path])
    assert done.status == 0, done.stderr
    return done.stdout.decode().split()


def test_the_agent_is_installed_once_and_not_uploaded_again(make_target, clean_remote_cache):
    target = make_target()
    first = install.install_agent(target)
    assert first.uploaded and first.path == os.path.join(clean_remote_cache, install.shipped_zipapp().name)
    inode, mtime, mode, owner = _remote_stat(target, first.path)
    assert (mode, owner) == ("600", "apsis-remote")
    assert ssh.call(target, ["python3", first.path, "--help"]).status == 0
    again = install.install_agent(target)
    assert not again.uploaded and again.path == first.path
    assert _remote_stat(target, first.path)[:2] == [inode, mtime]
    assert os.listdir(clean_remote_cache) == [install.shipped_zipapp().name]  # no temporary left


def test_a_new_agent_version_replaces_the_old_one(make_target, clean_remote_cache, tmp_path):
    target = make_target()
    old = install.install_agent(target)
    new_zipapp = install.build_zipapp(_changed_agent(tmp_path))
    new = install.install_agent(target, new_zipapp)
    assert new.uploaded and new.path != old.path
    assert os.listdir(clean_remote_cache) == [new_zipapp.name]
    assert ssh.call(target, ["python3", new.path, "--help"]).status == 0
    assert not install.install_agent(target, new_zipapp).uploaded


def test_an_agent_that_does_not_start_never_takes_the_real_name(make_target, clean_remote_cache):
    broken = install.Zipapp(b"print('not an agent')\nraise SystemExit(3)\n")
    with pytest.raises(ssh.HostError, match="host testhost: installing the agent in ~/.cache/apsis-lite failed"):
        install.install_agent(make_target(), broken)
    assert os.listdir(clean_remote_cache) == []


def test_no_python3_on_the_host_is_said_before_anything_is_uploaded(make_target):
    target = make_target(name="bare", user=NO_PYTHON_USER)
    with pytest.raises(ssh.HostError, match="^no python3 on host bare"):
        install.install_agent(target)
    home = os.path.expanduser(f"~{NO_PYTHON_USER}")
    assert not os.path.exists(os.path.join(home, ".cache", "apsis-lite"))


def test_the_installer_checks_each_host_at_its_first_use_only(make_target, clean_remote_cache):
    installer = install.AgentInstaller()
    target = make_target()
    first = installer.ensure(target)
    assert first.uploaded
    os.remove(first.path)
    assert installer.ensure(target) is first  # remembered: no round trip
    installer.forget(target)
    assert installer.ensure(target).uploaded and os.path.exists(first.path)


def test_an_unreachable_host_is_named_when_installing(make_target):
    from sshd import free_port
    with pytest.raises(ssh.HostError, match=r"^host down \(.*\) is unreachable: connection refused$"):
        install.install_agent(make_target(name="down", port=free_port()))

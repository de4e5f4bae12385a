"""hosts: and host_groups: in the config: what they give, and a clear ConfigError
naming the key for everything else."""

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from apsis_lite.config import Config, HostGroup, HostSettings, load_config
from apsis_lite.errors import ConfigError
from apsis_lite.hosts import ssh
from strategies_config import config_mappings


def _load(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path)


def test_hosts_and_groups_from_the_config_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = _load(tmp_path, """
hosts:
  web1: {user: deploy, port: 2222, identity_file: ~/.ssh/id_web, ssh_options: [Compression=yes]}
  web2: {hostname: 10.0.0.2}
  db:
host_groups:
  web: {hosts: [web1, web2, spare.example.com], select: least-busy}
  all: {hosts: [web1, db]}
""")
    assert config.hosts["web1"] == HostSettings("web1", "web1", "deploy", 2222, str(tmp_path / ".ssh/id_web"),
                                                ("Compression=yes",))
    assert config.hosts["web2"] == HostSettings("web2", "10.0.0.2")
    assert config.hosts["db"] == HostSettings("db", "db")  # everything else from ~/.ssh/config
    assert config.host_groups["web"] == HostGroup("web", ("web1", "web2", "spare.example.com"), "least-busy")
    assert config.host_groups["all"].select == "round-robin"
    # A name not under hosts: is an ssh destination with every default.
    assert ssh.target(config, "spare.example.com").settings == HostSettings("spare.example.com", "spare.example.com")
    assert ssh.target(config, "web1").settings is config.hosts["web1"]


def test_no_hosts_by_default(tmp_path):
    config = _load(tmp_path, "port: 5006\n")
    assert config.hosts == {} and config.host_groups == {}


@pytest.mark.parametrize("text, message", [
    ("hosts: [web1]", "config: hosts: expected a mapping of host name: settings"),
    ("hosts: {web1: {colour: red}}", "config: hosts: web1: colour: unknown key (known: hostname, user, port, "
                                      "identity_file, ssh_options)"),
    ("hosts: {web1: {port: 0}}", "config: hosts: web1: port: must be a whole number from 1 to 65535, not 0"),
    ("hosts: {web1: {port: '22'}}", "config: hosts: web1: port: must be a whole number from 1 to 65535, not '22'"),
    ("hosts: {web1: {port: true}}", "config: hosts: web1: port: must be a whole number from 1 to 65535, not True"),
    ("hosts: {web1: {user: 'a@b'}}", "config: hosts: web1: user: may not contain '@', not 'a@b'"),
    ("hosts: {web1: {user: -oProxyCommand=sh}}", "config: hosts: web1: user '-oProxyCommand=sh' may not start "
                                                 "with '-' or contain spaces or control characters"),
    ("hosts: {'-oProxyCommand=sh': {}}", "config: hosts: host name '-oProxyCommand=sh' may not start with '-'"),
    ("hosts: {web1: {hostname: 'a b'}}", "config: hosts: web1: hostname 'a b' may not start with '-'"),
    ("hosts: {web1: {identity_file: 5}}", "config: hosts: web1: identity_file: must be a file name, not 5"),
    ("hosts: {web1: {ssh_options: [Compression]}}", "config: hosts: web1: ssh_options: expected Key=Value "
                                                    "(as for ssh -o), not 'Compression'"),
    ("hosts: {web1: {ssh_options: [BatchMode=no]}}", "config: hosts: web1: ssh_options: BatchMode is always yes"),
    ("hosts: {web1: {ssh_options: {a: b}}}", "config: hosts: web1: ssh_options: expected a list of Key=Value texts"),
    ("host_groups: [a]", "config: host_groups: expected a mapping of group name: {hosts, select}"),
    ("host_groups: {web: {hosts: []}}", "config: host_groups: web: hosts: expected a non-empty list of host names"),
    ("host_groups: {web: {}}", "config: host_groups: web: hosts: expected a non-empty list of host names, not None"),
    ("host_groups: {web: {hosts: [a, a]}}", "config: host_groups: web: hosts: a host is listed twice"),
    ("host_groups: {web: {hosts: [a], select: first}}", "config: host_groups: web: select: must be round-robin, "
                                                        "random, least-busy, not 'first'"),
    ("host_groups: {web: {hosts: [a], pick: random}}", "config: host_groups: web: pick: unknown key"),
    ("hosts: {web: }\nhost_groups: {web: {hosts: [a]}}", "config: host_groups: web: is also the name of a host"),
])
def test_a_bad_host_setting_names_its_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert str(caught.value).startswith(message)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mapping=config_mappings)
def test_any_mapping_gives_a_config_or_a_config_error(mapping):
    try:
        config = load_config(None, **mapping)
    except ConfigError as exc:
        assert str(exc).startswith("config: ") and "\n" not in str(exc).split(":")[1]
        return
    assert isinstance(config, Config)
    for name, host in config.hosts.items():
        assert host.name == name and not host.hostname.startswith("-")
        assert not any(o.lower().startswith("batchmode") for o in host.ssh_options)
    for group in config.host_groups.values():
        assert group.hosts and group.select in ("round-robin", "random", "least-busy")


@settings(max_examples=100, deadline=None)
@given(mapping=config_mappings)
def test_any_config_file_gives_a_config_or_a_config_error(tmp_path_factory, mapping):
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(yaml.safe_dump(mapping, allow_unicode=True))
    try:
        load_config(path)
    except ConfigError:
        pass


def test_an_infinite_number_is_a_config_error():
    # Found by the property above: int(.inf) raised OverflowError, a traceback.
    from apsis_lite.config import load_config
    with pytest.raises(ConfigError, match="^config: output_head: cannot convert float infinity to integer$"):
        load_config(None, output_head=float("inf"))

"""apsis's config file: its keys with a meaning here are mapped, the others listed
once at start-up with why, unknown keys are errors naming them; ``--override``."""

import os
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from apsis_lite.config import load_config
from apsis_lite.errors import ConfigError
from conftest import Server, _kill_agents, short_tmpdir, write_job
from strategies_config import apsis_config_mappings

APSIS_CONFIG = """
    jobs: ./jobs
    database:
      path: ./apsis.db
      timeout: 10s
    runs:
      lookback: 86400
    schedule:
      since: null
      max_age: 600
      horizon: 86400
    waiting:
      max_time: 1h
    program_types:
      sh: shell
    host_groups:
      web:
        type: round-robin
        hosts: [web1, web2]
      pool: [a, b, c]
      alias: web4
    smtp:
      host: mail.example.com
      port: 587
      ssl: starttls
      auth: {username: ann, password: secret}
    python:
      gc: {enable: false, threshold: [100000, 100, 100]}
    procstar:
      agent: {enable: true}
"""


def write(folder, text):
    path = folder / "apsis.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_apsis_keys_are_mapped_relative_to_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")  # apsis reads relative paths from the config file's folder, not the working one
    config = load_config(write(tmp_path, APSIS_CONFIG))
    assert config.jobs_dir == str(tmp_path / "jobs")
    assert config.data_dir == str(tmp_path / "apsis-lite")  # beside apsis's database, not in its folder
    assert config.max_age == 600
    assert config.waiting_max_time == 3600
    assert config.program_types == {"sh": "shell"}
    groups = {name: (g.hosts, g.select) for name, g in config.host_groups.items()}
    assert groups == {"web": (("web1", "web2"), "round-robin"), "pool": (("a", "b", "c"), "random"),
                      "alias": (("web4",), "round-robin")}
    assert (config.smtp_host, config.smtp_port, config.smtp_security, config.smtp_user, config.smtp_password) == \
        ("mail.example.com", 587, "starttls", "ann", "secret")
    ignored = sorted(note.split(":")[0] for note in config.notes)
    assert ignored == ["database.path", "database.timeout", "procstar", "python", "runs.lookback", "schedule.horizon"]
    assert all(len(note) > 40 for note in config.notes)  # each says why


def test_our_settings_win_over_apsis_equivalents_and_flags_over_both(tmp_path):
    path = write(tmp_path, """
        jobs: apsis-jobs
        jobs_dir: /srv/jobs
        database: /var/apsis/apsis.db
        schedule: {max_age: 600}
        max_age: 30
    """)
    config = load_config(path, data_dir="/tmp/x")
    assert (config.jobs_dir, config.data_dir, config.max_age) == ("/srv/jobs", "/tmp/x", 30)


@pytest.mark.parametrize("text, message", [
    ("colour: blue", "colour: unknown setting"),
    ("schedule: {max_age: 60, speed: 2}", "schedule.speed: unknown setting"),
    ("database: {path: a.db, pool: 3}", "database.pool: unknown setting"),
    ("runs: 5", "runs: expected a mapping"),
    ("host_groups: {web: {type: fastest, hosts: [a]}}", "host_groups: web: type: must be round-robin, random"),
    ("smtp: {ssl: maybe}", "smtp.ssl: expected true, false or starttls"),
    ("schedule: {max_age: soon}", "max_age"),
])
def test_a_key_neither_ours_nor_apsis_is_an_error_naming_it(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(write(tmp_path, text))


def test_override_sets_dotted_apsis_names_and_ours_over_the_file(tmp_path):
    path = write(tmp_path, "schedule: {max_age: 600}\nport: 8000\n")
    config = load_config(path, ["schedule.max_age=20m", "port=0", "resources={db: 2}", "waiting.max_time=90"])
    assert (config.max_age, config.port, config.resources, config.waiting_max_time) == (1200, 0, {"db": 2}, 90)
    assert load_config(None, ["runs.lookback=100"]).notes[0].startswith("runs.lookback: ignored")


@pytest.mark.parametrize("text, message", [
    ("max_age", "expected NAME=VALUE"), ("=3", "expected NAME=VALUE"), ("a..b=1", "expected NAME=VALUE"),
    ("colour=blue", "colour: unknown setting"), ("port=x", "port"),
    ("port.x=1", "port"), ("schedule.max_age.x=1", "max_age"),
])
def test_a_bad_override_is_an_error_naming_it(text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [text])


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mapping=apsis_config_mappings)
def test_any_apsis_shaped_config_gives_a_config_or_a_config_error(tmp_path, mapping):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(mapping))
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc)


def test_serve_reads_an_apsis_config_and_lists_what_it_ignores_once():
    """A real server on an apsis config: its jobs folder, a program type alias, and
    the ignored keys said once in its log; check-jobs reads the same file."""
    folder = Path(short_tmpdir("al-apsis-"))  # short: the data folder holds Unix sockets
    write(folder, APSIS_CONFIG)
    write_job(folder / "jobs", "hello", """
        program:
          type: sh
          command: echo hello from an alias
    """)
    data = folder / "apsis-lite"
    srv = Server(folder / "jobs", data)
    # The server's --jobs and --data are given by the fixture; they say the same as the file.
    srv.extra_args = ["--config", str(folder / "apsis.yaml"), "--override", "schedule.max_age=5m"]
    srv.start()
    try:
        run = srv.post("/api/v1/runs", {"job_id": "hello", "args": {}, "time": "now"})
        done = srv.wait_run(run["run_id"].lstrip("r"))
        assert done["state"] == "success"
        status, body, _ = srv.request("GET", f"/api/v1/runs/{run['run_id']}/output")
        assert body == b"hello from an alias\n"
        log = srv.log()
        for key in ("runs.lookback", "schedule.horizon", "python", "procstar", "database.timeout"):
            assert log.count(f"{key}: ignored:") == 1, (key, log)
        assert not os.path.exists(folder / "apsis.db")  # apsis's file is neither made nor read
        checked = srv.cli("check-jobs", str(folder / "jobs"), "--config", str(folder / "apsis.yaml"))
        assert checked.returncode == 0, checked.stderr
    finally:
        srv.stop()
        _kill_agents(data)
        shutil.rmtree(folder, ignore_errors=True)


def test_an_alias_to_a_type_nobody_registered_is_said_and_the_job_does_not_load(tmp_path):
    folder = tmp_path / "apsis"
    write(folder if folder.mkdir() is None else folder,
          "jobs: jobs\nprogram_types:\n  foo_shell: foo.apsis.extension.programs.Shell\n")
    write_job(folder / "jobs", "x", "program: {type: foo_shell, command: 'true'}\n")
    srv = Server(folder / "jobs", folder / "data")
    result = srv.cli("check-jobs", str(folder / "jobs"), "--config", str(folder / "apsis.yaml"))
    assert result.returncode == 1
    assert "program_types: foo_shell: no program type 'foo.apsis.extension.programs.Shell'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_the_desktop_start_keeps_the_jobs_folder_an_apsis_config_names(tmp_path):
    from apsis_lite.cli.desktop import load_user_config
    config = load_user_config(str(write(tmp_path, "jobs: ./apsis-jobs\ndatabase: ./apsis.db\n")))
    assert (config.jobs_dir, config.data_dir) == (str(tmp_path / "apsis-jobs"), str(tmp_path / "apsis-lite"))

"""``check-jobs --config`` warns about a ``host:`` that names none of the config's hosts or
host groups (a run would go to an ssh destination of that name), and a procstar
``group_id`` that names no host group (its runs would end in error).

Run as a user runs it: ``apsis-lite check-jobs`` as a subprocess over a real jobs folder
and config file.
"""

import subprocess
import sys

from conftest import ROOT, write_job


def check_jobs(*args):
    done = subprocess.run([sys.executable, "-m", "apsis_lite", "check-jobs", *map(str, args)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_hosts_and_groups_missing_from_the_config_are_warned_about(jobs_dir, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("hosts:\n  web1: {hostname: 10.0.0.1}\n  web2: {hostname: 10.0.0.2}\n"
                      "host_groups:\n  web: {hosts: [web1, web2]}\n")
    write_job(jobs_dir, "ps-typo", "program: {type: procstar, group_id: webb, argv: [/bin/true]}\n")
    write_job(jobs_dir, "ps-default", "program: {type: procstar-shell, command: 'true'}\n")
    write_job(jobs_dir, "ps-good", "program: {type: procstar, group_id: web, argv: [/bin/true]}\n")
    write_job(jobs_dir, "ps-on-a-host", "program: {type: procstar, group_id: web1, argv: [/bin/true]}\n")
    write_job(jobs_dir, "ps-templated", "params: [g]\nprogram: {type: procstar, group_id: '{{ g }}', argv: [/bin/true]}\n")
    write_job(jobs_dir, "host-typo", "program: {type: shell, command: 'true', host: web3}\n")
    write_job(jobs_dir, "host-good", "program: {type: shell, command: 'true', host: web2}\n")
    write_job(jobs_dir, "group-good", "program: {type: shell, command: 'true', host: web}\n")
    write_job(jobs_dir, "local", "program: {type: shell, command: 'true'}\n")
    done = check_jobs(jobs_dir, "--config", config)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stderr.splitlines()) == sorted([
        f"{jobs_dir / 'host-typo.yaml'}: program.host: warning: host 'web3' is neither a host (hosts:) nor a "
        "host group (host_groups:) of the config (did you mean 'web'?); runs go to the ssh destination 'web3' "
        "with ~/.ssh/config's settings",
        f"{jobs_dir / 'ps-default.yaml'}: program.group_id: warning: no group_id, so the group 'default', names "
        "no host group of the config (host_groups:); its runs would end in error",
        f"{jobs_dir / 'ps-on-a-host.yaml'}: program.group_id: warning: group_id 'web1' names no host group of the "
        "config (host_groups:) (it is a host: group_id must name a group); its runs would end in error",
        f"{jobs_dir / 'ps-typo.yaml'}: program.group_id: warning: group_id 'webb' names no host group of the "
        "config (host_groups:) (did you mean 'web'?); its runs would end in error",
    ])
    assert done.stdout == "9 jobs loaded, 0 problems, 4 warnings\n"
    assert check_jobs(jobs_dir, "--config", config, "--strict").returncode == 1
    # Without the config, what it defines is not known: no such warnings.
    bare = check_jobs(jobs_dir)
    assert bare.returncode == 0 and bare.stderr == "", bare.stderr


def test_overrides_count_for_the_host_warnings(jobs_dir, tmp_path):
    """The host checks see the config as --override leaves it, with or without a file."""
    config = tmp_path / "config.yaml"
    config.write_text("host_groups:\n  web: {hosts: [web1]}\n")
    write_job(jobs_dir, "on-gpu", "program: {type: shell, command: 'true', host: gpu}\n")
    with_file = check_jobs(jobs_dir, "--config", config, "-o", "host_groups.gpu={hosts: [g1]}")
    assert with_file.returncode == 0 and with_file.stderr == "", with_file.stderr
    only_overrides = check_jobs(jobs_dir, "-o", "host_groups={web: {hosts: [web1]}}")
    assert "host 'gpu' is neither a host (hosts:) nor a host group" in only_overrides.stderr

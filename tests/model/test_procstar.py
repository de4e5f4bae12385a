"""apsis's procstar program types: read strictly, mapped onto our argv and shell programs
on a host group (group_id, default 'default'), with sudo_user as user.

The job files here are written for these tests in the shapes apsis's own
procstar examples have (an argv, a shell command, a templated group and
sudo user, a YAML set of params, a stop).
"""

import subprocess
import sys

import pytest
from conftest import ROOT, write_job

from apsis_lite.model.jobs import bind_program, job_from_jso, load_jobs_dir
from apsis_lite.model.programs import (
    ArgvProgram, ProcstarProgram, ProcstarShellProgram, ShellProgram, parse_program,
)
from apsis_lite.model.schedules import SpecError

SHAPES = {
    "ps/missing-binary": """\
        program:
          type: procstar
          argv:
            - /usr/bin/no-such-program
        """,
    "ps/counting": """\
        params: [count]
        program:
          type: procstar
          argv:
            - "/usr/bin/bash"
            - "-c"
            - |
              n={{ count }}
              for ((i = 1; i <= n; i++)); do echo "$i"; done
        """,
    "ps/on-a-group": """\
        params: {seconds, group_id}
        program:
          type: procstar
          group_id: "{{ group_id }}"
          argv: ["/usr/bin/sleep", "{{ seconds }}"]
        """,
    "ps/shell": """\
        params: [seconds]
        program:
          type: procstar-shell
          command: "echo napping {{ seconds }}; sleep {{ seconds }}; echo awake"
        """,
    "ps/as-someone": """\
        params: [who]
        program:
          type: procstar-shell
          group_id: default
          command: echo "I am $(whoami), home $HOME"
          sudo_user: "{{ who }}"
        """,
    "ps/stopped": """\
        params: [date]
        schedule:
          start: {type: daily, tz: Europe/London, daytime: "06:15:00"}
          stop: {type: duration, duration: 20m}
        program:
          type: procstar-shell
          command: sleep 30
          stop: {signal: SIGINT, grace_period: 10s}
        """,
    "ps/dotted": """\
        program:
          type: apsis.program.procstar.agent.ProcstarShellProgram
          command: "echo this is $APSIS_RUN_ID"
        """,
}


def _folder(root):
    for job_id, text in SHAPES.items():
        write_job(root, job_id, text)
    return root


def test_the_apsis_shapes_load(tmp_path):
    jobs, errors = load_jobs_dir(_folder(tmp_path))
    assert errors == []
    assert set(jobs) == set(SHAPES)
    assert jobs["ps/on-a-group"].params == ("seconds", "group_id")  # a YAML set of names


def test_check_jobs_passes_on_them(tmp_path):
    result = subprocess.run([sys.executable, "-m", "apsis_lite", "check-jobs", str(_folder(tmp_path))],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(SHAPES)} jobs loaded, 0 problems" in result.stdout + result.stderr


def test_procstar_is_an_argv_program_on_the_default_group():
    program = parse_program({"type": "procstar", "argv": ["/usr/bin/env"]})
    assert isinstance(program, ProcstarProgram) and isinstance(program, ArgvProgram)
    assert program.argv() == ["/usr/bin/env"]
    assert (program.group_id, program.host, program.user) == ("default", "default", None)
    assert program.to_jso() == {"type": "procstar", "argv": ["/usr/bin/env"], "group_id": "default"}
    assert parse_program(program.to_jso()) == program


def test_procstar_shell_is_a_shell_program_with_sudo_user_as_user():
    program = parse_program({"type": "procstar-shell", "command": "id -un", "group_id": "gpu",
                             "sudo_user": "loader", "stop": {"signal": "SIGINT", "grace_period": "5s"},
                             "env": {"MODE": "x"}})
    assert isinstance(program, ProcstarShellProgram) and isinstance(program, ShellProgram)
    assert program.argv() == ["/bin/bash", "-c", "id -un"]
    assert (program.group_id, program.host, program.user) == ("gpu", "gpu", "loader")
    assert program.stop == {"signal": "SIGINT", "grace_period": 5.0}
    assert program.to_jso() == {"type": "procstar-shell", "command": "id -un", "group_id": "gpu",
                                "sudo_user": "loader", "env": {"MODE": "x"},
                                "stop": {"signal": "SIGINT", "grace_period": 5.0}}
    assert parse_program(program.to_jso()) == program


def test_templates_in_group_and_sudo_user_are_bound_with_the_args():
    job = job_from_jso({"params": ["g", "who"], "program": {
        "type": "procstar-shell", "command": "true", "group_id": "{{ g }}", "sudo_user": "{{ who }}"}}, "j")
    program = bind_program(job, {"g": "batch", "who": "ann"})
    assert (program.group_id, program.host, program.user) == ("batch", "batch", "ann")


def test_the_dotted_apsis_names_are_aliases():
    assert isinstance(parse_program({"type": "apsis.program.procstar.agent.ProcstarProgram", "argv": ["x"]}),
                      ProcstarProgram)
    assert isinstance(parse_program({"type": "apsis.program.ProcstarShellProgram", "command": "x"}),
                      ProcstarShellProgram)


@pytest.mark.parametrize("jso, message", [
    ({"type": "procstar", "argv": ["x"], "host": "web1"}, "host: unknown key"),
    ({"type": "procstar-shell", "command": "x", "user": "ann"}, "user: unknown key"),
    ({"type": "procstar", "argv": ["x"], "group_id": ""}, "group_id: must not be empty"),
    ({"type": "procstar", "argv": ["x"], "sudo_user": ["a"]}, "sudo_user: expected a string"),
    ({"type": "procstar"}, "argv: missing"),
    ({"type": "procstar-shell", "argv": ["x"]}, "command: missing"),
])
def test_mistakes_are_named(jso, message):
    with pytest.raises(SpecError) as info:
        parse_program(jso)
    assert message in str(info.value)


def test_try_run_says_a_procstar_program_runs_on_its_group(tmp_path):
    _folder(tmp_path)
    result = subprocess.run([sys.executable, "-m", "apsis_lite", "try", str(tmp_path), "ps/dotted", "--run"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("Error: the program runs on a host of group 'default'; "
                             "--run runs programs on this machine only\n")

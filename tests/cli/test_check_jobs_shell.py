"""``check-jobs`` warns where a param goes into a shell command unquoted, and not for the safe forms.

Run as a user runs it: ``apsis-lite check-jobs`` as a subprocess over a real
jobs folder; the warnings are compared whole.
"""

import subprocess
import sys

from conftest import ROOT, write_job

UNQUOTED = ("param {p!r} is put into the shell command unquoted, so an arg with $(...), quotes or ; "
            "runs as shell: write {{{{ {p} | shquote }}}} outside quotes, or \"$APSIS_ARG_{p}\"")
IN_DOUBLE = ("param {p!r} is inside \"...\" in the shell command, where $(...) and ` in an arg still "
             "run: write {{{{ {p} | shquote }}}} outside quotes, or \"$APSIS_ARG_{p}\"")
IN_SINGLE = ("param {p!r} is inside '...' in the shell command, which an arg with ' ends: "
             "write {{{{ {p} | shquote }}}} outside quotes, or \"$APSIS_ARG_{p}\"")


def check_jobs(*args):
    done = subprocess.run([sys.executable, "-m", "apsis_lite", "check-jobs", *map(str, args)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_each_unquoted_param_is_warned_about_with_file_key_and_what_to_write(jobs_dir):
    write_job(jobs_dir, "plain", 'params: [date]\nprogram: "load --day {{ date }}"\n')
    write_job(jobs_dir, "long", """
        params: [date, region]
        program:
          type: shell
          command: |
            echo "loading {{ region }}"
            load --day '{{ date }}' --region {{ region | upper }}
    """)
    write_job(jobs_dir, "notify", """
        params: [date, items]
        program: {type: no-op}
        action:
          - {type: command, command: "notify {{ date | shquote }}"}
          - type: command
            command: "{% for x in items.split(',') %}rm {{ x }}; {% endfor %}"
    """)
    write_job(jobs_dir, "quoted-twice", 'params: [who]\nprogram: \'echo "{{ who | shquote }}"\'\n')
    write_job(jobs_dir, "loose-pattern", """
        params: [{name: who, pattern: '.+'}]
        program: "greet {{ who }}"
    """)
    done = check_jobs(jobs_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "5 jobs loaded, 0 problems, 7 warnings\n"
    assert done.stderr.splitlines() == [
        f"{jobs_dir}/long.yaml: program.command: warning: " + IN_DOUBLE.format(p="region"),
        f"{jobs_dir}/long.yaml: program.command: warning: " + IN_SINGLE.format(p="date"),
        f"{jobs_dir}/long.yaml: program.command: warning: " + UNQUOTED.format(p="region"),
        f"{jobs_dir}/loose-pattern.yaml: program: warning: " + UNQUOTED.format(p="who"),
        f"{jobs_dir}/notify.yaml: action[1].command: warning: " + UNQUOTED.format(p="items"),
        f"{jobs_dir}/plain.yaml: program: warning: " + UNQUOTED.format(p="date"),
        f"{jobs_dir}/quoted-twice.yaml: program: warning: " + IN_DOUBLE.format(p="who"),
    ]
    assert check_jobs("--strict", jobs_dir).returncode == 1


def test_the_safe_forms_are_not_warned_about(jobs_dir):
    write_job(jobs_dir, "safe", r"""
        params:
          - date
          - who
          - {name: day, pattern: '\d{4}-\d{2}-\d{2}'}
        program:
          type: shell
          command: |
            echo {{ who | shquote }} "$APSIS_ARG_who" '$APSIS_ARG_who'
            echo "report for {{ date | as_date }}, after {{ date | shift_days(-1) }}"
            echo "{{ calendar('Mon-Fri').before(date) }} {{ date | strftime('%Y%m%d') }}"
            echo "{{ day }}" '{{ day }}' {{ day }}
            echo {{ (who ~ '!') | shquote if who else 'nobody' }}
            {% set name = who | shquote %}echo {{ name }}
        action:
          type: command
          command: 'notify "$APSIS_ARG_who" {{ date | shquote }}'
    """)
    # Not a shell: an argv program and a webhook take the arg as one value.
    write_job(jobs_dir, "argv", """
        params: [who]
        program: [echo, "{{ who }}"]
        action: {type: webhook, url: "http://127.0.0.1:9/x?who={{ who }}"}
    """)
    done = check_jobs("--strict", jobs_dir)
    assert (done.returncode, done.stdout, done.stderr) == (0, "2 jobs loaded, 0 problems\n", "")


def test_the_example_jobs_use_the_safe_forms():
    done = check_jobs("--strict", ROOT / "jobs")
    assert done.returncode == 0 and done.stderr == "", done.stderr

"""The ``shquote`` filter: whatever an arg holds, bash gets it as one literal word.

Templates are bound as a run's are (``bind``) and the command is run with the
real ``bash -c``, as a shell program is.
"""

import subprocess

import pytest
from hypothesis import HealthCheck, given, settings

from strategies import shell_text

from apsis_lite.errors import BadRequest
from apsis_lite.model.jobs import JobErrors, bind, job_from_jso
from apsis_lite.model.sandbox import MAX_CHARS

PRINTER = job_from_jso({"params": ["s"], "program": "printf %s {{ s | shquote }}"}, "printer")


def printed(job, **args):
    command = bind(job, args)["program"]["command"]
    done = subprocess.run(["/bin/bash", "-c", command], capture_output=True, timeout=10)
    assert done.returncode == 0, (command, done.stderr)
    return done.stdout


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shell_text)
def test_bash_prints_exactly_the_quoted_text(s):
    assert printed(PRINTER, s=s) == s.encode()


@settings(max_examples=100, deadline=None)
@given(shell_text, shell_text)
def test_two_quoted_args_stay_two_words(a, b):
    job = job_from_jso({"params": ["a", "b"],
                        "program": "printf '<%s>' {{ a | shquote }} {{ b | shquote }}"}, "two")
    assert printed(job, a=a, b=b) == f"<{a}><{b}>".encode()


def test_plain_words_are_left_as_they_are():
    job = job_from_jso({"params": ["date", "time"],
                        "program": "echo {{ date | shquote }} {{ time | shquote }} {{ 7 | shquote }}"}, "t")
    command = bind(job, {"date": "2026-12-03", "time": "2026-12-03T16:00:00-05:00"})["program"]["command"]
    assert command == "echo 2026-12-03 2026-12-03T16:00:00-05:00 7"


def test_shquote_keeps_the_sandboxs_size_limit():
    # Each ' becomes five characters: refused before the text is made.
    quotes = "'" * (MAX_CHARS // 4)
    with pytest.raises(BadRequest) as exc:
        bind(PRINTER, {"s": quotes})
    assert str(exc.value) == (f"job 'printer': program.command: template stopped: shquote would make "
                              f"{5 * len(quotes) + 2:,} characters (at most {MAX_CHARS:,})")
    # A template that does it whatever its args is reported when the file is read.
    with pytest.raises(JobErrors) as exc:
        job_from_jso({"program": "echo {{ (\"'\" * 300000) | shquote }}"}, "big")
    assert str(exc.value) == ("big: program.command: template stopped: shquote would make 1,500,002 "
                              "characters (at most 1,048,576)")

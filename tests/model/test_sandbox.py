"""Templates within limits: what a job's template may do, and the clear refusal past each limit."""

import time

import pytest

from apsis_lite.errors import BadRequest
from apsis_lite.model.jobs import JobErrors, _template_names, bind, job_from_jso


def command(template, **args):
    job = job_from_jso({"params": list(args), "program": template}, "t")
    return bind(job, args)["program"]["command"]


def refusal(template, **args):
    """Why ``template`` is refused: when the job loads if it reads no param, else when it is bound.

    Either way the message names the key, and it comes promptly.
    """
    t0 = time.monotonic()
    try:
        job = job_from_jso({"params": list(args), "program": template}, "t", "jobs/t.yaml")
    except JobErrors as exc:
        assert time.monotonic() - t0 < 3
        return "; ".join(f"{e.key}: {e.msg}" for e in exc.errors)
    with pytest.raises(BadRequest) as info:
        bind(job, args)
    assert time.monotonic() - t0 < 3
    message = str(info.value)
    assert message.startswith("job 't': ")
    return message[len("job 't': "):]


@pytest.mark.parametrize("template, expected", [
    ("{% for i in range(3) %}{{ i }},{% endfor %}", "0,1,2,"),
    ("{{ range(5) | map('string') | join('-') }}", "0-1-2-3-4"),
    ("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}", "6"),
    ("{% macro twice(s) %}{{ s }}{{ s }}{% endmacro %}{{ twice(x) }}", "abab"),
    ("{{ '%s=%05d' % (x, 42) }}", "ab=00042"),
    ("{{ '{}:{:>4}'.format(x, 7) }}", "ab:   7"),
    ("{{ x | center(6) }}|{{ x.ljust(4) }}|{{ 2 ** 62 }}|{{ 'ab' * 3 }}", "  ab  |ab  |4611686018427387904|ababab"),
    ("{{ [x, x] | join(',') }} {{ {'k': x}['k'] }} {{ (1, 2)[1] }}", "ab,ab ab 2"),
    ("{{ x ~ '-' ~ x | upper }} {{ x.replace('a', 'zz') }}", "ab-AB zzb"),
    ("{% set b %}{% for i in range(3) %}{{ x }}{% endfor %}{% endset %}{{ b | length }}", "6"),
    ("{% for a, b in [(1, 2), (3, 4)] %}{{ a + b }}{% endfor %}", "37"),
])
def test_what_templates_may_do(template, expected):
    assert command(template, x="ab") == expected


@pytest.mark.parametrize("template, message", [
    ("{{ x * 1000000000 }}", "repetition would make 2,000,000,000 characters (at most 1,048,576)"),
    ("{{ [x] * 1000000 }}", "repetition would make 2,000,000 characters (at most 1,048,576)"),
    ("{{ [1] * 1000000 }}", "repetition would make 1,000,000 items (at most 100,000)"),
    ("{{ 10 ** 1000000 }}", "an integer of more than 256 bits"),
    ("{{ x | center(1000000000) }}", "center: width or count 1,000,000,000 is too large (at most 100,000)"),
    ("{{ x.zfill(10**9) }}", "width 1,000,000,000 is too large"),
    ("{{ '%1000000000d' % 1 }}", "width 1,000,000,000 is too large"),
    ("{{ '%*d' % (10, 1) }}", "'*' widths are not allowed in templates"),
    ("{{ '{:>1000000000}'.format(x) }}", "format width or precision 1,000,000,000 is too large"),
    ("{{ '{:.999999}'.format(1.5) }}", "format width or precision 999,999 is too large"),
    ("{{ 5 | round(-1000000000) }}", "round: precision -1,000,000,000 is too large"),
    ("{{ (x * 500000).replace('', 'yy') }}", "replace would make 3,000,002 characters"),
    ("{{ range(50000) | join(x * 100) }}", "join would make 9,999,800 characters"),
    ("{{ range(10**6) | list }}", "a range of 1,000,000 numbers (at most 100,000)"),
    ("{{ x.translate({97: 'z'}) }}", "translate is not allowed in templates"),
    ("{{ [[1], [2]] | sum(start=[]) }}", "sum adds numbers in templates"),
    ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
     "more than 100,000 steps (loop iterations, calls, filters and operations)"),
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
     "more than 100,000 steps"),
    ("{% set ns = namespace(s=x) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
     "'~' would make 2,097,152 characters"),
    ("{% set a = [1, 1] %}{% set b = [a, a, a, a] %}{% set c = [b, b, b, b] %}{% set d = [c, c, c, c] %}"
     "{% set e = [d, d, d, d] %}{% set f = [e, e, e, e] %}{% set g = [f, f, f, f] %}"
     "{% set h = [g, g, g, g] %}{% set i = [h, h, h, h] %}{{ i }}", "a value of more than 100,000 items"),
    ("{% for i in range(100) %}{{ (x * 500000) | length }}{% endfor %}", "made more than 32 MiB of values"),
    ("{% set s = x * 500000 %}{% for i in range(50000) %}{{ s.count('ba') }}{% endfor %}",
     "took more than 1 s"),
    ("{% set s = x * 500000 %}{% for i in range(3) %}{{ s }}{% endfor %}",
     "output of more than 1,048,576 characters"),
    ("{% set s = x * 500000 %}{% set b %}{{ s }}{{ s }}{% endset %}", "a block would make 2,000,000 characters"),
    ("{% set s = x * 500000 %}{{ " + " ~ ".join(["s"] * 1000) + " }}", "'~' would make 2,000,000 characters"),
    ("{% set l = [1] %}{{ l.append(2) }}", "access to attribute 'append' of 'list' object is unsafe"),
    ("{{ lipsum(1000000000) }}", "template uses 'lipsum', not a param of this job"),
    ("{{ calendar('Mon-Fri').shift(x, 1000000000) }}", "cannot shift by 1000000000 dates (at most 10,000 either way)"),
    ("{{ calendar('all').dates('0001-01-01', '9999-12-31') | list | length }}", "more than 100,000 days"),
])
def test_templates_past_a_limit_are_refused_with_the_reason(template, message):
    args = {"x": "ab" if "shift(" not in template else "2026-11-30"} if "x" in _template_names(template) else {}
    msg = refusal(template, **args)
    assert msg.startswith("program.command: template ")
    assert message in msg


def test_a_template_that_breaks_a_limit_whatever_its_args_is_an_error_of_the_file():
    with pytest.raises(JobErrors) as info:
        job_from_jso({"program": {"type": "shell", "command": "echo {{ 'x' * 10**9 }}",
                                  "env": {"A": "{% for i in range(10**6) %}{% endfor %}"}}},
                     "t", "jobs/t.yaml")
    assert [(e.key, e.msg) for e in info.value.errors] == [
        ("program.command", "template stopped: repetition would make 1,000,000,000 characters "
                            "(at most 1,048,576)"),
        ("program.env.A", "template stopped: a range of 1,000,000 numbers (at most 100,000)"),
    ]


def test_a_template_that_reads_a_param_is_only_checked_when_bound():
    job = job_from_jso({"params": ["n"], "program": "echo {{ 'x' * (n | int) }}"}, "t", "jobs/t.yaml")
    assert bind(job, {"n": "3"})["program"]["command"] == "echo xxx"
    with pytest.raises(BadRequest, match="template stopped: repetition would make 2,000,000 characters"):
        bind(job, {"n": "2000000"})


def test_template_strings_have_a_length_limit():
    with pytest.raises(JobErrors) as info:
        job_from_jso({"params": ["x"], "program": "echo {{ x }}" + "y" * 100_000}, "t", "jobs/t.yaml")
    assert [(e.key, e.msg) for e in info.value.errors] == [
        ("program.command", "template of 100,012 characters (at most 100,000)")]

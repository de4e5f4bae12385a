"""Params with a pattern: how a job file declares them, and what a wrong one is told."""

import pytest

from conftest import write_job

from apsis_lite.errors import BadRequest
from apsis_lite.model.jobs import JobErrors, bind, job_from_jso, load_jobs_dir


def problems(jso):
    with pytest.raises(JobErrors) as exc:
        job_from_jso(jso, "j")
    return [(e.key, e.msg) for e in exc.value.errors]


def test_a_param_may_declare_a_pattern_its_args_must_match_whole():
    job = job_from_jso({"params": ["who", {"name": "n", "pattern": r"\d+"}],
                        "program": "echo {{ who | shquote }} {{ n }}"}, "j")
    assert job.params == ("who", "n")
    assert job.to_jso()["params"] == ["who", "n"]
    assert job.to_jso()["param_patterns"] == {"n": r"\d+"}
    assert bind(job, {"who": "x", "n": 12})["program"]["command"] == "echo x 12"
    with pytest.raises(BadRequest) as exc:
        bind(job, {"who": "x", "n": "12; id"})
    assert str(exc.value) == r"job 'j': arg 'n' does not match the param's pattern '\d+': '12; id'"


def test_a_wrong_params_entry_is_named():
    assert problems({"params": [{"name": "n", "pattern": "("}], "program": "x"}) == [
        ("params[0].pattern", "not a regular expression: missing ), unterminated subpattern at position 0")]
    assert problems({"params": [{"name": "n", "pattern": 5}], "program": "x"}) == [
        ("params[0].pattern", "must be a regular expression (text), not int 5")]
    assert problems({"params": [{"name": "n", "pattern": "x", "default": 1}], "program": "x"}) == [
        ("params[0].default", "a param entry has only name: and pattern:")]
    assert problems({"params": [{"pattern": "x"}], "program": "x"}) == [
        ("params[0].name", "a param name must be a non-empty string, not nothing (null)")]
    assert problems({"params": ["n", {"name": "n", "pattern": "x"}], "program": "x"}) == [
        ("params[1].name", "duplicate param 'n'")]


def test_check_jobs_warns_when_a_schedule_gives_an_arg_its_pattern_refuses(jobs_dir):
    from datetime import datetime, timezone

    from apsis_lite.cli.offline import folder_warnings
    write_job(jobs_dir, "hourly", """
        params: [{name: time, pattern: '\\d{4}-\\d{2}-\\d{2}'}]
        program: {type: no-op}
        schedule: {type: interval, interval: 1h}
    """)
    jobs, errors = load_jobs_dir(jobs_dir)
    warnings = folder_warnings(jobs, errors, str(jobs_dir), datetime(2026, 12, 3, tzinfo=timezone.utc))
    assert [(w.key, w.msg) for w in warnings] == [
        ("schedule", "its runs will be in error: job 'hourly': arg 'time' does not match the param's "
                     "pattern '\\d{4}-\\d{2}-\\d{2}': '2026-12-03T00:00:00Z' (every 1 h)")]


def test_an_arg_with_a_nul_character_is_refused_before_the_run_exists():
    # A NUL cannot reach a program: command lines and environment variables end there.
    job = job_from_jso({"params": ["who"], "program": "echo {{ who | shquote }}"}, "j")
    with pytest.raises(BadRequest) as exc:
        bind(job, {"who": "a\0b"})
    assert str(exc.value) == ("job 'j': arg 'who' contains a NUL character, which no command line "
                              "or environment variable can hold")


def test_a_pattern_that_backtracks_badly_on_an_arg_is_cut_short_with_a_clear_message():
    import time
    job = job_from_jso({"params": [{"name": "n", "pattern": "(a|aa)+"}], "program": "echo {{ n }}"}, "j")
    assert bind(job, {"n": "aaaa"})["program"]["command"] == "echo aaaa"
    t0 = time.monotonic()
    with pytest.raises(BadRequest) as exc:
        bind(job, {"n": "a" * 40 + "!"})
    assert time.monotonic() - t0 < 2  # without a limit this match takes hours
    assert str(exc.value) == (
        "job 'j': arg 'n' could not be checked against the param's pattern '(a|aa)+' within 0.1 s; "
        "the pattern backtracks too much on it (simplify the pattern, e.g. without nested repeats)")

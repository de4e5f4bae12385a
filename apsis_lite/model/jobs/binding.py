"""Args and binding: checking a run's args, and rendering a job's templates with them.

``bind`` validates the rendered program, conditions and actions again, now
that templates have values; every problem is a BadRequest naming the key.
"""

from __future__ import annotations

from datetime import date as _date_type

import regex

from apsis_lite.errors import BadRequest
from apsis_lite.model import actions as _actions
from apsis_lite.model import conditions as _conditions
from apsis_lite.model.fields import SpecError, _kind, join_key
from apsis_lite.model.jobs.job import Job
from apsis_lite.model.jobs.templates import _render
from apsis_lite.model.programs import Program, parse_program


#: How long one arg may take to match its param's pattern. A pattern that backtracks
#: badly on a hostile arg would otherwise hold the server (the check runs in the request).
PATTERN_TIMEOUT = 0.1


def _names(names) -> str:
    return ", ".join(repr(n) for n in names)


def check_args(job: Job, args) -> dict[str, str]:
    """Args for a run of ``job``: every param given and nothing else; values become strings.

    An arg of a param declared with a ``pattern`` must match all of it.
    """
    if not isinstance(args, dict):
        raise BadRequest(f"job {job.job_id!r}: args must be a mapping")
    unknown = [k for k in args if k not in job.params]
    if unknown:
        params = ", ".join(job.params) if job.params else "none"
        raise BadRequest(f"job {job.job_id!r}: unknown arg{'s' if len(unknown) > 1 else ''} "
                         f"{_names(unknown)} (params: {params})")
    missing = [p for p in job.params if p not in args]
    if missing:
        raise BadRequest(f"job {job.job_id!r}: missing arg{'s' if len(missing) > 1 else ''} "
                         f"{_names(missing)}")
    out = {}
    for p in job.params:
        v = args[p]
        if v is None or isinstance(v, (dict, list, tuple, set)):
            raise BadRequest(f"job {job.job_id!r}: arg {p!r} must be a string, not {_kind(v)}")
        out[p] = v.isoformat() if isinstance(v, _date_type) else str(v)
        if "\0" in out[p]:
            # Args reach the program as environment variables and command lines, which end at a NUL.
            raise BadRequest(f"job {job.job_id!r}: arg {p!r} contains a NUL character, which no "
                             "command line or environment variable can hold")
    for p, pattern in job.param_patterns:
        if _pattern_refuses(job, p, pattern, out[p]):
            shown = out[p] if len(out[p]) <= 80 else out[p][:80] + "..."
            raise BadRequest(f"job {job.job_id!r}: arg {p!r} does not match the param's pattern "
                             f"'{pattern}': {shown!r}")
    return out


def _pattern_refuses(job, param, pattern, value) -> bool:
    try:
        return regex.fullmatch(pattern, value, timeout=PATTERN_TIMEOUT) is None
    except TimeoutError:
        raise BadRequest(f"job {job.job_id!r}: arg {param!r} could not be checked against the param's "
                         f"pattern '{pattern}' within {PATTERN_TIMEOUT:g} s; the pattern backtracks too "
                         "much on it (simplify the pattern, e.g. without nested repeats)") from None


def args_from_schedule(job: Job, supplied: dict) -> dict[str, str]:
    """The run args for a due time: what the schedule yielded, restricted to the job's params."""
    return check_args(job, {p: supplied[p] for p in job.params if p in supplied})


def bind(job: Job, args) -> dict:
    """Render the job's program, conditions and actions with ``args``.

    Returns ``{"program": jso, "conditions": [jso], "actions": [jso]}``,
    each validated again now that templates have values. Raises BadRequest
    for bad args, a template that fails, or a bound value that is invalid.
    Ad hoc jobs are taken literally: their text was typed, not templated.
    """
    args = check_args(job, args)
    if job.adhoc:
        # Parsed again only to hand out fresh dicts, never the job's own.
        return {"program": parse_program(job.program).to_jso(),
                "conditions": [_conditions.parse_condition(c).to_jso() for c in job.conditions],
                "actions": [_actions.parse_action(a).to_jso() for a in job.actions]}
    variables = {"job_id": job.job_id, "_calendars": job.calendars, **args}
    try:
        program = _reparse(parse_program, _render(job.program, variables, "program"), "program")
        conditions = [
            _reparse(_conditions.parse_condition, _render(c, variables, f"condition[{i}]"),
                     f"condition[{i}]")
            for i, c in enumerate(job.conditions)]
        actions = [
            _reparse(_actions.parse_action, _render(a, variables, f"action[{i}]"), f"action[{i}]")
            for i, a in enumerate(job.actions)]
    except BadRequest as exc:
        raise BadRequest(f"job {job.job_id!r}: {exc}") from None
    return {"program": program, "conditions": conditions, "actions": actions}


def _reparse(parse, jso, key):
    try:
        return parse(jso).to_jso()
    except SpecError as exc:
        raise BadRequest("; ".join(f"{join_key(key, k)}: {m}" for k, m in exc.problems)) from None


def bind_program(job: Job, args) -> Program:
    """The job's program bound to ``args``, ready to run."""
    return parse_program(bind(job, args)["program"])

"""Reading a job: a job file's contents (or a stored ad hoc job) → a ``Job``, strictly.

A job is checked completely: every problem is reported as a
``JobFileError(path, key, msg)`` (keys such as ``program.timeout.duration``
or ``schedule[1].expr``; list indices count from 0 and appear only where the
file has a list), so one load shows everything wrong with a directory. Each
top-level key has its reader below; they report in the order of the keys'
readers, not of the file.
"""

from __future__ import annotations

import re
from datetime import date as _date_type, datetime

from apsis_lite.config import DEFAULT_MIN_INTERVAL
from apsis_lite.errors import BadRequest, JobFileError
from apsis_lite.model import actions as _actions
from apsis_lite.model import conditions as _conditions
from apsis_lite.model import deadlines as _deadlines
from apsis_lite.model import reruns as _reruns
from apsis_lite.model.fields import (
    Fields, SpecError, _kind, is_template, join_key, positive_duration, unknown_key_message,
)
from apsis_lite.model.jobs.job import Job, JobErrors
from apsis_lite.model.jobs.templates import template_problems
from apsis_lite.model.programs import local_user_problem, parse_program
from apsis_lite.model.schedules import parse_schedule


JOB_KEYS = ("params", "program", "schedule", "condition", "action", "successors", "metadata",
            "resources", "reruns", "waiting", "catch_up", "deadline", "max_duration")
CATCH_UP_MISSED = ("all", "latest", "none")

# Keys apsis accepts that we do not, with what to do instead.
_UNSUPPORTED = {
    "ad_hoc": "not allowed in a job file (ad hoc jobs are made with 'apsis-lite run')",
}


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _plain(value):
    """Metadata as JSON can carry it: YAML dates become ISO text, keys become strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, (_date_type, datetime)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _from_stored(jso):
    """A stored ad hoc job (``Job.to_jso()`` output) in job-file form."""
    if not isinstance(jso, dict):
        return jso
    jso = {k: v for k, v in jso.items() if k not in ("job_id", "path", "adhoc")}
    for plural, singular in (("schedules", "schedule"), ("conditions", "condition"),
                             ("actions", "action")):
        if plural in jso:
            jso[singular] = jso.pop(plural)
    if isinstance(jso.get("schedule"), list):
        jso["schedule"] = [
            {k: v for k, v in s.items() if k != "description"} if isinstance(s, dict) else s
            for s in jso["schedule"]]
    return jso

def job_from_jso(jso, job_id: str, path: str | None = None, *, adhoc: bool = False,
                 calendars=None, min_interval: float | None = DEFAULT_MIN_INTERVAL,
                 sudo_for_user: bool = False) -> Job:
    """Validate a job file's contents; JobErrors lists every problem found.

    With ``adhoc=True``, ``jso`` is an ad hoc job as stored (the output of
    ``Job.to_jso()``, or job-file form); its text is literal, not templates.
    ``calendars`` (a ``calendars.CalendarLibrary``) resolves calendar names
    in schedules and templates; None knows the weekday sets and the shipped
    calendars only. ``min_interval`` (seconds; the config setting) is the
    shortest interval a schedule may have; None checks none (a job stored
    earlier, read back). ``sudo_for_user`` (the config setting) lets a server
    that is not root run programs as another ``user:`` through sudo.
    """
    if adhoc:
        jso = _from_stored(jso)
    where = path if path is not None else job_id
    errors = []

    def fail(key, msg):
        errors.append(JobFileError(where, key, msg))

    def fail_spec(prefix, exc: SpecError):
        for k, m in exc.problems:
            fail(join_key(prefix, k), m)

    if not isinstance(jso, dict):
        raise JobErrors([JobFileError(where, None, f"a job file must be a mapping, not {_kind(jso)}")])

    for key in jso:
        if key not in JOB_KEYS:
            fail(str(key), _UNSUPPORTED.get(key) or unknown_key_message(key, JOB_KEYS))

    params, patterns = _params(jso.get("params"), fail)
    program = _program(jso.get("program"), adhoc, fail, fail_spec, sudo_for_user)
    schedules = _schedules(jso.get("schedule"), params, calendars, min_interval, fail, fail_spec)
    conditions, cond_keys, actions, action_keys = _conditions_and_actions(jso, adhoc, fail_spec)
    reruns, waiting_max_time = _reruns_and_waiting(jso, fail, fail_spec)
    catch_up = _catch_up(jso.get("catch_up"), fail_spec)
    deadline, max_duration = _alarms(jso, fail, fail_spec)
    metadata = _metadata(jso.get("metadata"), fail)

    # Templates: check syntax and names now, so a typo is reported with the
    # file rather than when a run is created.
    checked = [] if adhoc else [("program", program), *zip(cond_keys, conditions),
                                *zip(action_keys, actions)]
    variables = {"job_id": job_id, "_calendars": calendars}
    for key, problem in template_problems(checked, params, variables):
        fail(key, problem)

    if errors:
        raise JobErrors(errors)
    return Job(job_id=job_id, params=tuple(params), param_patterns=tuple(patterns.items()), program=program,
               schedules=tuple(schedules), conditions=tuple(conditions),
               actions=tuple(actions), metadata=metadata, path=path, adhoc=adhoc,
               reruns=reruns, waiting_max_time=waiting_max_time, catch_up=catch_up, calendars=calendars,
               deadline=deadline, max_duration=max_duration)


def _params(raw, fail) -> tuple[list, dict]:
    """The job's ``params:``: one name or a list of distinct names, and the patterns some declare.

    An entry may be ``{name: date, pattern: '\\d{4}-\\d{2}-\\d{2}'}``: an arg for it
    must match the whole pattern (a Python regular expression). Any other
    mapping is read as apsis reads it, as its keys: a YAML set of names
    (``{date, region}``) is a list of them, and values given are ignored.
    """
    params, patterns = [], {}
    if raw is None:
        return params, patterns
    if isinstance(raw, dict) and raw and not _is_pattern_entry(raw):
        raw = list(raw)  # YAML's set, ``{date, region}``, or any mapping: apsis takes its keys
    for i, p in enumerate(_as_list(raw)):
        k = f"params[{i}]" if isinstance(raw, list) else "params"
        entry = None
        if isinstance(p, dict):
            entry, p = p, p.get("name")
            if not _pattern_entry_ok(entry, k, fail):
                continue
            k = f"{k}.name"
        if not isinstance(p, str) or not p.strip():
            fail(k, f"a param name must be a non-empty string, not {_kind(p)}")
        elif p in params:
            fail(k, f"duplicate param {p!r}")
        else:
            params.append(p)
            if isinstance(entry, dict):
                patterns[p] = entry["pattern"]
    return params, patterns


def _is_pattern_entry(raw: dict) -> bool:
    """A mapping that is one ``{name, pattern}`` entry, not a set of names."""
    return isinstance(raw.get("name"), str) and set(raw) <= {"name", "pattern"}


def _pattern_entry_ok(entry: dict, key, fail) -> bool:
    """Whether a ``{name, pattern}`` params entry has only those keys and a valid pattern."""
    extra = [str(k) for k in entry if k not in ("name", "pattern")]
    if extra:
        fail(f"{key}.{extra[0]}", "a param entry has only name: and pattern:")
        return False
    pattern = entry.get("pattern")
    if not isinstance(pattern, str):
        fail(f"{key}.pattern", f"must be a regular expression (text), not {_kind(pattern)}")
        return False
    try:
        re.compile(pattern)
    except re.error as exc:
        fail(f"{key}.pattern", f"not a regular expression: {exc}")
        return False
    return True


def _program(raw, adhoc, fail, fail_spec, sudo_for_user=False) -> dict | None:
    """The job's ``program:`` as normalized jso (its strings may be templates unless ``adhoc``)."""
    if raw is None:
        fail("program", "missing (required)")
        return None
    try:
        program = parse_program(raw, allow_templates=not adhoc)
    except SpecError as exc:
        fail_spec("program", exc)
        return None
    user = getattr(program, "user", None)
    # A remote program's user is its login there; a template is checked when the run starts.
    if user and not getattr(program, "host", None) and not is_template(user):
        problem = local_user_problem(user, sudo_for_user)
        if problem:
            fail("program.user", problem)
            return None
    return program.to_jso()


def _schedules(raw, params, calendars, min_interval, fail, fail_spec) -> list:
    """The job's ``schedule:`` (one or a list), each held to ``min_interval`` and the job's params."""
    schedules = []
    if raw is None:
        return schedules
    for i, s in enumerate(_as_list(raw)):
        prefix = f"schedule[{i}]" if isinstance(raw, list) else "schedule"
        try:
            schedule = parse_schedule(s, calendars)
        except SpecError as exc:
            fail_spec(prefix, exc)
            continue
        shortest = schedule.shortest_interval()
        if min_interval and shortest is not None and shortest < min_interval:
            key = join_key(prefix, "start.interval" if schedule.stop else "interval")
            fail(key, f"{_seconds(shortest)} is shorter than min_interval "
                      f"({_seconds(min_interval)}, a setting of the server)")
        for name in schedule.args:
            if name not in params:
                fail(join_key(prefix, f"args.{name}"),
                     f"not a param of this job (params: {', '.join(params) or 'none'}); "
                     "apsis would ignore it, apsis-lite refuses it: remove it or add the param")
        for name in params:
            if name not in schedule.args and name not in schedule.supplies:
                supplies = ", ".join(sorted(schedule.supplies)) or "nothing"
                fail(prefix, f"no value for param {name!r}: give it under args: "
                             f"({schedule.type_name} schedules supply {supplies})")
        schedules.append(schedule)
    return schedules


def _conditions_and_actions(jso, adhoc, fail_spec) -> tuple:
    """``condition:``, ``resources:``, ``action:`` and ``successors:`` as normalized jso,
    each list with the keys its items have in the file."""

    def parse_each(key, parse, parsed, keys):
        raw = jso.get(key)
        if raw is None:
            return
        for i, item in enumerate(_as_list(raw)):
            prefix = f"{key}[{i}]" if isinstance(raw, list) else key
            try:
                parsed.append(parse(item).to_jso())
                keys.append(prefix)
            except SpecError as exc:
                fail_spec(prefix, exc)

    conditions, cond_keys, actions, action_keys = [], [], [], []
    parse_each("condition", lambda c: _conditions.parse_condition(c, allow_templates=not adhoc),
               conditions, cond_keys)
    parse_each("action", lambda a: _actions.parse_action(a, allow_templates=not adhoc),
               actions, action_keys)
    parse_each("successors", _actions.successor_action, actions, action_keys)
    # Resources are conditions the engine checks last (conditions.Resource).
    parse_each("resources", lambda r: _conditions.Resource.from_jso({"name": r} if isinstance(r, str) else r),
               conditions, cond_keys)
    return conditions, cond_keys, actions, action_keys


def _catch_up(raw, fail_spec) -> dict | None:
    """The job's ``catch_up:``, or None for the global rule."""
    if raw is None:
        return None
    try:
        return parse_catch_up(raw)
    except SpecError as exc:
        fail_spec("catch_up", exc)
        return None


def _metadata(raw, fail) -> dict:
    """The job's ``metadata:``, as JSON can carry it; ``description`` and ``labels`` checked."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        fail("metadata", f"expected a mapping, not {_kind(raw)}")
        return {}
    metadata = _plain(raw)
    desc = metadata.get("description")
    if desc is not None and not isinstance(desc, str):
        fail("metadata.description", f"expected Markdown text, not {_kind(desc)}")
    labels = metadata.get("labels")
    if labels is not None:
        labels = _as_list(labels)
        if not all(isinstance(x, str) for x in labels):
            fail("metadata.labels", "expected a list of strings")
        metadata["labels"] = labels
    return metadata


def _alarms(jso, fail, fail_spec):
    """The ``deadline:`` and ``max_duration:`` of a job file."""
    found = []
    for key, parse in (("deadline", _deadlines.Deadline.from_jso),
                       ("max_duration", _deadlines.MaxDuration.from_jso)):
        value = None
        if jso.get(key) is not None:
            try:
                value = parse(jso[key])
            except SpecError as exc:
                fail_spec(key, exc)
            except ValueError as exc:
                fail(key, str(exc))
        found.append(value)
    return tuple(found)


def _reruns_and_waiting(jso, fail, fail_spec):
    """The ``reruns:`` policy and the ``waiting: {max_time}`` of a job file."""
    reruns = max_time = None
    if jso.get("reruns") is not None:
        try:
            reruns = _reruns.Reruns.from_jso(jso["reruns"])
        except SpecError as exc:
            fail_spec("reruns", exc)
    if jso.get("waiting") is not None:
        try:
            f = Fields(jso["waiting"], "waiting mapping (max_time)")
            max_time = f.take("max_time", positive_duration)
            f.done()
        except SpecError as exc:
            fail_spec("waiting", exc)
    return reruns, max_time


def _seconds(value) -> str:
    return f"{value:g} s" if value >= 1 else f"{value * 1000:g} ms"


def parse_catch_up(value) -> dict:
    """A job's ``catch_up:``: what to do with slots missed while the server was down.

    ``{missed: all, max: 10}`` runs the missed slots, at most the latest
    ``max`` of them; ``{missed: latest}`` runs only the latest; ``{missed: none}``
    runs none. Every slot not run is recorded as a skipped run.
    """
    f = Fields(value, "catch_up mapping")
    missed = f.take("missed", _missed)
    cap = f.take("max", _positive_int, None)
    f.done()
    if cap is not None and missed != "all":
        raise SpecError("max", f"only allowed with missed: all (missed is {missed})")
    return {"missed": missed, "max": cap}


def _missed(value):
    if value not in CATCH_UP_MISSED:
        raise ValueError(f"expected one of {', '.join(CATCH_UP_MISSED)}, got {_kind(value)}")
    return value


def _positive_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {_kind(value)}")
    return value


def adhoc_job(program_jso, job_id: str, sudo_for_user: bool = False) -> Job:
    """A job with no params or schedules from a command string, an argv list or a program mapping."""
    try:
        parsed = parse_program(program_jso)
    except SpecError as exc:
        raise BadRequest("ad hoc program: " + "; ".join(
            f"{join_key('program', k)}: {m}" for k, m in exc.problems)) from None
    user = getattr(parsed, "user", None)
    problem = user and not getattr(parsed, "host", None) and local_user_problem(user, sudo_for_user)
    if problem:
        raise BadRequest(f"ad hoc program: program.user: {problem}")
    program = parsed.to_jso()
    return Job(job_id=job_id, params=(), program=program, schedules=(), conditions=(),
               actions=(), metadata={}, path=None, adhoc=True)

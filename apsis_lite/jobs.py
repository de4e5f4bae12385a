"""Jobs: strict job files → ``Job`` values, the jobs directory, args and binding.

A job file is checked completely: every problem is reported as a
``JobFileError(path, key, msg)`` (keys such as ``program.timeout.duration``
or ``schedule[1].expr``; list indices count from 0 and appear only where the
file has a list), so one load shows everything wrong with a directory.

Binding renders every string of a job's program, conditions and actions as a
Jinja2 template with the run's args (sandboxed, undefined names are errors).
Templates are compiled once and cached; strings without template syntax are
never handed to Jinja.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from datetime import date as _date_type, datetime, timedelta

import jinja2
import jinja2.meta
import jinja2.sandbox
import yaml

from . import actions as _actions
from . import conditions as _conditions
from .errors import ApsisError, BadRequest, JobFileError
from .programs import Program, parse_program
from .schedules import Schedule, SpecError, _kind, is_template, join_key, parse_schedule, unknown_key_message
from .timeutil import get_tz, parse_time, utcnow

try:  # libyaml's parser is several times faster; the safe constructors are the same
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

JOB_FILE_SUFFIXES = (".yaml", ".yml")
JOB_KEYS = ("params", "program", "schedule", "condition", "action", "successors", "metadata")

# Keys apsis accepts that we do not, with what to do instead.
_UNSUPPORTED = {
    "reruns": "not supported by apsis-lite (rerun failed runs from the UI, API or an action)",
    "ad_hoc": "not allowed in a job file (ad hoc jobs are made with 'apsis-lite run')",
}


class JobErrors(ApsisError):
    """Every problem found in one job: a list of JobFileError."""

    status = 400

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class Job:
    """A validated job. ``program``, ``conditions`` and ``actions`` are normalized jso
    (``successors`` are folded into ``actions``); their strings may be templates."""

    job_id: str
    params: tuple[str, ...]
    program: dict
    schedules: tuple[Schedule, ...]
    conditions: tuple[dict, ...]
    actions: tuple[dict, ...]
    metadata: dict
    path: str | None = None
    adhoc: bool = False

    def to_jso(self) -> dict:
        """The job for the JSON API; each schedule carries its ``description``."""
        return {
            "job_id": self.job_id,
            "params": list(self.params),
            "program": self.program,
            "schedules": [{**s.to_jso(), "description": s.describe()} for s in self.schedules],
            "conditions": list(self.conditions),
            "actions": list(self.actions),
            "metadata": self.metadata,
            "path": self.path,
            "adhoc": self.adhoc,
        }


# --------------------------------------------------------------------------
# Templates.


def _as_date(value) -> _date_type:
    """A date from a date, a datetime or ISO text such as ``2026-11-26``."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, _date_type):
        return value
    if isinstance(value, str):
        try:
            return _date_type.fromisoformat(value.strip())
        except ValueError:
            return parse_time(value).date()  # a full time: its UTC date
    raise ValueError(f"not a date: {value!r}")


def _shift_days(value, days) -> _date_type:
    """The date ``days`` (may be negative) after ``value``."""
    return _as_date(value) + timedelta(days=int(days))


def _today(tz="UTC") -> _date_type:
    """Today's date in zone ``tz`` (at the moment of binding)."""
    return utcnow().astimezone(get_tz(tz)).date()


def _as_time(value, tz="UTC") -> datetime:
    """An aware UTC datetime from ISO text (a time without a zone is in ``tz``)."""
    return parse_time(value, get_tz(tz))


_ENV = jinja2.sandbox.SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    # Multi-line shell commands keep their final newline, as written.
    keep_trailing_newline=True,
)
# ``date`` is also a common param name, and args hide helpers of the same
# name; the ``as_date`` filter works either way: {{ date | as_date }}.
_ENV.globals.update(date=_as_date, shift_days=_shift_days, today=_today, as_time=_as_time)
_ENV.filters.update(as_date=_as_date, shift_days=_shift_days, as_time=_as_time)

# Names a template may use besides the job's params.
_TEMPLATE_NAMES = frozenset(_ENV.globals) | {"job_id"}


@functools.lru_cache(maxsize=16384)
def _template(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


_SIMPLE_EXPR = re.compile(r"\{\{-?\s*([A-Za-z_][A-Za-z0-9_]*)\s*-?\}\}")
_JINJA_WORDS = frozenset(
    "true false none True False None and or not in is if else elif for endfor "
    "block extends include import from as with without recursive set macro call "
    "filter raw endraw".split())


@functools.lru_cache(maxsize=16384)
def _template_names(source: str) -> frozenset:
    """The variables a template reads; TemplateSyntaxError if it is not valid."""
    # Most job templates are only ``{{ name }}``: a regex answers those
    # without Jinja's parser, which costs ~0.1 ms per distinct string and
    # would dominate loading 10,000 job files.
    names = _SIMPLE_EXPR.findall(source)
    rest = _SIMPLE_EXPR.sub("", source)
    if not is_template(rest) and _JINJA_WORDS.isdisjoint(names):
        return frozenset(names)
    return frozenset(jinja2.meta.find_undeclared_variables(_ENV.parse(source)))


def _template_problem(source: str, params) -> str | None:
    """Why ``source`` cannot be bound with these params, or None if it can."""
    try:
        names = _template_names(source)
    except jinja2.TemplateSyntaxError as exc:
        msg = f"template error: {exc.message}"
        if "{#" in source:
            msg += " ('{#' starts a Jinja comment; write {{ '{#' }} for the text, e.g. in ${#var})"
        return msg
    unknown = sorted(names - _TEMPLATE_NAMES - set(params))
    if unknown:
        have = ", ".join(params) if params else "none"
        return f"template uses {', '.join(map(repr, unknown))}, not a param of this job (params: {have})"
    return None


def _strings(value, key):
    """Every (key, string) inside a jso value."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, join_key(key, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{key}[{i}]")


def _render(value, variables, key):
    """``value`` with every template string rendered; BadRequest names the key."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        try:
            return _template(value).render(variables)
        except jinja2.UndefinedError as exc:
            raise BadRequest(f"{key}: template error: {exc.message}") from None
        except Exception as exc:  # a template is user code: any failure is a bad request
            raise BadRequest(f"{key}: template error: {exc}") from None
    if isinstance(value, dict):
        return {k: _render(v, variables, join_key(key, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, variables, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


# --------------------------------------------------------------------------
# Job files.


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


def job_from_jso(jso, job_id: str, path: str | None = None, *, adhoc: bool = False) -> Job:
    """Validate a job file's contents; JobErrors lists every problem found.

    With ``adhoc=True``, ``jso`` is an ad hoc job as stored (the output of
    ``Job.to_jso()``, or job-file form); its text is literal, not templates.
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

    # params
    params = []
    raw = jso.get("params")
    if raw is not None:
        for i, p in enumerate(_as_list(raw)):
            k = f"params[{i}]" if isinstance(raw, list) else "params"
            if not isinstance(p, str) or not p.strip():
                fail(k, f"a param name must be a non-empty string, not {_kind(p)}")
            elif p in params:
                fail(k, f"duplicate param {p!r}")
            else:
                params.append(p)

    # program
    program = None
    if "program" not in jso or jso["program"] is None:
        fail("program", "missing (required)")
    else:
        try:
            program = parse_program(jso["program"], allow_templates=not adhoc).to_jso()
        except SpecError as exc:
            fail_spec("program", exc)

    # schedules
    schedules = []
    raw = jso.get("schedule")
    if raw is not None:
        for i, s in enumerate(_as_list(raw)):
            prefix = f"schedule[{i}]" if isinstance(raw, list) else "schedule"
            try:
                schedule = parse_schedule(s)
            except SpecError as exc:
                fail_spec(prefix, exc)
                continue
            for name in schedule.args:
                if name not in params:
                    fail(join_key(prefix, f"args.{name}"),
                         f"not a param of this job (params: {', '.join(params) or 'none'})")
            for name in params:
                if name not in schedule.args and name not in schedule.supplies:
                    supplies = ", ".join(sorted(schedule.supplies)) or "nothing"
                    fail(prefix, f"no value for param {name!r}: give it under args: "
                                 f"({schedule.type_name} schedules supply {supplies})")
            schedules.append(schedule)

    # conditions and actions, each with the key it has in the file
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

    # metadata
    metadata = {}
    raw = jso.get("metadata")
    if raw is not None:
        if not isinstance(raw, dict):
            fail("metadata", f"expected a mapping, not {_kind(raw)}")
        else:
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

    # Templates: check syntax and names now, so a typo is reported with the
    # file rather than when a run is created.
    checked = [] if adhoc else [("program", program), *zip(cond_keys, conditions),
                                *zip(action_keys, actions)]
    for prefix, value in checked:
        for key, s in _strings(value, prefix):
            if not is_template(s):
                continue
            problem = _template_problem(s, params)
            if problem:
                fail(key, problem)

    if errors:
        raise JobErrors(errors)
    return Job(job_id=job_id, params=tuple(params), program=program,
               schedules=tuple(schedules), conditions=tuple(conditions),
               actions=tuple(actions), metadata=metadata, path=path, adhoc=adhoc)


def _job_files(root: str, errors: list, rel: str = ""):
    """Relative paths of job files under ``root``; hidden names are skipped, directory links not followed.

    A directory that cannot be read is added to ``errors`` and skipped.
    """
    path = os.path.join(root, rel) if rel else root
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except OSError as exc:
        errors.append(JobFileError(path, None, f"cannot read directory: {exc.strerror}"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        sub = os.path.join(rel, entry.name) if rel else entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from _job_files(root, errors, sub)
        elif entry.name.endswith(JOB_FILE_SUFFIXES) and entry.is_file():
            yield sub


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"not valid YAML: {exc}"
    problem = exc.problem or "bad syntax"
    context = getattr(exc, "context", None)
    if context:
        problem += f" ({context})"
    return f"not valid YAML: line {mark.line + 1}, column {mark.column + 1}: {problem}"


def load_job_file(path, job_id: str) -> Job:
    """Read and validate one job file; JobErrors names the file and every problem."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise JobErrors([JobFileError(path, None, f"cannot read: {exc.strerror}")]) from None
    try:
        jso = yaml.load(data, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise JobErrors([JobFileError(path, None, _yaml_error(exc))]) from None
    except RecursionError:
        raise JobErrors([JobFileError(path, None, "not valid YAML: nested too deeply")]) from None
    if jso is None:
        raise JobErrors([JobFileError(path, None, "empty job file")])
    return job_from_jso(jso, job_id, path)


def load_jobs_dir(path) -> tuple[dict[str, Job], list[JobFileError]]:
    """Load every ``*.yaml``/``*.yml`` under ``path``; a bad file is reported and skipped.

    The job id is the path relative to ``path`` without the suffix, with
    ``/`` separators. Returns the jobs by id and the errors, in path order.
    """
    root = os.fspath(path)
    jobs, errors, files = {}, [], {}
    for rel in sorted(_job_files(root, errors)):
        file = os.path.join(root, rel)
        job_id = os.path.splitext(rel)[0].replace(os.sep, "/")
        if job_id in files:
            errors.append(JobFileError(file, None, f"duplicate job id {job_id!r} (also {files[job_id]})"))
            continue
        files[job_id] = file
        try:
            jobs[job_id] = load_job_file(file, job_id)
        except JobErrors as exc:
            errors.extend(exc.errors)
    return jobs, errors


# --------------------------------------------------------------------------
# Args and binding.


def _names(names) -> str:
    return ", ".join(repr(n) for n in names)


def check_args(job: Job, args) -> dict[str, str]:
    """Args for a run of ``job``: every param given and nothing else; values become strings."""
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
    return out


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
    variables = {"job_id": job.job_id, **args}
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


def adhoc_job(program_jso, job_id: str) -> Job:
    """A job with no params or schedules from a command string, an argv list or a program mapping."""
    try:
        program = parse_program(program_jso).to_jso()
    except SpecError as exc:
        raise BadRequest("ad hoc program: " + "; ".join(
            f"{join_key('program', k)}: {m}" for k, m in exc.problems)) from None
    return Job(job_id=job_id, params=(), program=program, schedules=(), conditions=(),
               actions=(), metadata={}, path=None, adhoc=True)

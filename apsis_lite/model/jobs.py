"""Jobs: strict job files → ``Job`` values, the jobs directory, args and binding.

A job file is checked completely: every problem is reported as a
``JobFileError(path, key, msg)`` (keys such as ``program.timeout.duration``
or ``schedule[1].expr``; list indices count from 0 and appear only where the
file has a list), so one load shows everything wrong with a directory.
Whatever a file holds, loading it raises nothing but that file's errors: it
is read only up to MAX_JOB_FILE_BYTES, its YAML is refused if aliases would
blow it up or it nests too deeply, and an unexpected failure becomes its
error (see docs/limits.md).

Binding renders every string of a job's program, conditions and actions as a
Jinja2 template with the run's args (in ``sandbox.BoundedEnvironment``:
bounded steps, time and memory; undefined names are errors). Templates are
compiled once and cached; strings without template syntax are never handed
to Jinja.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass, field
from datetime import date as _date_type, datetime, timedelta

import jinja2
import jinja2.meta
from dateutil.relativedelta import relativedelta
import yaml

from apsis_lite.model import actions as _actions
from apsis_lite.model import calendars as _calendars
from apsis_lite.model import conditions as _conditions
from apsis_lite.model import deadlines as _deadlines
from apsis_lite.model import reruns as _reruns
from apsis_lite.config import DEFAULT_MIN_INTERVAL
from apsis_lite.errors import ApsisError, BadRequest, JobFileError
from apsis_lite.model.programs import Program, parse_program
from apsis_lite.model.sandbox import BoundedEnvironment, TemplateLimit, render as _render_template
from apsis_lite.model.schedules import Fields, Schedule, SpecError, positive_duration, _kind, is_template, join_key, parse_schedule, unknown_key_message
from apsis_lite.timeutil import format_duration, get_tz, parse_time, utcnow

log = logging.getLogger(__name__)

try:  # libyaml's parser is several times faster; the safe constructors are the same
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader


class _Loader(_BaseLoader):
    """The safe loader without YAML 1.1's base-60 numbers.

    YAML 1.1 reads ``daytime: 17:00`` as the integer 1020 and ``9:30:15`` as
    34215; job files mean times of day, so those stay text (as in YAML 1.2).
    """


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_INT, re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(_FLOAT, re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def _constructing(what):
    """A constructor of the safe loader whose ValueError becomes a YAML error at the value's line."""
    construct = _BaseLoader.yaml_constructors[f"tag:yaml.org,2002:{what}"]

    def checked(loader, node):
        try:
            return construct(loader, node)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
            # Also explicit tags on what they cannot read: !!timestamp x, !!bool 2.
            value = node.value if isinstance(node.value, str) else ""
            hint = "; quote it to keep it as text" if what == "timestamp" else ""
            why = f"{exc}{hint}" if isinstance(exc, ValueError) and str(exc) else hint.lstrip("; ")
            raise yaml.constructor.ConstructorError(
                None, None, f"not a valid {_YAML_WHAT[what]}: {value[:40]!r}" + (f" ({why})" if why else ""),
                node.start_mark) from None
    return checked


_YAML_WHAT = {"timestamp": "date or time", "int": "number", "float": "number",
              "bool": "true or false", "binary": "base64 value"}
for _what in _YAML_WHAT:
    _Loader.add_constructor(f"tag:yaml.org,2002:{_what}", _constructing(_what))

# What one job file may be: a document far larger than any job needs is a
# mistake or an attack, and reading it must not cost the server its memory.
MAX_JOB_FILE_BYTES = 1 << 20
MAX_YAML_DEPTH = 100          # mappings and lists nested in each other
MAX_ALIAS_NODES = 100_000     # values that aliases (*name) add to a document, all told

JOB_FILE_SUFFIXES = (".yaml", ".yml")
JOB_KEYS = ("params", "program", "schedule", "condition", "action", "successors", "metadata",
            "resources", "reruns", "waiting", "catch_up", "deadline", "max_duration")
CATCH_UP_MISSED = ("all", "latest", "none")

# Keys apsis accepts that we do not, with what to do instead.
_UNSUPPORTED = {
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
    # None: the global max_age rule decides; else {"missed": all|latest|none, "max": int|None}.
    catch_up: dict | None = None
    # Resolves calendar names in templates; not part of the job's value.
    calendars: object = field(default=None, compare=False, repr=False)
    reruns: _reruns.Reruns | None = None    # automatic reruns (``reruns:``)
    waiting_max_time: float | None = None   # ``waiting: {max_time}``; None: the config's
    deadline: _deadlines.Deadline | None = None          # ``deadline:`` (an alarm)
    max_duration: _deadlines.MaxDuration | None = None   # ``max_duration:`` (an alarm)

    def to_jso(self) -> dict:
        """The job for the JSON API; each schedule carries its ``description``."""
        jso = {
            "job_id": self.job_id,
            "params": list(self.params),
            "program": self.program,
            "schedules": [{**s.to_jso(), "description": describe_schedule(s)} for s in self.schedules],
            "conditions": list(self.conditions),
            "actions": list(self.actions),
            "metadata": self.metadata,
            "path": self.path,
            "adhoc": self.adhoc,
        }
        if self.catch_up is not None:
            jso["catch_up"] = dict(self.catch_up)
        if self.reruns:
            jso["reruns"] = self.reruns.to_jso()
        if self.waiting_max_time:
            jso["waiting"] = {"max_time": self.waiting_max_time}
        if self.deadline is not None:
            jso["deadline"] = self.deadline.to_jso()
        if self.max_duration is not None:
            jso["max_duration"] = self.max_duration.to_jso()
        return jso


def describe_schedule(schedule: Schedule) -> str:
    """A schedule in words, with its stop schedule and jitter."""
    text = schedule.describe()
    if schedule.stop is not None:
        text += f"; {schedule.stop.describe()}"
    if schedule.jitter:
        text += f"; jitter {format_duration(schedule.jitter)}"
    return text


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
            pass
        try:
            return parse_time(value).date()  # a full time: its UTC date
        except ValueError:
            pass
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


def _add_months(value, months) -> _date_type:
    """The date ``months`` months after ``value``; the 31st becomes the month's last day."""
    return _as_date(value) + relativedelta(months=int(months))


def _strftime(value, fmt) -> str:
    """``value`` (a date, a time or ISO text) formatted with ``strftime``: ``%Y%m%d``, ``%A``..."""
    if isinstance(value, str):
        text = value.strip()
        value = _as_date(text) if len(text) == 10 else _as_datetime(text)
    return value.strftime(fmt)


def _as_datetime(text) -> datetime:
    """An ISO time as written, keeping its offset (a run's ``time`` arg shows local time)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return parse_time(text)


def _in_tz(value, tz) -> datetime:
    """A time (or ISO text) in zone ``tz``: ``{{ time | in_tz('Asia/Tokyo') | strftime('%H:%M') }}``."""
    if isinstance(value, str):
        value = _as_datetime(value.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=get_tz("UTC"))
    return value.astimezone(get_tz(tz))


@jinja2.pass_context
def _calendar(context, expr) -> _calendars.Calendar:
    """The calendar an expression names: ``calendar('Mon-Fri - US-holidays').before(date)``."""
    library = context.get("_calendars") or _calendars.DEFAULT_LIBRARY
    return library.parse(expr)


@jinja2.pass_context
def _cal_shift(context, value, expr, n) -> _date_type:
    """``value`` moved ``n`` dates of calendar ``expr``: ``date | cal_shift('Mon-Fri', -1)``."""
    return _calendar(context, expr).shift(value, n)


_ENV = BoundedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    # Multi-line shell commands keep their final newline, as written.
    keep_trailing_newline=True,
)
# ``date`` is also a common param name, and args hide helpers of the same
# name; the ``as_date`` filter works either way: {{ date | as_date }}.
_ENV.globals.update(date=_as_date, shift_days=_shift_days, today=_today, as_time=_as_time,
                    calendar=_calendar, cal=_calendar, add_days=_shift_days,
                    add_months=_add_months)
_ENV.add_filters(as_date=_as_date, shift_days=_shift_days, as_time=_as_time,
                 add_days=_shift_days, add_months=_add_months, cal_shift=_cal_shift,
                 strftime=_strftime, in_tz=_in_tz)

# Names a template may use besides the job's params.
_TEMPLATE_NAMES = frozenset(_ENV.globals) | {"job_id"}


@functools.lru_cache(maxsize=16384)
def _template(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


MAX_TEMPLATE_CHARS = 100_000

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
    if _only_names(source, names):
        return frozenset(names)
    return frozenset(jinja2.meta.find_undeclared_variables(_ENV.parse(source)))


def _only_names(source, names) -> bool:
    """True if ``source`` does nothing but put variables (``names``) into text."""
    return not is_template(_SIMPLE_EXPR.sub("", source)) and _JINJA_WORDS.isdisjoint(names)


def _template_problem(source: str, params, variables) -> str | None:
    """Why ``source`` cannot be bound with these params, or None if it can.

    A template that reads no param is rendered once here (with ``variables``,
    the job's own), so that one that breaks the sandbox's limits whatever its
    args is reported with the file.
    """
    if len(source) > MAX_TEMPLATE_CHARS:
        return f"template of {len(source):,} characters (at most {MAX_TEMPLATE_CHARS:,})"
    try:
        names = _template_names(source)
    except jinja2.TemplateSyntaxError as exc:
        msg = f"template error: {exc.message}"
        if "{#" in source:
            msg += " ('{#' starts a Jinja comment; write {{ '{#' }} for the text, e.g. in ${#var})"
        return msg
    except RecursionError:
        return "template error: nested too deeply"
    except Exception as exc:  # the template is user text: whatever Jinja makes of it is its problem
        return f"template error: {exc}"
    unknown = sorted(names - _TEMPLATE_NAMES - set(params))
    if unknown:
        have = ", ".join(params) if params else "none"
        return f"template uses {', '.join(map(repr, unknown))}, not a param of this job (params: {have})"
    if names & set(params) or _only_names(source, _SIMPLE_EXPR.findall(source)):
        return None
    try:
        template = _template(source)
    except RecursionError:
        return "template error: nested too deeply"
    except Exception as exc:
        return f"template error: {exc}"
    try:
        _render_template(template, variables)
    except TemplateLimit as exc:
        return f"template stopped: {exc}"
    except Exception:
        pass  # may hold only on some days (today(), calendars): reported when a run is bound
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
            return _render_template(_template(value), variables)
        except TemplateLimit as exc:
            raise BadRequest(f"{key}: template stopped: {exc}") from None
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


def job_from_jso(jso, job_id: str, path: str | None = None, *, adhoc: bool = False,
                 calendars=None, min_interval: float | None = DEFAULT_MIN_INTERVAL) -> Job:
    """Validate a job file's contents; JobErrors lists every problem found.

    With ``adhoc=True``, ``jso`` is an ad hoc job as stored (the output of
    ``Job.to_jso()``, or job-file form); its text is literal, not templates.
    ``calendars`` (a ``calendars.CalendarLibrary``) resolves calendar names
    in schedules and templates; None knows the weekday sets and the shipped
    calendars only. ``min_interval`` (seconds; the config setting) is the
    shortest interval a schedule may have; None checks none (a job stored
    earlier, read back).
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
    # Resources are conditions the engine checks last (conditions.Resource).
    parse_each("resources", lambda r: _conditions.Resource.from_jso({"name": r} if isinstance(r, str) else r),
               conditions, cond_keys)
    reruns, waiting_max_time = _reruns_and_waiting(jso, fail, fail_spec)

    # catch_up
    catch_up = None
    if jso.get("catch_up") is not None:
        try:
            catch_up = parse_catch_up(jso["catch_up"])
        except SpecError as exc:
            fail_spec("catch_up", exc)

    deadline, max_duration = _alarms(jso, fail, fail_spec)

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
    variables = {"job_id": job_id, "_calendars": calendars}
    for prefix, value in checked:
        for key, s in _strings(value, prefix):
            if not is_template(s):
                continue
            problem = _template_problem(s, params, variables)
            if problem:
                fail(key, problem)

    if errors:
        raise JobErrors(errors)
    return Job(job_id=job_id, params=tuple(params), program=program,
               schedules=tuple(schedules), conditions=tuple(conditions),
               actions=tuple(actions), metadata=metadata, path=path, adhoc=adhoc,
               reruns=reruns, waiting_max_time=waiting_max_time, catch_up=catch_up, calendars=calendars,
               deadline=deadline, max_duration=max_duration)


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


class _YamlLimit(Exception):
    """A document past MAX_YAML_DEPTH or MAX_ALIAS_NODES, or a recursive alias."""


def _yaml_children(node):
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return ()


def _check_yaml_nodes(root):
    """Refuse a composed document that aliases would blow up, or that nests too deeply.

    Walks the node graph once (aliases are shared nodes), computing for each
    node its depth and how many nodes it stands for once every alias is
    expanded: a "billion laughs" document of a few lines stands for 10**9.
    An alias inside its own anchor (a cycle) is refused too.
    """
    size, height, open_ = {}, {}, set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_.discard(key)
            kids = _yaml_children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            if height[key] > MAX_YAML_DEPTH:
                raise _YamlLimit(_at(node, f"nested more than {MAX_YAML_DEPTH} deep"))
            continue
        if key in size:
            continue  # an alias of a node already measured
        open_.add(key)
        stack.append((node, True))
        for kid in _yaml_children(node):
            if id(kid) in open_:
                raise _YamlLimit(_at(kid, "this anchor is used inside itself (a recursive alias)"))
            if id(kid) not in size:
                stack.append((kid, False))
    added = size[id(root)] - len(size)
    if added > MAX_ALIAS_NODES:
        raise _YamlLimit(f"aliases expand to {added:,} more values (at most {MAX_ALIAS_NODES:,})")


def _check_yaml_depth(root):
    """``_check_yaml_nodes`` for a document without anchors (a tree): only its depth can be wrong."""
    level, depth = [root], 1
    while level:
        if depth > MAX_YAML_DEPTH:
            raise _YamlLimit(_at(level[0], f"nested more than {MAX_YAML_DEPTH} deep"))
        deeper = []
        for node in level:
            if type(node) is yaml.MappingNode:
                for key, value in node.value:
                    if type(key) is not yaml.ScalarNode:
                        deeper.append(key)
                    if type(value) is not yaml.ScalarNode:
                        deeper.append(value)
            elif type(node) is yaml.SequenceNode:
                deeper.extend(n for n in node.value if type(n) is not yaml.ScalarNode)
        level, depth = deeper, depth + 1


# Where an anchor (&name) may be: an '&' not inside a word. Most job files
# have none (a shell's '&&' or '2>&1' is taken for one, which only costs the
# full check), so they are spared walking the node graph twice.
_MAYBE_ANCHOR = re.compile(rb"(?<![A-Za-z0-9_.\-])&")


def _at(node, msg):
    mark = node.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}: {msg}" if mark else msg


def _load_yaml(data: bytes):
    """The document in ``data``: safe YAML, within the limits above; None if empty."""
    loader = _Loader(data)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if b"&" in data and _MAYBE_ANCHOR.search(data):
            _check_yaml_nodes(node)
        else:
            _check_yaml_depth(node)
        try:
            return loader.construct_document(node)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as exc:  # a constructor taken aback by an explicit tag
            raise yaml.constructor.ConstructorError(None, None, f"cannot read a value: {exc}") from None
    finally:
        loader.dispose()


def load_job_file(path, job_id: str, calendars=None, *, min_interval=DEFAULT_MIN_INTERVAL) -> Job:
    """Read and validate one job file; JobErrors names the file and every problem.

    Whatever the file holds, JobErrors is all this raises: an unexpected
    failure is logged with its traceback and reported as the file's problem.
    """
    path = os.fspath(path)
    try:
        return _load_job_file(path, job_id, calendars, min_interval)
    except JobErrors:
        raise
    except Exception as exc:
        if isinstance(exc, RecursionError):
            msg = "cannot load: nested too deeply"
        elif isinstance(exc, MemoryError):
            msg = "cannot load: out of memory"
        else:
            msg = f"cannot load: {type(exc).__name__}: {exc}"
        log.warning("job file %s: %s", path, msg, exc_info=True)
        raise JobErrors([JobFileError(path, None, msg)]) from None


def _load_job_file(path, job_id, calendars, min_interval):
    try:
        with open(path, "rb") as file:
            # Read what stat says is there (a read of MAX_JOB_FILE_BYTES would
            # allocate that much for every file), then more only if it grew.
            size = min(os.fstat(file.fileno()).st_size, MAX_JOB_FILE_BYTES)
            data = file.read(size + 1)
            if len(data) > size:
                data += file.read(MAX_JOB_FILE_BYTES + 1 - len(data))
    except OSError as exc:
        raise JobErrors([JobFileError(path, None, f"cannot read: {exc.strerror}")]) from None
    if len(data) > MAX_JOB_FILE_BYTES:
        raise JobErrors([JobFileError(
            path, None, f"too large: more than {MAX_JOB_FILE_BYTES:,} bytes (1 MiB)")])
    try:
        jso = _load_yaml(data)
    except yaml.YAMLError as exc:
        raise JobErrors([JobFileError(path, None, _yaml_error(exc))]) from None
    except _YamlLimit as exc:
        raise JobErrors([JobFileError(path, None, f"not accepted as YAML: {exc}")]) from None
    except RecursionError:
        raise JobErrors([JobFileError(path, None, "not valid YAML: nested too deeply")]) from None
    if jso is None:
        raise JobErrors([JobFileError(path, None, "empty job file")])
    return job_from_jso(jso, job_id, path, calendars=calendars, min_interval=min_interval)


def load_jobs_dir(path, calendars=None, *, min_interval=DEFAULT_MIN_INTERVAL
                  ) -> tuple[dict[str, Job], list[JobFileError]]:
    """Load every ``*.yaml``/``*.yml`` under ``path``; a bad file is reported and skipped.

    The job id is the path relative to ``path`` without the suffix, with
    ``/`` separators. Returns the jobs by id and the errors, in path order.
    ``calendars`` (from ``calendars.load_calendars``) resolves calendar names;
    None knows the weekday sets and shipped calendars only. ``min_interval``
    is the config setting: the shortest interval a schedule may have.
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
            jobs[job_id] = load_job_file(file, job_id, calendars, min_interval=min_interval)
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


def adhoc_job(program_jso, job_id: str) -> Job:
    """A job with no params or schedules from a command string, an argv list or a program mapping."""
    try:
        program = parse_program(program_jso).to_jso()
    except SpecError as exc:
        raise BadRequest("ad hoc program: " + "; ".join(
            f"{join_key('program', k)}: {m}" for k, m in exc.problems)) from None
    return Job(job_id=job_id, params=(), program=program, schedules=(), conditions=(),
               actions=(), metadata={}, path=None, adhoc=True)

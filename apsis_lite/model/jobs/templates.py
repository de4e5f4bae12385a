"""Templates in job files: the Jinja2 environment, checking templates, and rendering them.

Every string of a job's program, conditions and actions may be a Jinja2
template over the run's args, rendered in ``sandbox.BoundedEnvironment``
(bounded steps, time and memory; undefined names are errors) with the
helpers below (``date``, ``shift_days``, ``today``, ``calendar``, ...) and
the ``shquote`` filter, which makes an arg one literal word of a shell command.
Templates are compiled once and cached; strings without template syntax are
never handed to Jinja. A job file's templates are checked when it is read,
so that a typo is reported with the file.
"""

from __future__ import annotations

import functools
import re
import shlex
from datetime import date as _date_type, datetime, timedelta

import jinja2
import jinja2.meta
from dateutil.relativedelta import relativedelta

from apsis_lite.errors import BadRequest
from apsis_lite.model import calendars as _calendars
from apsis_lite.model.fields import is_template, join_key
from apsis_lite.model.jobs import ora_names as _ora
from apsis_lite.model.sandbox import MAX_CHARS, BoundedEnvironment, TemplateLimit, render as _render_template
from apsis_lite.timeutil import get_tz, parse_time, utcnow


def _as_date(value) -> _date_type:
    """A date from a date, a datetime or ISO text such as ``2026-11-26``."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, _date_type):
        return _date_type(value.year, value.month, value.day)  # an ora Date of apsis's names: plain
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


def _shquote(value) -> str:
    """``value`` as one shell word, quoted so that bash takes it literally: ``{{ date | shquote }}``.

    Written outside quotes in the command. A date or a number is left as it
    is (``2026-12-03``); any other text is put in single quotes, with each
    ``'`` in it written ``'"'"'``.
    """
    text = str(value)
    # Sized before it is made: each ' becomes 5 characters, plus the 2 quotes around.
    size = len(text) + 4 * text.count("'") + 2
    if size > MAX_CHARS:
        raise TemplateLimit(f"shquote would make {size:,} characters (at most {MAX_CHARS:,})")
    return shlex.quote(text)


@jinja2.pass_context
def _calendar(context, expr) -> _calendars.Calendar:
    """The calendar an expression names: ``calendar('Mon-Fri - US-holidays').before(date)``."""
    library = context.get("_calendars") or _calendars.DEFAULT_LIBRARY
    return library.parse(expr)


@jinja2.pass_context
def _cal_shift(context, value, expr, n) -> _date_type:
    """``value`` moved ``n`` dates of calendar ``expr``: ``date | cal_shift('Mon-Fri', -1)``."""
    return _calendar(context, expr).shift(value, n)


@jinja2.pass_context
def _get_calendar(context, expr) -> _ora.OraCalendar:
    """apsis's ``get_calendar(name)``: a calendar of ours whose ``before``/``after``/``shift`` give ora Dates."""
    return _ora.OraCalendar(_calendar(context, expr))


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
                    add_months=_add_months,
                    # apsis's names (ora's), aliases of the helpers above: see ora_names.
                    Date=_ora.Date, Daytime=_ora.Daytime, Time=_ora.Time, TimeZone=_ora.TimeZone,
                    get_calendar=_get_calendar, from_local=_ora.from_local, to_local=_ora.to_local)
_ENV.add_filters(as_date=_as_date, shift_days=_shift_days, as_time=_as_time,
                 add_days=_shift_days, add_months=_add_months, cal_shift=_cal_shift,
                 strftime=_strftime, in_tz=_in_tz, shquote=_shquote)

# Names a template may use besides the job's params.
_TEMPLATE_NAMES = frozenset(_ENV.globals) | {"job_id"}


@functools.lru_cache(maxsize=16384)
def _template(source: str) -> jinja2.Template:
    template = _ENV.from_string(source)
    # Each render copies the globals into its context; from Jinja's ChainMap
    # that costs a lookup per name, a quarter of binding a run's templates.
    template.globals = dict(template.globals)
    return template


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


def template_problems(values, params, variables):
    """``(key, problem)`` for each template in ``values`` (``(key, jso)`` pairs) that cannot be bound.

    ``params`` are the job's, ``variables`` its own (``job_id``, ``_calendars``).
    """
    for prefix, value in values:
        for key, s in _strings(value, prefix):
            if not is_template(s):
                continue
            problem = _template_problem(s, params, variables)
            if problem:
                yield key, problem


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

"""What people type on the command line, read: ARG=VALUE words, a program's argv, run ids, times.

Pure functions: a bad word is a ``click.UsageError`` or ``click.BadParameter``
naming it, never a traceback.
"""

import re
from datetime import datetime, timedelta

import click
import dateutil.parser
from dateutil.tz import tzlocal

from apsis_lite import timeutil


def parse_assignments(words) -> dict:
    """``["date=2026-11-25", "x="]`` -> ``{"date": "2026-11-25", "x": ""}``."""
    args = {}
    for word in words:
        name, eq, value = word.partition("=")
        if not eq or not name:
            raise click.UsageError(f"expected ARG=VALUE, got {word!r}")
        args[name] = value
    return args


def program_from_argv(argv):
    """A single word containing whitespace is a shell command; else an argv list."""
    argv = list(argv)
    if len(argv) == 1 and any(c.isspace() for c in argv[0]):
        return argv[0]
    return argv


def normalize_run_id(text: str) -> str:
    """Accept ``12`` as well as ``r12``."""
    text = text.strip()
    return f"r{text}" if text.isdigit() else text


def parse_when(text: str, upcoming=False) -> str:
    """ISO UTC from ``now``, ``+10m`` (from now), ``-2h`` (ago), or a local time.

    With ``upcoming``, a bare time of day already past today means tomorrow
    (as apsis's ``schedule`` reads it).
    """
    text = text.strip()
    try:
        if upcoming and re.fullmatch(r"\d{1,2}:\d\d(:\d\d)?", text):
            t = timeutil.parse_time(text, tz=tzlocal())
            if t < timeutil.utcnow():
                t = (t.astimezone(tzlocal()) + timedelta(days=1)).replace(fold=0)
            return timeutil.to_iso(t)
        if text[:1] in "+-" and len(text) > 1:
            secs = timeutil.parse_duration(text[1:])
            delta = timedelta(seconds=secs if text[0] == "+" else -secs)
            return timeutil.to_iso(timeutil.utcnow() + delta)
        # A time without a zone means local time, as the person typing it does.
        return timeutil.to_iso(timeutil.parse_time(text, tz=tzlocal()))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_OVERRIDES = "apsis_lite.overrides"


def _keep_overrides(ctx, param, value):
    ctx.meta[_OVERRIDES] = tuple(value)


def override_option(f):
    """``--override NAME=VALUE`` (repeatable), as apsis has it; read back with ``overrides()``."""
    return click.option("--override", "-o", multiple=True, metavar="NAME=VALUE", expose_value=False,
                        callback=_keep_overrides,
                        help="Set config setting NAME to VALUE, over the config file (repeatable; "
                             "apsis's dotted names too, e.g. schedule.max_age=600).")(f)


def overrides() -> tuple:
    """The ``--override`` texts of the command being run (none outside a command)."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(_OVERRIDES, ()) if ctx is not None else ()


def is_run_id(word: str) -> bool:
    """``r12`` or ``12``: a run id; anything else (a state, a signal name) is not."""
    word = word.strip()
    return word.isdigit() or (word[:1] == "r" and word[1:].isdigit())


def runs_and_word(words, what, example):
    """Run ids and the one other word (a state or a signal), in either order.

    ``mark success r1 r2`` (apsis's order) and ``mark r1 r2 success`` both
    give (["r1", "r2"], "success"). A word shaped like a run id is always a
    run id, so the other word must be first or last, and given once.
    """
    others = [i for i, w in enumerate(words) if not is_run_id(w)]
    runs = [normalize_run_id(w) for w in words if is_run_id(w)]
    if not others:
        raise click.UsageError(f"no {what} given (a number is read as a run id), e.g. {example}")
    if len(others) > 1:
        bad = ", ".join(repr(words[i]) for i in others)
        raise click.UsageError(f"expected one {what} and run ids (r12 or 12), got {bad}")
    if not runs:
        raise click.UsageError(f"no run id given, e.g. {example}")
    if others[0] not in (0, len(words) - 1):
        raise click.UsageError(f"the {what} goes first or last, e.g. {example}")
    return runs, words[others[0]]


# Two defaults for the parts of a date that text leaves out: a part that comes
# out the same from both was typed. Leap years both, so that "Feb 29" reads.
_DEFAULTS = (datetime(2000, 1, 1), datetime(2004, 2, 2))


def _daytime_only(text):
    """The time of day (naive, or with the zone typed) if ``text`` names no date, else None."""
    try:
        dateutil.parser.isoparse(text)
        return None  # ISO 8601 always has a date
    except (ValueError, OverflowError):
        pass
    try:
        readings = [dateutil.parser.parse(text, default=d) for d in _DEFAULTS]
    except (ValueError, OverflowError):
        return None  # not a time at all: parse_time says so
    if any(r.date() != d.date() for r, d in zip(readings, _DEFAULTS)):
        return None
    return readings[0].timetz()


def _start_of_minute(t, daytime):
    """``t``, or the start of its minute when ``daytime`` was typed to the minute.

    Typing 07:28 at 07:28:40 means this minute, not tomorrow's.
    """
    if daytime.second or daytime.microsecond:
        return t
    return t.replace(second=0, microsecond=0)


def parse_run_at(text: str, past_ok: bool = False, now=None, zone=None) -> datetime:
    """When ``run --at TEXT`` runs, as an aware UTC datetime.

    ``now``, ``+10m``, a date and time (ISO, or what dateutil reads; local
    time unless a zone is given), or a time of day alone (``07:00``, ``7pm``):
    its next occurrence, today if not yet past (to the minute typed), else
    tomorrow, as ``at(1)`` does. A time that is past raises
    ``click.BadParameter`` unless ``past_ok``. ``now`` and ``zone`` (the
    local zone) are there for tests.
    """
    now = timeutil.utcnow() if now is None else now
    zone = tzlocal() if zone is None else zone
    text = text.strip()
    try:
        if text.lower() == "now":
            return now
        if text[:1] in "+-" and len(text) > 1:
            secs = timeutil.parse_duration(text[1:])
            when = now + timedelta(seconds=secs if text[0] == "+" else -secs)
            daytime = when.time()
        else:
            daytime = _daytime_only(text)
            if daytime is not None:
                return _next_daytime(daytime, now, zone)
            when = timeutil.parse_time(text, tz=zone)
            daytime = when.time()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if when < _start_of_minute(now, daytime) and not past_ok:
        local = when.astimezone(zone)
        raise click.BadParameter(
            f"{text!r} is in the past ({local:%Y-%m-%d %H:%M:%S %Z}); "
            f"add --past-ok to run it now, recorded as due then")
    return when


def _next_daytime(daytime, now, zone):
    """The next instant the wall clock shows ``daytime``: today's, unless past, else tomorrow's."""
    zone = daytime.tzinfo or zone
    naive = daytime.replace(tzinfo=None)
    today = now.astimezone(zone).date()
    when = timeutil.first_instant_at(datetime.combine(today, naive), zone)
    if when < _start_of_minute(now, naive):
        when = timeutil.first_instant_at(datetime.combine(today + timedelta(days=1), naive), zone)
    return when.astimezone(timeutil.UTC)


def describe_day(when, now=None, zone=None) -> str:
    """``Fri 2026-12-04 07:00:00 CET (tomorrow)``: a time, local, with the day said in words."""
    now = timeutil.utcnow() if now is None else now
    zone = tzlocal() if zone is None else zone
    local = when.astimezone(zone)
    days = (local.date() - now.astimezone(zone).date()).days
    word = {-1: "yesterday", 0: "today", 1: "tomorrow"}.get(days)
    if word is None:
        word = f"in {days} days" if days > 0 else f"{-days} days ago"
    return f"{local:%a %Y-%m-%d %H:%M:%S %Z} ({word})"

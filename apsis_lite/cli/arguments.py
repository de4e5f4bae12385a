"""What people type on the command line, read: ARG=VALUE words, a program's argv, run ids, times.

Pure functions: a bad word is a ``click.UsageError`` or ``click.BadParameter``
naming it, never a traceback.
"""

import re
from datetime import timedelta

import click
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

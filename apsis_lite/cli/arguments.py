"""What people type on the command line, read: ARG=VALUE words, a program's argv, run ids, times.

Pure functions: a bad word is a ``click.UsageError`` or ``click.BadParameter``
naming it, never a traceback.
"""

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


def parse_when(text: str) -> str:
    """ISO UTC from ``now``, ``+10m`` (from now), ``-2h`` (ago), or a local time."""
    text = text.strip()
    try:
        if text[:1] in "+-" and len(text) > 1:
            secs = timeutil.parse_duration(text[1:])
            delta = timedelta(seconds=secs if text[0] == "+" else -secs)
            return timeutil.to_iso(timeutil.utcnow() + delta)
        # A time without a zone means local time, as the person typing it does.
        return timeutil.to_iso(timeutil.parse_time(text, tz=tzlocal()))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

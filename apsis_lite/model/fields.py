"""Strict reading of job-file mappings, collecting every problem.

``Fields`` takes the keys of one mapping and reports, in one ``SpecError``,
every key that is missing, unknown (with a did-you-mean) or fails its
conversion; the converters here (``text``, ``flag``, ``string_list``,
``positive_duration``, ...) turn a YAML value into what a type holds or
raise ValueError saying why. Schedules, programs, conditions, actions,
reruns, deadlines and jobs all read their mappings with it.
"""

from __future__ import annotations

import difflib
from datetime import date

from apsis_lite.timeutil import get_tz, parse_duration


class SpecError(ValueError):
    """One or more problems in a spec, each a ``(key, message)`` pair.

    Keys are relative paths such as ``interval``, ``timeout.duration`` or
    ``argv[2]``; ``""`` means the spec itself. ``jobs.reading`` prefixes them
    with where the spec sits in the file and turns them into JobFileErrors.
    """

    def __init__(self, key: str = "", msg: str = "", *, problems=None):
        self.problems = list(problems) if problems is not None else [(key, msg)]
        super().__init__("; ".join(
            f"{k}: {m}" if k else m for k, m in self.problems))


def join_key(prefix: str, key: str) -> str:
    """``join_key("program", "argv[1]") == "program.argv[1]"``; indices attach without a dot."""
    if not prefix:
        return key
    if not key:
        return prefix
    return prefix + key if key.startswith("[") else f"{prefix}.{key}"


_REQUIRED = object()


class Fields:
    """Reads one mapping strictly: take keys, then ``done()`` reports the rest.

    Conversion problems are collected, not raised, so that one pass reports
    every problem in the mapping. ``done()`` raises one SpecError for all.
    """

    def __init__(self, jso, what: str = "mapping"):
        if not isinstance(jso, dict):
            raise SpecError("", f"expected a {what}, got {_kind(jso)}")
        self._jso = dict(jso)
        self._known = []
        self.problems = []

    def __contains__(self, key):
        return key in self._jso

    def take(self, key, convert=None, default=_REQUIRED):
        """Remove and return ``key``, converted; ``default`` when absent.

        Without a default the key is required. A failed conversion is
        recorded and returns None; the caller need not check, because
        ``done()`` raises before anything is built from it.
        """
        self._known.append(key)
        if key not in self._jso:
            if default is _REQUIRED:
                self.error(key, "missing (required)")
                return None
            return default
        value = self._jso.pop(key)
        if convert is None:
            return value
        try:
            return convert(value)
        except SpecError as exc:
            self.problems.extend((join_key(key, k), m) for k, m in exc.problems)
        except ValueError as exc:
            self.error(key, str(exc))
        return None

    def error(self, key, msg):
        self.problems.append((key, msg))

    def done(self):
        """Report unknown keys and raise SpecError if anything went wrong."""
        for key in self._jso:
            self.error(str(key), unknown_key_message(key, self._known))
        if self.problems:
            raise SpecError(problems=self.problems)


def unknown_key_message(key, known) -> str:
    """``unknown key`` with a did-you-mean and the keys allowed there."""
    msg = "unknown key"
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    if known:
        msg += f"; expected: {', '.join(known)}"
    return msg


def _kind(value) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def is_template(value) -> bool:
    """True if ``value`` is a string holding Jinja2 syntax, to be checked after binding."""
    return isinstance(value, str) and ("{{" in value or "{%" in value or "{#" in value)


def text(value) -> str:
    """A string; numbers and dates are converted with ``str()`` (YAML reads ``1000`` as an int)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, date)) and not isinstance(value, bool):
        return value.isoformat() if isinstance(value, date) else str(value)
    raise ValueError(f"expected a string, got {_kind(value)}")


def nonempty_text(value) -> str:
    value = text(value)
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def flag(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_kind(value)}")
    return value


def string_list(value, *, item=text) -> list:
    """A list of strings; a single string is a list of one."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a list of strings, got {_kind(value)}")
    out, problems = [], []
    for i, v in enumerate(value):
        try:
            out.append(item(v))
        except ValueError as exc:
            problems.append((f"[{i}]", str(exc)))
    if problems:
        raise SpecError(problems=problems)
    return out


def string_map(value) -> dict:
    """A mapping of strings to strings; scalar values are converted with ``str()``."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, got {_kind(value)}")
    out, problems = {}, []
    for k, v in value.items():
        if not isinstance(k, str):
            problems.append((str(k), f"key must be a string, got {_kind(k)}"))
            continue
        try:
            out[k] = str(v) if isinstance(v, bool) else text(v)
        except ValueError as exc:
            problems.append((k, str(exc)))
    if problems:
        raise SpecError(problems=problems)
    return out


def duration(value) -> float:
    return parse_duration(value)


def positive_duration(value) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than zero: {value!r}")
    return seconds


def _zone_name(value) -> str:
    name = nonempty_text(value)
    get_tz(name)
    return name

"""Calendars: sets of dates that schedules run on and templates count in.

A calendar is written as an expression:

* a weekday set: ``Mon-Fri``, ``Tue,Thu``, ``Sat,Sun``, ``Fri-Mon`` (ranges
  wrap around the week), full names too (``Monday``); ``all`` is every day;
* a named calendar: a file ``NAME.cal`` in the configured ``calendars_dir``,
  or one shipped with apsis-lite (``US-holidays``, ``UK-holidays``,
  ``DE-holidays``, ``FR-holidays``, ``JP-holidays``, ``NYSE-holidays``);
  a file of the user's wins over a shipped one of the same name;
* set arithmetic on those, left to right, operators between spaces:
  ``A - B`` (dates in A but not B), ``A + B`` (in either), ``A & B`` (in
  both), and parentheses: ``Mon-Fri - (US-holidays + office-closed)``.

An expression is at most MAX_EXPR_CHARS long, with at most MAX_TERMS
calendars and parentheses nested at most MAX_DEPTH deep: every date a
schedule looks at asks each of its calendars.

A calendar file lists dates one a line (``YYYY-MM-DD``) or inclusive ranges
(``2026-12-24..2026-12-31``), each optionally followed by text (the
holiday's name); ``#`` starts a comment. ora's files, which apsis reads, are
in that form with ``START`` and ``STOP`` lines giving the span they cover
(``STOP`` excluded): every date listed must lie in it. A named calendar
knows only the dates it lists: ``Mon-Fri - US-holidays`` past the file's last
year is every weekday.

Everything here is pure: no clock reads, no I/O except loading files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib import resources

from apsis_lite.errors import JobFileError
from apsis_lite.timeutil import parse_date

CALENDAR_SUFFIX = ".cal"
SHIPPED_PACKAGE = "apsis_lite.model.calendars_data"

_DAY = timedelta(days=1)
_WEEKDAYS = {
    "mon": 0, "monday": 0, "tue": 1, "tues": 1, "tuesday": 1, "wed": 2, "wednesday": 2,
    "thu": 3, "thur": 3, "thurs": 3, "thursday": 3, "fri": 4, "friday": 4,
    "sat": 5, "saturday": 5, "sun": 6, "sunday": 6,
}
_WEEKDAY_SET = re.compile(r"[A-Za-z]+(-[A-Za-z]+)?(,[A-Za-z]+(-[A-Za-z]+)?)*")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_OPERATORS = {"+": "union", "-": "difference", "&": "intersection"}

MAX_EXPR_CHARS = 1000
MAX_TERMS = 50
MAX_DEPTH = 10
MAX_SHIFT = 10_000      # calendar dates one ``shift`` may step
MAX_DATES_SPAN = 100_000  # days one ``dates`` may cover (about 270 years)


class CalendarError(ValueError):
    """A calendar expression or file that cannot be used."""


def _as_date(value) -> date:
    if isinstance(value, date) and type(value) not in (date, datetime):
        value = date(value.year, value.month, value.day)  # a template's ora Date: plain again
    try:
        return parse_date(value)
    except ValueError:
        pass
    if isinstance(value, str):  # a full time such as a run's ``time`` arg: its own date
        try:
            return datetime.fromisoformat(value.strip()).date()
        except ValueError:
            pass
    raise CalendarError(f"not a date: {value!r} (expected YYYY-MM-DD)")


class Calendar:
    """A set of dates. ``expr`` is its text; ``str(cal)`` gives it back.

    Subclasses answer ``contains()`` and ``_bounds()`` (the first and last
    date listed in any named calendar inside, or None): outside those
    bounds membership repeats weekly, which lets every search end.
    """

    expr: str

    def __str__(self):
        return self.expr

    def __repr__(self):
        return f"<calendar {self.expr}>"

    def __contains__(self, value) -> bool:
        return self.contains(value)

    def contains(self, value) -> bool:
        raise NotImplementedError

    def _bounds(self):
        raise NotImplementedError

    def _last_possible(self, d: date):
        """Past this date a forward search can stop (None: it never can)."""
        raise NotImplementedError

    # -- searching ---------------------------------------------------------------

    def on_or_after(self, value) -> date | None:
        """The first date of the calendar on or after ``value``, None if there is none."""
        d = _as_date(value)
        bounds = self._bounds()
        # Past the named calendars' dates membership is weekly: a week more
        # without a date means there is none.
        limit = (max(d, bounds[1]) if bounds else d) + 7 * _DAY
        while d <= limit:
            if self.contains(d):
                return d
            d += _DAY
        return None

    def on_or_before(self, value) -> date | None:
        """The last date of the calendar on or before ``value``, None if there is none."""
        d = _as_date(value)
        bounds = self._bounds()
        limit = (min(d, bounds[0]) if bounds else d) - 7 * _DAY
        while d >= limit:
            if self.contains(d):
                return d
            d -= _DAY
        return None

    def after(self, value) -> date:
        """The first calendar date strictly after ``value`` (a date or ISO text)."""
        found = self.on_or_after(_as_date(value) + _DAY)
        if found is None:
            raise CalendarError(f"no date in calendar {self.expr!r} after {_as_date(value)}")
        return found

    def before(self, value) -> date:
        """The last calendar date strictly before ``value`` (a date or ISO text)."""
        found = self.on_or_before(_as_date(value) - _DAY)
        if found is None:
            raise CalendarError(f"no date in calendar {self.expr!r} before {_as_date(value)}")
        return found

    def shift(self, value, n: int) -> date:
        """``n`` calendar dates after ``value`` (before, if negative); ``value`` itself for 0.

        From a date not in the calendar, ``shift(d, 1)`` is the next calendar
        date and ``shift(d, -1)`` the previous one.
        """
        d = _as_date(value)
        n = int(n)
        if abs(n) > MAX_SHIFT:
            raise CalendarError(f"cannot shift by {n} dates (at most {MAX_SHIFT:,} either way)")
        for _ in range(abs(n)):
            d = self.after(d) if n > 0 else self.before(d)
        return d

    def dates(self, start, stop):
        """The calendar's dates in [start, stop), in order."""
        d, stop = _as_date(start), _as_date(stop)
        if (stop - d).days > MAX_DATES_SPAN:
            raise CalendarError(f"dates from {d} to {stop}: more than {MAX_DATES_SPAN:,} days")
        while d < stop:
            if self.contains(d):
                yield d
            d += _DAY


@dataclass(frozen=True, repr=False)
class WeekdayCalendar(Calendar):
    """Every date whose weekday (0 = Monday) is in ``days``."""

    days: frozenset
    expr: str

    def contains(self, value):
        return _as_date(value).weekday() in self.days

    def _bounds(self):
        return None


@dataclass(frozen=True, repr=False)
class DateCalendar(Calendar):
    """The dates listed in a calendar file."""

    dates_set: frozenset
    expr: str
    path: str | None = None
    span: tuple | None = None  # (first, last) dates the file covers: ora's START and STOP

    def contains(self, value):
        return _as_date(value) in self.dates_set

    def _bounds(self):
        if self.span is not None:
            return self.span
        if not self.dates_set:
            return None
        return min(self.dates_set), max(self.dates_set)


@dataclass(frozen=True, repr=False)
class CombinedCalendar(Calendar):
    """``left`` and ``right`` combined by ``op`` (union, difference, intersection)."""

    op: str
    left: Calendar
    right: Calendar
    expr: str

    def contains(self, value):
        d = _as_date(value)
        if self.op == "union":
            return self.left.contains(d) or self.right.contains(d)
        if self.op == "difference":
            return self.left.contains(d) and not self.right.contains(d)
        return self.left.contains(d) and self.right.contains(d)

    def _bounds(self):
        bounds = [b for b in (self.left._bounds(), self.right._bounds()) if b]
        if not bounds:
            return None
        return min(b[0] for b in bounds), max(b[1] for b in bounds)


ALL = WeekdayCalendar(frozenset(range(7)), "all")


def weekday_set(text: str) -> WeekdayCalendar:
    """``Mon-Fri``, ``Tue,Thu``, ``Fri-Mon``, ``all``; CalendarError if it is not one."""
    if text.lower() == "all":
        return ALL
    if not _WEEKDAY_SET.fullmatch(text):
        raise CalendarError(f"not a weekday set: {text!r}")
    days = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        try:
            a = _WEEKDAYS[first.lower()]
            b = _WEEKDAYS[last.lower()] if last else a
        except KeyError as exc:
            raise CalendarError(f"not a weekday: {exc.args[0]!r} in {text!r}") from None
        i = a
        days.add(i)
        while i != b:  # ranges wrap: Fri-Mon is Fri, Sat, Sun, Mon
            i = (i + 1) % 7
            days.add(i)
    return WeekdayCalendar(frozenset(days), text)


def _is_weekday_set(token: str) -> bool:
    if token.lower() == "all":
        return True
    if not _WEEKDAY_SET.fullmatch(token):
        return False
    return all(w.lower() in _WEEKDAYS for w in re.split(r"[-,]", token))


# --------------------------------------------------------------------------
# Calendar files.


_CAL_LINE = re.compile(r"(?P<first>[^\s.]+)(?:\s*\.\.\s*(?P<last>[^\s.]+))?(?:\s+.*)?")
_CAL_SPAN = re.compile(r"(?P<key>START|STOP)\s+(?P<date>\S+)")


def parse_calendar_text(text: str, name: str, path: str | None = None) -> DateCalendar:
    """A calendar from file text; CalendarError names the first bad line.

    Text after a date or range is its description and is ignored. ora's
    ``START date`` and ``STOP date`` lines give the span the file covers.
    """
    dates, span, listed = set(), {}, []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        bound = _CAL_SPAN.fullmatch(line)
        if bound:
            key = bound["key"]
            if key in span:
                raise CalendarError(f"line {number}: a second {key} line")
            try:
                span[key] = parse_date(bound["date"])
            except ValueError:
                raise CalendarError(f"line {number}: {key} needs a date (YYYY-MM-DD): {line!r}") from None
            continue
        match = _CAL_LINE.fullmatch(line)
        try:
            if match is None:
                raise ValueError
            a = parse_date(match["first"])
            b = parse_date(match["last"]) if match["last"] else a
        except ValueError:
            raise CalendarError(
                f"line {number}: not a date or range: {line!r} (expected YYYY-MM-DD or "
                "YYYY-MM-DD..YYYY-MM-DD, then optionally a description)") from None
        if b < a:
            raise CalendarError(f"line {number}: range ends before it starts: {line!r}")
        if (b - a).days > 366 * 100:
            raise CalendarError(f"line {number}: range longer than a hundred years: {line!r}")
        listed.append((number, a, b))
    first, stop = span.get("START"), span.get("STOP")
    if (first is None) != (stop is None):
        raise CalendarError("START and STOP go together: give both or neither")
    if first is not None and stop <= first:
        raise CalendarError(f"STOP {stop} is not after START {first}")
    if first is not None and (stop - first).days > 366 * 1000:
        raise CalendarError(f"START {first} to STOP {stop}: more than a thousand years")
    for number, a, b in listed:
        if first is not None and not (first <= a and b < stop):
            raise CalendarError(f"line {number}: {a if a < first or a >= stop else b} is outside "
                                f"START {first} to STOP {stop} (STOP excluded)")
        d = a
        while d <= b:
            dates.add(d)
            d += _DAY
    span = (first, stop - _DAY) if first is not None else None
    return DateCalendar(frozenset(dates), name, path, span)


def _shipped_names() -> list:
    try:
        files = resources.files(SHIPPED_PACKAGE).iterdir()
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover - broken install
        return []
    return sorted(f.name[:-len(CALENDAR_SUFFIX)] for f in files if f.name.endswith(CALENDAR_SUFFIX))


class CalendarLibrary:
    """Named calendars: the user's files (from ``calendars_dir``) over the shipped ones.

    Files are read when first used and kept; ``parse(expr)`` turns an
    expression into a Calendar.
    """

    def __init__(self, user: dict | None = None):
        self._user = dict(user or {})  # name -> DateCalendar
        self._shipped = {}

    def names(self) -> list:
        return sorted(set(self._user) | set(_shipped_names()))

    def get(self, name: str) -> Calendar:
        if name in self._user:
            return self._user[name]
        if name not in self._shipped:
            if name not in _shipped_names():
                known = ", ".join(self.names()) or "none"
                raise CalendarError(f"unknown calendar {name!r} (named calendars: {known}; "
                                    "weekday sets such as Mon-Fri; operators + - & between spaces)")
            text = resources.files(SHIPPED_PACKAGE).joinpath(name + CALENDAR_SUFFIX).read_text()
            self._shipped[name] = parse_calendar_text(text, name)
        return self._shipped[name]

    def parse(self, expr) -> Calendar:
        """The calendar an expression names; CalendarError says what is wrong with it."""
        if isinstance(expr, Calendar):
            return expr
        if not isinstance(expr, str) or not expr.strip():
            raise CalendarError(f"not a calendar: {expr!r}")
        if len(expr) > MAX_EXPR_CHARS:
            raise CalendarError(f"calendar expression too long: {len(expr):,} characters "
                                f"(at most {MAX_EXPR_CHARS:,})")
        tokens = expr.replace("(", " ( ").replace(")", " ) ").split()
        terms = sum(1 for t in tokens if t not in _OPERATORS and t not in "()")
        if terms > MAX_TERMS:
            raise CalendarError(f"calendar expression has {terms} calendars (at most {MAX_TERMS})")
        depth = deepest = 0
        for t in tokens:
            depth += (t == "(") - (t == ")")
            deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            raise CalendarError(f"calendar expression nested {deepest} parentheses deep "
                                f"(at most {MAX_DEPTH})")
        cal, pos = self._expr(tokens, 0, expr)
        if pos != len(tokens):
            raise CalendarError(f"unexpected {tokens[pos]!r} in calendar {expr!r}")
        return cal

    def _expr(self, tokens, pos, text):
        left, pos = self._term(tokens, pos, text)
        while pos < len(tokens) and tokens[pos] in _OPERATORS:
            op = tokens[pos]
            right, pos = self._term(tokens, pos + 1, text)
            left = CombinedCalendar(_OPERATORS[op], left, right, f"{left.expr} {op} {right.expr}")
        return left, pos

    def _term(self, tokens, pos, text):
        if pos >= len(tokens):
            raise CalendarError(f"calendar {text!r} ends where a calendar was expected")
        token = tokens[pos]
        if token == "(":
            cal, pos = self._expr(tokens, pos + 1, text)
            if pos >= len(tokens) or tokens[pos] != ")":
                raise CalendarError(f"missing ')' in calendar {text!r}")
            return _Grouped(cal), pos + 1
        if token in _OPERATORS or token == ")":
            raise CalendarError(f"unexpected {token!r} in calendar {text!r}")
        if _is_weekday_set(token):
            return weekday_set(token), pos + 1
        if not _NAME.fullmatch(token):
            raise CalendarError(f"not a calendar name: {token!r} in {text!r}")
        return self.get(token), pos + 1


class _Grouped(Calendar):
    """A parenthesised calendar: the same dates, its text in parentheses."""

    def __init__(self, inner):
        self.inner = inner
        self.expr = f"({inner.expr})"

    def __eq__(self, other):
        return isinstance(other, _Grouped) and other.inner == self.inner

    def __hash__(self):
        return hash(self.inner)

    def contains(self, value):
        return self.inner.contains(value)

    def _bounds(self):
        return self.inner._bounds()


DEFAULT_LIBRARY = CalendarLibrary()


def load_calendars(folder) -> tuple[CalendarLibrary, list]:
    """The library for a ``calendars_dir`` (None: shipped calendars only), and the files' problems.

    A bad file is reported as a JobFileError with its line and left out; the
    others still load.
    """
    if folder is None:
        return CalendarLibrary(), []
    folder = os.fspath(folder)
    user, errors = {}, []
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        return CalendarLibrary(), [JobFileError(folder, None, f"cannot read calendars folder: {exc.strerror}")]
    for entry in names:
        if entry.startswith(".") or not entry.endswith(CALENDAR_SUFFIX):
            continue
        name = entry[:-len(CALENDAR_SUFFIX)]
        path = os.path.join(folder, entry)
        if _is_weekday_set(name) or not _NAME.fullmatch(name):
            errors.append(JobFileError(path, None, f"not usable as a calendar name: {name!r} "
                                                   "(letters, digits, _ . -; not a weekday set)"))
            continue
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
            user[name] = parse_calendar_text(text, name, path)
        except OSError as exc:
            errors.append(JobFileError(path, None, f"cannot read: {exc.strerror}"))
        except UnicodeDecodeError:
            errors.append(JobFileError(path, None, "not UTF-8 text"))
        except CalendarError as exc:
            errors.append(JobFileError(path, None, str(exc)))
    return CalendarLibrary(user), errors

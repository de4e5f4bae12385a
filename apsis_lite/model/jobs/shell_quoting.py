"""Finding params put into a shell command unquoted (``check-jobs`` warns about them).

A run's args are text from whoever starts the run; ``{{ date }}`` in a shell
command puts that text into the command as shell, so an arg of
``$(touch /tmp/x)`` runs. Safe are ``{{ date | shquote }}`` written outside
quotes, ``"$APSIS_ARG_date"`` (the program's environment has every arg), and
a param passed through a helper that accepts only a date, a time or a number
(``{{ date | as_date }}``, ``{{ date | shift_days(-1) }}``, ``{{ n | int }}``):
anything else makes the run fail to bind. So is a param declared with a
``pattern`` that matches only letters, digits and ``@%+=:,./-`` (the
characters ``shlex.quote`` leaves as they are), since args must match it.

The check reads the template's syntax tree, following the shell's quotes in
the text between expressions, and values derived from a param by
``{% set %}`` or ``{% for %}``. It does not follow macros or shell
constructs beyond quotes and backslashes (``"$(cmd {{ d | shquote }})"`` is
safe but warned about).
"""

from __future__ import annotations

import re
import re._parser as _sre  # the standard library's own parse of a pattern

import jinja2
from jinja2 import nodes

# Filters and functions whose result is a date, a time or a number whatever
# the text they are given (they fail on anything else).
_TYPED_FILTERS = frozenset({"as_date", "shift_days", "add_days", "add_months", "cal_shift",
                            "as_time", "in_tz", "int", "float", "length", "count"})
_TYPED_FUNCTIONS = frozenset({"date", "shift_days", "add_days", "add_months", "as_time", "today"})
_CALENDARS = frozenset({"calendar", "cal"})

# A parser only: the syntax tree as written, without the sandbox's rewriting.
_PARSER = jinja2.Environment(keep_trailing_newline=True)

UNQUOTED, SINGLE, DOUBLE = "unquoted", "single", "double"


def unquoted_params(source: str, params, patterns=()) -> list[tuple[str, str]]:
    """``(param, where)`` for each place ``source`` puts a param into shell text unsafely.

    ``patterns`` are the job's ``(param, pattern)`` pairs. ``where`` is the
    shell's quoting there: UNQUOTED, SINGLE or DOUBLE. A template that does
    not parse yields nothing (loading reports it).
    """
    try:
        tree = _PARSER.parse(source)
    except Exception:  # a template error; the job file's own errors say what
        return []
    safe = {p for p, pattern in patterns if shell_safe_pattern(pattern)}
    tainted, quoted = _tainted_names(tree, set(params) - safe)
    found, state = [], UNQUOTED
    for output in tree.find_all(nodes.Output):
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData):
                state = _after(node.data, state)
                continue
            names = _read_names(node) & tainted.keys()
            if not names:
                continue
            kind = _kind(node, tainted, quoted)
            if kind == "typed" or (kind == "quoted" and state == UNQUOTED):
                continue
            found.extend((param, state) for param in sorted({tainted[n] for n in names}))
    return _unique(found)


_SAFE_CHAR = re.compile(r"[\w@%+=:,./-]")
_MAX_RANGE = 1000  # a wider class range is not examined character by character


def shell_safe_pattern(pattern: str) -> bool:
    """True if every text matching ``pattern`` is made of characters the shell takes literally."""
    try:
        return _only_safe(_sre.parse(pattern))
    except Exception:  # not a pattern (loading reports it), or a construct not known here
        return False


def _only_safe(parsed) -> bool:
    for op, av in parsed:
        if op is _sre.LITERAL:
            ok = bool(_SAFE_CHAR.fullmatch(chr(av)))
        elif op is _sre.IN:
            ok = all(_safe_class_item(item_op, item) for item_op, item in av)
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            ok = _only_safe(av[2])
        elif op is _sre.SUBPATTERN:
            ok = _only_safe(av[-1])
        elif op is _sre.ATOMIC_GROUP:
            ok = _only_safe(av)
        elif op is _sre.BRANCH:
            ok = all(_only_safe(branch) for branch in av[1])
        else:
            ok = op is _sre.AT  # ^, $, \b: match no characters
        if not ok:
            return False
    return True


def _safe_class_item(op, av) -> bool:
    if op is _sre.LITERAL:
        return bool(_SAFE_CHAR.fullmatch(chr(av)))
    if op is _sre.RANGE:
        lo, hi = av
        return hi - lo <= _MAX_RANGE and all(_SAFE_CHAR.fullmatch(chr(c)) for c in range(lo, hi + 1))
    if op is _sre.CATEGORY:
        return av in (_sre.CATEGORY_DIGIT, _sre.CATEGORY_WORD)
    return False  # a negated class, or one not known here


def _kind(expr, tainted, quoted=frozenset()) -> str:
    """``typed`` (a date, time or number), ``quoted`` (shquote) or ``raw`` (the text as it is).

    ``quoted`` are the names set to shquote's output.
    """
    if isinstance(expr, nodes.Name) and expr.name in quoted:
        return "quoted"
    if isinstance(expr, nodes.Filter):
        if expr.name == "shquote":
            return "quoted"
        if expr.name in _TYPED_FILTERS:
            return "typed"
        if expr.name == "strftime" and not any(_read_names(a) & tainted.keys() for a in expr.args):
            return "typed"  # its format is the job's own text
    if isinstance(expr, nodes.Call):
        func = expr.node
        if isinstance(func, nodes.Name) and func.name in _TYPED_FUNCTIONS:
            return "typed"
        if (isinstance(func, nodes.Getattr) and isinstance(func.node, nodes.Call)
                and isinstance(func.node.node, nodes.Name) and func.node.node.name in _CALENDARS):
            return "typed"  # calendar('Mon-Fri').before(date): a date
    if isinstance(expr, nodes.CondExpr):
        branches = [b for b in (expr.expr1, expr.expr2) if b is not None]
        kinds = {_kind(b, tainted, quoted) if _read_names(b) & tainted.keys() else "typed" for b in branches}
        return "raw" if "raw" in kinds else "quoted" if "quoted" in kinds else "typed"
    return "raw"


def _read_names(node) -> set:
    return {n.name for n in node.find_all(nodes.Name) if n.ctx == "load"} | (
        {node.name} if isinstance(node, nodes.Name) and node.ctx == "load" else set())


def _tainted_names(tree, params: set) -> tuple[dict, set]:
    """The params and the names derived from them (name -> param), and which of those hold shquote's output.

    ``{% set n = date | shquote %}`` makes ``n`` quoted, ``{% set n = date | as_date %}``
    leaves it untainted; any other ``set`` or ``for`` over a tainted name taints its targets.
    """
    tainted = {p: p for p in params}
    quoted, raw = set(), set()
    while True:
        before = (len(tainted), len(quoted), len(raw))
        for node in tree.find_all((nodes.Assign, nodes.For, nodes.AssignBlock)):
            source = node.node if isinstance(node, nodes.Assign) else (
                node.iter if isinstance(node, nodes.For) else nodes.Output(node.body))
            origins = sorted(tainted[n] for n in _read_names(source) if n in tainted)
            if not origins:
                continue
            kind = "raw"
            if isinstance(node, nodes.Assign) and isinstance(node.target, nodes.Name):
                kind = _kind(source, tainted, quoted - raw)
            if kind == "typed":
                continue
            for name in _stored_names(node.target):
                tainted.setdefault(name, origins[0])
                (quoted if kind == "quoted" else raw).add(name)
        if (len(tainted), len(quoted), len(raw)) == before:
            return tainted, quoted - raw


def _stored_names(target) -> set:
    names = {n.name for n in target.find_all(nodes.Name)}
    return names | ({target.name} if isinstance(target, nodes.Name) else set())


def _after(text: str, state: str) -> str:
    """The shell's quoting after ``text``, starting in ``state``."""
    i = 0
    while i < len(text):
        c = text[i]
        if state == SINGLE:
            if c == "'":
                state = UNQUOTED
        elif c == "\\":
            i += 1  # the next character is taken literally
        elif state == DOUBLE:
            if c == '"':
                state = UNQUOTED
        elif c == "'":
            state = SINGLE
        elif c == '"':
            state = DOUBLE
        i += 1
    return state


def _unique(pairs):
    seen, out = set(), []
    for pair in pairs:
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


def advice(param: str, where: str) -> str:
    """The warning for ``param`` put into a shell command with quoting ``where``, saying what to write."""
    fix = f'write {{{{ {param} | shquote }}}} outside quotes, or "$APSIS_ARG_{param}"'
    if where == UNQUOTED:
        return (f"param {param!r} is put into the shell command unquoted, so an arg with $(...), "
                f"quotes or ; runs as shell: {fix}")
    if where == SINGLE:
        return (f"param {param!r} is inside '...' in the shell command, which an arg with ' "
                f"ends: {fix}")
    return (f"param {param!r} is inside \"...\" in the shell command, where $(...) and ` in an "
            f"arg still run: {fix}")

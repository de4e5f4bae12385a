"""The run filter language, compiled to a SQLite WHERE fragment.

A filter is whitespace-separated terms, all of which must match:

    WORD            job id contains WORD (ASCII case-insensitive)
    job:ID          job id is exactly ID
    state:S1,S2     state is one of S1, S2; each may be an unambiguous prefix
    host:NAME       the run was sent to remote host NAME (exactly)
    ARG=VAL         the run has arg ARG equal to VAL
    ARG=            the run has arg ARG, any value (ARG="" means equal to "")
    !TERM           negation of any of the above

Double quotes make text literal, spaces, ``=``, ``:`` and ``!`` included:
``"load prices"``, ``date="2026 11"``, ``"my arg"=x``, ``!"a b"``. Inside
quotes a backslash escapes ``"`` or ``\\``; elsewhere it is an ordinary
character. An unquoted ``NAME:`` other than ``job:``, ``state:`` or ``host:`` is an
error, so a mistyped field never silently matches nothing.

Column names are unqualified (``job_id``, ``args``, ``state``), so the
fragment works whatever the runs table is called in the enclosing query.
"""

import re
from dataclasses import dataclass

from apsis_lite.errors import BadRequest
from apsis_lite.model.runs import STATES

FIELDS = ("job", "state", "host")
# Bounds that keep a filter's SQL within SQLite's limits (a LIKE pattern of at most
# 50,000 bytes, an expression at most 1,000 deep) and its cost small.
MAX_LENGTH = 4096
MAX_TERMS = 64

# What may precede ``:`` to be read as a field name rather than job id text.
_FIELD_NAME = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class Term:
    """One parsed filter term.

    ``kind`` is "word" (``value`` is the text to find in job ids), "job"
    (``value`` is the exact job id), "host" (``value`` is the exact host), "state" (``value`` is the
    comma-separated state names as typed) or "arg" (``name`` = ``value``;
    ``value`` None for ``ARG=``, any value). ``negated`` for ``!TERM``.
    """

    raw: str
    kind: str
    value: str | None
    name: str = ""
    negated: bool = False


def parse_terms(text: str) -> list[Term]:
    """The terms of filter ``text``; raises BadRequest naming a malformed term.

    State names are not checked here (``compile_filter`` does, against the
    states it is given).
    """
    text = text or ""
    if len(text) > MAX_LENGTH:
        raise BadRequest(f"filter too long: {len(text)} characters (at most {MAX_LENGTH})")
    terms = [_parse_term(raw, segs) for raw, segs in _terms(text)]
    if len(terms) > MAX_TERMS:
        raise BadRequest(f"filter has too many terms: {len(terms)} (at most {MAX_TERMS})")
    return terms


def compile_filter(text: str, states=None, extra=()) -> tuple[str, list]:
    """SQL (with ``?`` placeholders) and params matching the runs ``text`` selects.

    ``extra`` are terms that must match as well (the API makes them from
    apsis-style query parameters). An empty filter gives ``("1", [])``.
    Raises BadRequest naming the offending term.
    """
    states = STATES if states is None else tuple(states)
    terms = parse_terms(text) + list(extra)
    if len(terms) > MAX_TERMS:
        raise BadRequest(f"filter has too many terms: {len(terms)} (at most {MAX_TERMS})")
    clauses, params = [], []
    for term in terms:
        sql, args = _compile_term(term, states)
        clauses.append(f"NOT ({sql})" if term.negated else sql)
        params.extend(args)
    return (" AND ".join(clauses) or "1"), params


def _terms(text):
    """Yield ``(raw, segments)`` per term; a segment is ``(text, quoted)``.

    Quoted segments are kept apart (even when empty) so the operators ``!``,
    ``=`` and ``:`` are recognised only in unquoted text.
    """
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start, segs = i, []
        while i < n and not text[i].isspace():
            if text[i] == '"':
                i += 1
                chars = []
                while True:
                    if i >= n:
                        raise _bad(text[start:], "unterminated quote")
                    c = text[i]
                    if c == '"':
                        i += 1
                        break
                    if c == "\\" and i + 1 < n and text[i + 1] in '"\\':
                        i += 1
                        c = text[i]
                    chars.append(c)
                    i += 1
                segs.append(("".join(chars), True))
            else:
                j = i
                while j < n and not text[j].isspace() and text[j] != '"':
                    j += 1
                segs.append((text[i:j], False))
                i = j
        yield text[start:i], segs


def _parse_term(raw, segs, negated=False):
    if segs and not segs[0][1] and segs[0][0].startswith("!"):
        rest = [(segs[0][0][1:], False)] + segs[1:]
        if not _join(rest) and not any(q for _, q in rest):
            raise _bad(raw, "nothing after '!'")
        return _parse_term(raw, rest, negated=not negated)

    left, op, right = _split_op(segs, "=:")
    if op == ":":
        name = _join(left)
        if not any(q for _, q in left) and _FIELD_NAME.fullmatch(name):
            field, value = name.lower(), _join(right)
            if field == "job":
                if not value:
                    raise _bad(raw, "empty job id")
                return Term(raw, "job", value, negated=negated)
            if field == "state":
                return Term(raw, "state", value, negated=negated)
            if field == "host":
                if not value:
                    raise _bad(raw, "empty host name")
                return Term(raw, "host", value, negated=negated)
            raise _bad(
                raw, f"unknown field {field!r} (fields: {', '.join(FIELDS)}); "
                "quote the term to search job ids for it"
            )
    # Not a field: a colon is ordinary text, in an arg name, value or word.
    left, op, right = _split_op(segs, "=")
    if op == "=":
        name = _join(left)
        if not name:
            raise _bad(raw, "missing arg name before '='")
        # ``ARG=`` with nothing at all after it (not even ""): the arg is present.
        return Term(raw, "arg", _join(right) if right else None, name=name, negated=negated)

    word = _join(segs)
    if not word:
        raise _bad(raw, "empty term")
    return Term(raw, "word", word, negated=negated)


def _compile_term(term, states):
    if term.kind == "job":
        return "job_id IS ?", [term.value]
    if term.kind == "host":
        # NULL for runs on this machine: IS keeps ``!host:X`` matching those too.
        return "host IS ?", [term.value]
    if term.kind == "state":
        names = [_match_state(term.raw, s, states) for s in term.value.split(",")]
        return f"state IN ({', '.join('?' * len(names))})", names
    if term.kind == "arg":
        # run_args holds every run's args by (name, value): an index lookup,
        # and the name is a plain parameter, never part of a JSON path.
        if term.value is None:
            # The arg is present. Most runs that match have it, so checking
            # each run's own args while paging newest first ends sooner than
            # collecting every run that has it from run_args.
            return "EXISTS (SELECT 1 FROM json_each(args) WHERE key = ?)", [term.name]
        return "run_id IN (SELECT run_id FROM run_args WHERE name = ? AND value = ?)", [term.name, term.value]
    # Matched against the distinct job ids (job_ids), not every run's.
    return ("job_id IN (SELECT job_id FROM job_ids WHERE job_id LIKE ? ESCAPE '\\')",
            [f"%{_like_escape(term.value)}%"])


def _split_op(segs, ops):
    """Split at the first unquoted char of ``ops``: ``(left, op, right)``."""
    for k, (s, quoted) in enumerate(segs):
        if quoted:
            continue
        m = re.search(f"[{ops}]", s)
        if m:
            left = segs[:k] + [(s[: m.start()], False)]
            right = [(s[m.end():], False)] if s[m.end():] else []
            return left, m.group(), right + segs[k + 1:]
    return segs, None, []


def _match_state(raw, name, states):
    """The state ``name`` names exactly or as an unambiguous prefix."""
    name = name.strip().lower()
    if not name:
        raise _bad(raw, "empty state name")
    if name in states:
        return name
    matches = [s for s in states if s.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise _bad(raw, f"ambiguous state {name!r} ({', '.join(sorted(matches))})")
    raise _bad(raw, f"unknown state {name!r} (states: {', '.join(states)})")


def _join(segs):
    return "".join(s for s, _ in segs)


def _like_escape(text):
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _bad(raw, why):
    return BadRequest(f"bad filter term {raw!r}: {why}")

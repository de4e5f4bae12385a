"""The run filter language, compiled to a SQLite WHERE fragment.

A filter is whitespace-separated terms, all of which must match:

    WORD            job id contains WORD (ASCII case-insensitive)
    job:ID          job id is exactly ID
    state:S1,S2     state is one of S1, S2; each may be an unambiguous prefix
    ARG=VAL         the run has arg ARG equal to VAL
    ARG=            the run has arg ARG, any value (ARG="" means equal to "")
    !TERM           negation of any of the above

Double quotes make text literal, spaces, ``=``, ``:`` and ``!`` included:
``"load prices"``, ``date="2026 11"``, ``"my arg"=x``, ``!"a b"``. Inside
quotes a backslash escapes ``"`` or ``\\``; elsewhere it is an ordinary
character. An unquoted ``NAME:`` other than ``job:`` or ``state:`` is an
error, so a mistyped field never silently matches nothing.

Column names are unqualified (``job_id``, ``args``, ``state``), so the
fragment works whatever the runs table is called in the enclosing query.
"""

import re

from .errors import BadRequest
from .runs import STATES

FIELDS = ("job", "state")

# What may precede ``:`` to be read as a field name rather than job id text.
_FIELD_NAME = re.compile(r"[A-Za-z_]\w*")


def compile_filter(text: str, states=None) -> tuple[str, list]:
    """SQL (with ``?`` placeholders) and params matching the runs ``text`` selects.

    An empty filter gives ``("1", [])``. Raises BadRequest naming the
    offending term.
    """
    states = STATES if states is None else tuple(states)
    clauses, params = [], []
    for raw, segs in _terms(text or ""):
        sql, args = _compile_term(raw, segs, states)
        clauses.append(sql)
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


def _compile_term(raw, segs, states):
    if segs and not segs[0][1] and segs[0][0].startswith("!"):
        rest = [(segs[0][0][1:], False)] + segs[1:]
        if not _join(rest) and not any(q for _, q in rest):
            raise _bad(raw, "nothing after '!'")
        sql, params = _compile_term(raw, rest, states)
        return f"NOT ({sql})", params

    left, op, right = _split_op(segs, "=:")
    if op == ":":
        name = _join(left)
        if not any(q for _, q in left) and _FIELD_NAME.fullmatch(name):
            return _compile_field(raw, name.lower(), _join(right), states)
    # Not a field: a colon is ordinary text, in an arg name, value or word.
    left, op, right = _split_op(segs, "=")
    if op == "=":
        name = _join(left)
        if not name:
            raise _bad(raw, "missing arg name before '='")
        # run_args holds every run's args by (name, value): an index lookup,
        # and the name is a plain parameter, never part of a JSON path.
        if not right:
            # ``ARG=`` with nothing at all after it: the arg is present. Most
            # runs that match have it, so checking each run's own args while
            # paging newest first ends sooner than collecting every run that
            # has it from run_args.
            return "EXISTS (SELECT 1 FROM json_each(args) WHERE key = ?)", [name]
        sql = "run_id IN (SELECT run_id FROM run_args WHERE name = ? AND value = ?)"
        return sql, [name, _join(right)]

    word = _join(segs)
    if not word:
        raise _bad(raw, "empty term")
    # Matched against the distinct job ids (job_ids), not every run's.
    return ("job_id IN (SELECT job_id FROM job_ids WHERE job_id LIKE ? ESCAPE '\\')",
            [f"%{_like_escape(word)}%"])


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


def _compile_field(raw, field, value, states):
    if field == "job":
        if not value:
            raise _bad(raw, "empty job id")
        return "job_id IS ?", [value]
    if field == "state":
        names = [_match_state(raw, s, states) for s in value.split(",")]
        return f"state IN ({', '.join('?' * len(names))})", names
    raise _bad(
        raw, f"unknown field {field!r} (fields: {', '.join(FIELDS)}); "
        "quote the term to search job ids for it"
    )


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

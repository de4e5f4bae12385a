"""Reading what a request sends: query args, form fields and JSON bodies, each checked once.

The API and the pages take their input through these helpers, so that a
malformed request is a 400 naming the field at fault, never a 500: numbers
are whole (or finite) and within range, times exist, a JSON body is an
object nested at most MAX_DEPTH deep, and every text in it can be stored
(a lone surrogate such as ``"\\ud800"`` is valid JSON but not Unicode text).
Messages quote at most SHOWN characters of what was sent.
"""

import json
import math

from apsis_lite.errors import BadRequest
from apsis_lite.timeutil import UTC, get_tz, parse_time

#: Deepest nesting of arrays and objects a JSON body may have.
MAX_DEPTH = 32
#: Largest whole number a query arg may be (SQLite integers are 64-bit).
MAX_INT = 2 ** 62
SHOWN = 60


def shown(value) -> str:
    """``repr(value)``, cut to SHOWN characters for an error message."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN - 5] + "...'"


def kind(value) -> str:
    """What a JSON value is, in words: ``a number``, ``a list``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# -- query args and form fields ------------------------------------------------


def int_arg(args, name, default, lo=0, hi=MAX_INT):
    """The whole number ``args[name]`` in [lo, hi], or ``default`` when absent or empty
    (only blanks is neither: an error, as any other text that is no number)."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()):
        raise BadRequest(f"{name}: not a whole number: {shown(raw)}")
    if len(digits) > 19 or not lo <= (value := int(text)) <= hi:
        raise BadRequest(f"{name}: must be between {lo} and {hi}, not {shown(raw)}")
    return value


def float_arg(args, name, default, lo, hi):
    """The number ``args[name]`` in [lo, hi], or ``default`` when absent or empty."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw) if len(raw) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadRequest(f"{name}: not a number: {shown(raw)}")
    if value < lo or value > hi:
        raise BadRequest(f"{name}: must be between {lo:g} and {hi:g}, not {value:g}")
    return value


def time_arg(args, name, tz=UTC):
    """The epoch of the time ``args[name]`` (ISO 8601, ``now``, ...; local times in ``tz``), or None
    when absent or empty."""
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    return time_value(raw, name, tz)


def time_value(value, name, tz=UTC):
    """The epoch of ``value``, a time text or epoch seconds; BadRequest naming ``name`` if it is none."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRequest(f"{name}: expected a time (ISO 8601 text or epoch seconds), got {kind(value)}")
    if isinstance(value, str) and len(value) > 100:
        raise BadRequest(f"{name}: not a time: {shown(value)}")
    try:
        return parse_time(value, tz=tz).timestamp()
    except ValueError as exc:
        message = str(exc) if len(str(exc)) <= 200 else f"not a time or out of range: {shown(value)}"
        raise BadRequest(f"{name}: {message}") from None


def zone_value(value, name="tz"):
    """The zone named ``value`` (None or "" mean UTC); BadRequest naming ``name`` otherwise."""
    if value is None or value == "":
        return UTC
    if not isinstance(value, str):
        raise BadRequest(f"{name}: expected a time zone name such as Europe/London, got {kind(value)}")
    try:
        return get_tz(value)
    except ValueError:
        raise BadRequest(f"{name}: unknown time zone {shown(value)}") from None


# -- JSON bodies ---------------------------------------------------------------


def _finite(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:SHOWN]}")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON value")


def json_body(raw: bytes) -> dict:
    """The JSON object a request body holds (``{}`` for an empty body), checked by ``check_jso``."""
    if not raw:
        return {}
    try:
        jso = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest(f"request body: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(jso, dict):
        raise BadRequest(f"request body must be a JSON object, not {kind(jso)}")
    check_jso(jso)
    return jso


def check_jso(jso, where="") -> None:
    """BadRequest naming the place if ``jso`` nests deeper than MAX_DEPTH or holds text
    that is not valid Unicode (keys too). Iterative: depth costs no stack."""
    stack = [(jso, where, 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            check_text(value, path or "request body")
        elif isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise BadRequest(f"{path or 'request body'}: nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    check_text(key, f"{path}: a key" if path else "a key")
                    stack.append((item, f"{path}.{key}" if path else key, depth + 1))
            else:
                stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def check_text(text: str, name: str) -> str:
    """``text`` if it can be encoded as UTF-8; else BadRequest naming ``name``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"{name}: not valid Unicode text: it holds {shown(exc.object[exc.start:exc.end])} "
                         f"at position {exc.start} (a lone surrogate)") from None
    return text


def text_field(jso, name, required=False):
    """The text ``jso[name]`` (None when absent and not ``required``)."""
    value = jso.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name}: required")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name}: expected text, got {kind(value)}")
    return value

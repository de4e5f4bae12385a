"""Hypothesis strategies for malformed (and some well-formed) requests: JSON bodies,
query strings, form fields and path segments, heavy on the values that broke
the server before (lone surrogates, numbers out of range, deep nesting, text
where a number or a zone belongs, and the reverse)."""

import json
import urllib.parse

from hypothesis import strategies as st

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)

# Text a field might get: valid values, near misses and hostile ones.
AWKWARD_TEXT = [
    "", " ", "now", "NOW", "true", "0", "-1", "1e309", "-1e309", "nan", "NaN", "inf", "Infinity", "1e20",
    "99999999999999999999999", "r1", "r²", "١٢", "r-1", "0x10", "1_000", " 5 ",
    "2026-11-25", "2026-11-25T12:00:00Z", "0001-01-01", "9999-12-31", "9999-12-31T23:59:59",
    "10000-01-01", "0001-01-01T00:00:00", "12:00", "Europe/London", "UTC", "Z", "Mars/Olympus",
    "../../../etc/passwd", "/etc/passwd", "a\x00b", "\ud800", "a\udfffb", "%", "%ZZ", "%ff",
    "greet", "job:greet", "state:run,fail", '"unclosed', "!", "date=", "=x", "\\", "<script>", "SIGTERM",
    "SIGNOPE", "success", "month", "week", "US-holidays", "http://[", "//evil.example/",
]

# Valid JSON, but not Unicode text: a lone surrogate among other characters.
surrogate_text = st.builds(lambda a, s, b: a + s + b, st.text(max_size=3), SURROGATES, st.text(max_size=3))

# Long texts, made when drawn (their repr would fill Hypothesis's reports).
long_text = st.sampled_from([("9", 5000), ("x", 10_000), ("a", 9000)]).map(lambda cn: cn[0] * cn[1])

text_values = st.one_of(
    st.sampled_from(AWKWARD_TEXT),
    long_text,
    st.text(max_size=40),
    st.text(st.one_of(st.characters(), SURROGATES), max_size=10),
)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
    st.floats(), st.sampled_from([1e20, -1e300, 1e308, 2 ** 63, -(2 ** 63), 253402300800, -62135596801]),
    text_values,
)

json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text_values, children, max_size=4),
    max_leaves=12,
)


def deep(depth, opener="[", closer="]"):
    return opener * depth + closer * depth


# -- JSON bodies ----------------------------------------------------------------------

times = st.one_of(json_values, st.sampled_from([
    "2999-01-01T00:00:00Z", "now", "12:00", "2026-11-25 12:00", "9999-12-31T23:00:00", "0001-01-01T00:00:00",
    1e20, -1e300, 99999999999999, 1_790_000_000, 1_790_000_000.5, -62135596800]))
zones = st.one_of(json_values, st.sampled_from([
    "UTC", "Europe/London", "America/New_York", "Etc/GMT+12", "Etc/GMT-14", "Pacific/Kiritimati", ""]))
programs = st.one_of(json_values, st.sampled_from(
    ["true", "echo {{ name }}", ["true"], [""], {"type": "no-op"}, {"type": "shell", "command": ""},
     {"type": "program", "argv": []}, {"command": "true", "timeout": {"duration": "1e999 s"}}]))
job_definitions = st.one_of(json_values, st.fixed_dictionaries({"program": programs}, optional={
    "params": st.one_of(json_values, st.just(["name"])), "schedule": json_values, "condition": json_values,
    "action": json_values, "metadata": json_values, "deadline": json_values, "max_duration": json_values}))
args = st.one_of(json_values, st.fixed_dictionaries({"name": json_values}))
when = {"time": times, "tz": zones}

VALID_RUNS = [
    {"program": "true"},
    {"program": ["echo", "x"], "time": "2999-01-01T00:00:00Z"},
    {"job_id": "greet", "args": {"name": "x"}},
    {"job_id": "greet", "args": {"name": "x"}, "time": "2999-01-01 09:00", "tz": "Europe/London"},
    {"job": {"params": ["name"], "program": "echo {{ name }}"}, "args": {"name": "x"}},
]
REPLACEMENTS = {"program": programs, "args": args, "time": times, "tz": zones, "job": job_definitions,
                "job_id": st.one_of(st.sampled_from(["greet", "tick"]), surrogate_text, text_values, json_values)}


@st.composite
def _near_valid_run(draw):
    """A valid run submission with one or two fields (or the name inside args) replaced."""
    body = json.loads(json.dumps(draw(st.sampled_from(VALID_RUNS))))
    for _ in range(draw(st.sampled_from([1, 1, 2]))):
        field = draw(st.sampled_from(sorted(REPLACEMENTS) + ["args.name", "job.program", "job.params"]))
        if field == "args.name":
            body.setdefault("args", {})
            if isinstance(body["args"], dict):
                body["args"]["name"] = draw(st.one_of(surrogate_text, json_values))
        elif field.startswith("job."):
            if isinstance(body.get("job"), dict):
                body["job"][field[4:]] = draw(json_values)
        else:
            body[field] = draw(REPLACEMENTS[field])
    return body


run_fields = st.one_of(
    _near_valid_run(), _near_valid_run(), _near_valid_run(),
    st.fixed_dictionaries({"program": programs}, optional=when),
    st.fixed_dictionaries({"job_id": st.one_of(st.sampled_from(["greet", "tick"]), json_values)},
                          optional={"args": args, **when}),
    st.fixed_dictionaries({"job": job_definitions}, optional={"args": args, **when}),
    st.dictionaries(st.one_of(st.sampled_from(["job_id", "job", "program", "args", "time", "tz"]), text_values),
                    json_values, max_size=4),
)


def encode_json(value) -> bytes:
    """JSON text for ``value``: NaN and Infinity as Python writes them, lone surrogates as ``\\udXXX`` escapes."""
    return json.dumps(value).encode()


raw_bodies = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"{", b"[]", b"null", b'"text"', b"1", b"{\"a\": NaN}", b"{\"a\": -Infinity}",
                     b"{\"a\": 1e999}", b"\xff\xfe{", b"{\"a\": \"\\ud800\"}", b"{\"\\udc00\": 1}"]),
    st.just(5000).map(lambda n: ("{\"a\": " + "9" * n + "}").encode()),
    st.integers(min_value=20, max_value=50_000).map(lambda n: deep(n).encode()),
    st.integers(min_value=20, max_value=50_000).map(lambda n: ('{"a":' * n + "1" + "}" * n).encode()),
)

run_bodies = st.one_of(run_fields.map(encode_json), json_values.map(encode_json), raw_bodies)

pause_bodies = st.one_of(
    st.fixed_dictionaries({}, optional={"reason": json_values, "mode": json_values, "other": json_values})
    .map(encode_json),
    raw_bodies,
)


def far_future(body: bytes) -> bytes:
    """``body`` with its ``time`` set far ahead when it is a JSON object: against a real
    server nothing it submits may run (a random program is a random shell command)."""
    try:
        jso = json.loads(body)
    except (ValueError, RecursionError):
        return body
    if isinstance(jso, dict):
        jso["time"] = "2999-01-01T00:00:00Z"
        jso.pop("tz", None)
        return encode_json(jso)
    return body


# -- query strings, forms, paths --------------------------------------------------------

# ``wait`` is how long an output request may wait for output (up to 30 s):
# awkward values, but none that asks for a long wait.
wait_values = st.one_of(st.sampled_from(["abc", "nan", "inf", "-inf", "-1", "31", "1e309", "0", "0.01",
                                         "", " ", "1e-300", "0x10", "\ud800", "1" * 50]),
                        st.floats(max_value=0.05).map(str))


def quote(text: str) -> str:
    """Percent-encoding of ``text`` as UTF-8, lone surrogates as their (invalid) UTF-8 bytes."""
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")


# The query args each route reads; others get a few at random.
ROUTE_ARGS = {
    "/api/v1/runs": ["q", "limit", "cursor", "since", "until"],
    "/api/v1/jobs": ["q", "limit", "cursor"],
    "/api/v1/jobs/{job}": ["next"],
    "/api/v1/runs/{run}/output": ["offset", "limit", "wait"],
    "/": ["q", "state", "since", "until", "cursor", "limit"],
    "/jobs": ["q", "cursor"],
    "/runs/{run}/tail": ["offset"],
    "/calendar": ["q", "view", "date", "holidays"],
    "/calendar/day": ["q", "date", "holidays"],
    "/login": ["once", "next"],
    "/adhoc": ["kind", "command", "job_id"],
    "/runs/{run}/op/{op}": ["view"], "/runs/{run}/signal/{signal}": ["view"], "/runs/{run}/mark/{state}": ["view"],
}


@st.composite
def query_strings(draw, template):
    names = ROUTE_ARGS.get(template, [])
    # Without an offset, an output request ignores the rest of its args.
    required = ({"offset": st.sampled_from(["0", "0", "2", "-1", "x"]), "wait": wait_values}
                if template.endswith("/output") else {})
    args = draw(st.fixed_dictionaries(required, optional={
        name: wait_values if name == "wait" else text_values for name in names if name not in required}))
    pairs = list(args.items()) + draw(st.lists(st.tuples(text_values, text_values), max_size=2))
    text = "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
    if draw(st.sampled_from([True] * 5 + [False])):
        return text
    return draw(st.sampled_from(["%", "a=%", "=&=&", "a=%ZZ", "&&&", "a=1&a=2"]))


form_fields = st.dictionaries(
    st.sampled_from(["command", "kind", "when", "at", "tz", "job_id", "args", "reason", "mode", "next",
                     "name", "password", "arg:name", "csrf_token"]),
    text_values, max_size=6)

@st.composite
def _segment(draw, known):
    """A path segment: mostly one of ``known``, otherwise anything (percent-encoded)."""
    if draw(st.sampled_from([True] * 3 + [False])):
        return quote(draw(st.sampled_from(known)))
    return quote(draw(text_values)) or "x"


# What goes in each kind of path parameter.
SEGMENTS = {
    "run": _segment(["r1", "1", "r2", "3", "r99"]),
    "job": _segment(["greet", "tick", "adhoc/x", "examples/report", "examples/schedules/dst choices"]),
    "op": _segment(["start", "skip", "stop", "rerun", "nope"]),
    "signal": _segment(["SIGTERM", "USR1", "9", "SIGNOPE"]),
    "state": _segment(["success", "failure", "running", "nope"]),
}

# (method, path template, body: None, "form", "run" or "json"). ``{kind}`` in a
# path is filled from SEGMENTS; a query string follows.
ROUTES = [("GET", t, None) for t in [
    "/api/v1/runs", "/api/v1/jobs", "/api/v1/stats", "/api/v1/pauses", "/api/v1/jobs/{job}", "/api/v1/runs/{run}",
    "/api/v1/runs/{run}/log", "/api/v1/runs/{run}/output", "/api/v1/runs/{run}/explain",
    "/api/v1/runs/{run}/group", "/", "/jobs", "/jobs/{job}", "/runs/{run}", "/runs/{run}/summary",
    "/runs/{run}/tail", "/calendar", "/calendar/day", "/adhoc", "/ui/zones", "/login"]] + [
    ("POST", t, "form") for t in [
        "/adhoc", "/ui/zone", "/pause", "/resume", "/jobs/{job}/pause", "/jobs/{job}/resume", "/jobs/{job}/run",
        "/runs/{run}/op/{op}", "/runs/{run}/signal/{signal}", "/runs/{run}/mark/{state}", "/login"]] + [
    ("POST", "/api/v1/runs", "run")] * 4 + [
    ("POST", t, "json") for t in [
        "/api/v1/pause", "/api/v1/jobs/{job}/pause", "/api/v1/runs/{run}/signal/{signal}",
        "/api/v1/runs/{run}/mark/{state}", "/api/v1/runs/{run}/stop", "/api/v1/runs/{run}/skip"]] + [
    ("DELETE", "/api/v1/pause", None), ("DELETE", "/api/v1/jobs/{job}/pause", None)]

# Starting or rerunning a run would run whatever program it has.
RUNS_SOMETHING = {"/runs/{run}/op/{op}", "/api/v1/runs/{run}/rerun", "/api/v1/runs/{run}/start"}


@st.composite
def requests(draw, run_anything=True):
    """``(method, path with query, body bytes or None, content type or None)``.

    Without ``run_anything``, nothing it does starts a program: a run submitted
    is due far in the future, and no run is started or rerun.
    """
    routes = ROUTES if run_anything else [r for r in ROUTES if r[1] not in RUNS_SOMETHING]
    method, template, body_kind = draw(st.sampled_from(routes))
    path = template
    for kind, segment in SEGMENTS.items():
        while "{" + kind + "}" in path:
            path = path.replace("{" + kind + "}", draw(segment), 1)
    query = draw(query_strings(template))
    if query:
        path += "?" + query
    if body_kind is None:
        return method, path, None, None
    if body_kind == "form":
        fields = draw(form_fields)
        if not run_anything:
            fields = {**fields, "when": "later", "at": "2999-01-01 00:00", "tz": "UTC"}
        body = "&".join(f"{quote(k)}={quote(v)}" for k, v in fields.items()).encode()
        return method, path, body, "application/x-www-form-urlencoded"
    body = draw(run_bodies if body_kind == "run" else pause_bodies)
    if not run_anything:
        body = far_future(body)
    return method, path, body, "application/json"


@st.composite
def queries(draw):
    """A GET of a route that reads query args, with some: ``(method, path with query, None, None)``."""
    template = draw(st.sampled_from([t for m, t, _ in ROUTES if m == "GET" and t in ROUTE_ARGS]))
    path = template
    for kind, segment in SEGMENTS.items():
        path = path.replace("{" + kind + "}", draw(segment))
    query = draw(query_strings(template))
    return "GET", path + ("?" + query if query else ""), None, None


@st.composite
def bodies(draw):
    """A POST of a JSON body to a route that reads one: ``(method, path, body, content type)``."""
    method, template, kind = draw(st.sampled_from([r for r in ROUTES if r[2] in ("run", "json")]))
    path = template
    for name, segment in SEGMENTS.items():
        path = path.replace("{" + name + "}", draw(segment))
    return method, path, draw(run_bodies if kind == "run" else pause_bodies), "application/json"


# Text a run arg could hold, as a shell would mangle it: quotes, expansions,
# separators, newlines, non-ASCII. No NUL (no argv can hold one) and no lone
# surrogates (not text a program can be given).
_SHELL_PIECES = ["'", '"', "`", "$", "$(", ")", "${", "}", "\\", ";", "&", "|", "\n", "\r", "\t", " ",
                 "*", "?", "[", "]", "~", "#", "!", "<", ">", "{a,b}", "'\"'\"'", "$'\\x41'", "-n", "%s",
                 "\x1b[31m", "é", "\u2028", "😀"]
shell_text = st.lists(
    st.one_of(st.sampled_from(_SHELL_PIECES),
              st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8)),
    max_size=12).map("".join)

"""Hypothesis strategies for job files: documents near the format, YAML texts and their mutations.

``job_documents()`` are mappings with the job keys, holding values that are
mostly plausible (schedules, programs, templates) and sometimes extreme
(huge numbers, impossible dates, deep calendars). ``job_texts()`` are YAML
texts: dumps of such documents, then cut, spliced and sprinkled with YAML
syntax (anchors, aliases, tags, brackets), plus alias bombs and deep nests.
"""

from datetime import date, datetime, timezone

import yaml
from hypothesis import strategies as st

# Values that have broken, or could break, some part of loading or planning.
TRICKY_TEXT = [
    "", " ", "0", "-1", "1e30", "1.0e+308", "-9223372036854775808", "9223372036854775808",
    "2026-13-01", "2026-02-30", "0000-01-01", "9999-12-31T23:59:59Z", "10000-01-01",
    "0.000001s", "1e308s", "10 min", "1.5h", "inf", "nan", ".inf", "now", "100000 days",
    "Mon-Fri", "(Mon-Fri", "Mon-Fri)", "Mon-Fri - US-holidays", "all", "Mon - Mon",
    "US-holidays & UK-holidays", "no-such-calendar", "((((((((((((Mon))))))))))))",
    " + ".join(["Mon-Fri"] * 60),
    "{{ x }}", "{{ time }}", "{{ date }}", "{% for %}", "{#", "{{", "}}", "{{ 'x' * 10**9 }}",
    "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
    "{{ 10 ** 10 ** 8 }}", "{{ 'x' | center(10**9) }}", "{{ '%1000000000d' % 1 }}",
    "{{ date | cal_shift('Mon-Fri', 1000000000) }}", "{{ date | add_days(10**12) }}",
    "{{ calendar('all').dates('0001-01-01', '9999-12-31') | list }}",
    "* * * * *", "* * * * * *", "0 0 30 2 *", "@daily", "@reboot", "61 * * * *",
    "17:00", "25:00", "9:30:15", "America/New_York", "Nowhere/Zone", "UTC",
    "SIGTERM", "SIGNOPE", "echo hi", "/bin/true", "a" * 300,
]

KEYS = [
    # job
    "params", "program", "schedule", "condition", "action", "successors", "metadata",
    "resources", "reruns", "waiting", "catch_up", "deadline", "max_duration",
    # programs, schedules, conditions, actions and the rest
    "type", "command", "argv", "env", "cwd", "host", "user", "timeout", "stop", "signal",
    "grace_period", "duration", "success", "interval", "phase", "daytime", "tz", "calendar",
    "date_shift", "cal_shift", "dst", "gap", "repeat", "start", "expr", "times", "args",
    "enabled", "jitter", "job_id", "states", "count", "delay", "max_time", "missed", "max",
    "url", "to", "name", "labels", "description", "if", "backoff",
]
TYPES = ["shell", "program", "no-op", "interval", "daily", "daily-interval", "cron", "explicit",
         "dependency", "max_running", "skip_duplicate", "schedule", "command", "webhook",
         "email", "duration", "daytime", "nonesuch"]

small_ints = st.integers(-3, 3)
big_ints = st.sampled_from([2**31, 2**63, -(2**63), 10**12, 10**30, 99999999999, 1000000000, 10**400])
numbers = st.one_of(
    small_ints, st.integers(-10**6, 10**6), big_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.000001, 1e-9, 0.5, 1.0, 60.0, 1e30, 1e308, -1.0]),
)
scalars = st.one_of(
    st.none(), st.booleans(), numbers, st.sampled_from(TRICKY_TEXT), st.text(max_size=12),
    st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)),
    st.datetimes(timezones=st.just(timezone.utc)),
)


def values(max_leaves=12):
    """Anything YAML can hold, small, with job-file words as keys."""
    keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6), small_ints)
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(keys, inner, max_size=4)),
        max_leaves=max_leaves)


durations = st.one_of(numbers, st.sampled_from(["1s", "10 min", "0.000001s", "1e308s", "2h 5m",
                                               "nan", "1 fortnight", "100 years", "36600 days"]))
shifts = st.one_of(small_ints, st.integers(-4000, 4000), big_ints)
calendars = st.one_of(
    st.sampled_from(["Mon-Fri", "all", "Mon-Fri - US-holidays", "Sat,Sun", "US-holidays",
                     "Mon - Mon", "Fri-Mon & (Mon-Fri - UK-holidays)", "NYSE-holidays"]),
    st.lists(st.sampled_from(["Mon-Fri", "Sat", "US-holidays", "all"]), min_size=1, max_size=8)
    .flatmap(lambda terms: st.lists(st.sampled_from([" + ", " - ", " & "]),
                                    min_size=len(terms) - 1, max_size=len(terms) - 1)
             .map(lambda ops: "".join(t + o for t, o in zip(terms, ops + [""])))),
    st.integers(1, 30).map(lambda n: "(" * n + "Mon-Fri" + ")" * n),
    st.sampled_from(TRICKY_TEXT),
)
zones = st.sampled_from(["UTC", "America/New_York", "Europe/London", "Asia/Kolkata",
                         "Pacific/Chatham", "Australia/Lord_Howe", "Nowhere/Zone"])
daytimes = st.one_of(st.sampled_from(["00:00", "02:30", "09:30:15", "23:59:59.999999", "24:00",
                                      "17:00"]), scalars)


def _maybe(d):
    """The mapping with some of its keys left out."""
    return st.sets(st.sampled_from(sorted(d))).map(lambda keep: {k: d[k] for k in keep})


def schedules():
    """Schedule mappings of every type, mostly well formed, values from plausible to absurd."""
    window_end = st.one_of(daytimes, st.fixed_dictionaries(
        {"daytime": daytimes}, optional={"date_shift": shifts, "cal_shift": shifts}))
    common = {"tz": zones, "calendar": calendars, "date_shift": shifts, "cal_shift": shifts,
              "dst": st.fixed_dictionaries({}, optional={"gap": st.sampled_from(["shift", "skip", "x"]),
                                                         "repeat": st.sampled_from(["first", "both"])}),
              "jitter": durations, "enabled": st.booleans(), "args": values(4)}
    explicit_times = st.lists(st.one_of(
        st.datetimes(timezones=st.just(timezone.utc)), numbers,
        st.sampled_from(["2026-11-25T10:00:00Z", "2026-11-25 10:00", "9999-12-31T23:59:59Z"])),
        max_size=4)
    by_type = {
        "interval": {"interval": durations, "phase": durations},
        "daily": {"daytime": st.one_of(daytimes, st.lists(daytimes, max_size=3)), **common},
        "daily-interval": {"start": window_end, "stop": window_end, "interval": durations, **common},
        "cron": {"expr": st.sampled_from(["0 16 * * Mon-Fri", "*/15 * * * *", "* * * * * *",
                                          "30 2 * * *", "0 0 29 2 *", "@hourly", "0 0 30 2 *",
                                          "bad"]),
                 "tz": zones},
        "explicit": {"times": explicit_times, "tz": zones},
    }

    def one(type_name):
        fields = by_type[type_name]
        required = {k: fields[k] for k in fields if k in ("interval", "daytime", "expr", "times",
                                                           "start", "stop")}
        optional = {k: v for k, v in fields.items() if k not in required}
        return st.fixed_dictionaries({"type": st.just(type_name), **required}, optional=optional)

    plain = st.sampled_from(sorted(by_type)).flatmap(one)
    stop = st.fixed_dictionaries({"type": st.sampled_from(["duration", "daytime"])},
                                 optional={"duration": durations, "daytime": daytimes, "tz": zones})
    return st.one_of(plain, st.fixed_dictionaries({"start": plain, "stop": stop}))


templates = st.one_of(
    st.sampled_from(["echo {{ time }}", "echo {{ date }}", "{{ job_id }}", "{{ nope }}",
                     "echo {{ date | as_date | add_days(1) }}", "{% if date %}x{% endif %}",
                     "{{ today() }}", "{{ range(10) | join(',') }}", "{{ 'a' ~ date }}"]),
    st.lists(st.sampled_from(["{{ ", " }}", "{% ", " %}", "for x in range(99999)", "endfor",
                              "'x' * 99999", "date", "time", "|", "center(", "10**9", ")",
                              "~", "namespace(a=1)", "set", "macro", "endmacro", "{#", "#}",
                              "echo ", "x"]),
             max_size=12).map("".join),
    st.sampled_from(TRICKY_TEXT),
)


def programs():
    process = {"env": values(4), "cwd": scalars, "timeout": st.one_of(durations, values(4)),
               "stop": values(4), "host": scalars, "user": scalars}
    return st.one_of(
        templates, st.lists(st.one_of(templates, scalars), max_size=4),
        st.fixed_dictionaries({"type": st.just("shell"), "command": templates}, optional=process),
        st.fixed_dictionaries({"type": st.just("program"), "argv": st.lists(templates, max_size=3)},
                              optional=process),
        st.fixed_dictionaries({"type": st.just("no-op")},
                              optional={"duration": durations, "success": scalars}),
        values(6))


def job_documents():
    """A job file's contents: the job keys with plausible or absurd values."""
    params = st.one_of(st.just(["time"]), st.just(["date"]), st.just([]),
                       st.lists(st.sampled_from(["date", "time", "x", "", 3]), max_size=3))
    return st.fixed_dictionaries({"program": programs()}, optional={
        "params": params,
        "schedule": st.one_of(schedules(), st.lists(schedules(), max_size=3), values(4)),
        "condition": values(6),
        "action": values(6),
        "successors": values(4),
        "metadata": values(8),
        "resources": values(4),
        "reruns": values(4),
        "waiting": st.one_of(values(3), st.fixed_dictionaries({"max_time": durations})),
        "catch_up": values(3),
        "deadline": values(3),
        "max_duration": st.one_of(durations, values(3)),
        "nonesuch": scalars,
    })


def _dump(doc):
    return yaml.safe_dump(doc, default_flow_style=None, sort_keys=False, allow_unicode=True)


SYNTAX = ["&a ", "*a", "&b ", "*b", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "\t", "!!binary ",
          "!!set ", "!!timestamp ", "!!int ", "!!python/object:os.system ", "? ", "'", '"',
          "<<: *a\n", "%YAML 1.1\n", "---\n", "...\n", "#", "|\n  ", ">-\n  ", "\\", "\x00",
          "\ufeff", "2026-13-01", "1e400", "9" * 5000]


@st.composite
def mutated(draw, text):
    """``text`` with a few cuts and insertions of YAML syntax or of another part of itself."""
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "splice"]))
        if action == "insert":
            text = text[:pos] + draw(st.sampled_from(SYNTAX)) + text[pos:]
        elif action == "delete":
            end = draw(st.integers(pos, min(len(text), pos + 20)))
            text = text[:pos] + text[end:]
        else:
            a = draw(st.integers(0, len(text)))
            b = draw(st.integers(a, min(len(text), a + 40)))
            text = text[:pos] + text[a:b] + text[pos:]
    return text


def alias_bombs():
    """Documents whose aliases expand to huge (or infinite) trees, or that nest deeply."""
    def laughs(depth, width):
        lines = ["program: echo hi", "metadata:", "  l0: &l0 [lol]"]
        for i in range(1, depth + 1):
            lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
        return "\n".join(lines) + "\n"
    return st.one_of(
        st.builds(laughs, st.integers(1, 12), st.integers(2, 12)),
        st.integers(1, 2000).map(lambda n: "program: echo hi\nmetadata: " + "[" * n + "]" * n + "\n"),
        st.sampled_from(["program: &a [echo, *a]\n", "metadata: &m {x: *m}\nprogram: echo\n",
                         "program: &p {type: shell, command: echo, env: *p}\n",
                         "a: &a [*a]\n"]),
    )


def job_texts():
    """YAML texts of job files: dumps, mutations of dumps, alias bombs, noise."""
    dumps = job_documents().map(_dump)
    return st.one_of(dumps, dumps.flatmap(mutated), alias_bombs(),
                     st.text(max_size=200), st.sampled_from(TRICKY_TEXT))


def start_times():
    """Starts for ``times()``: ordinary days, daylight-saving days, and the ends of the range."""
    return st.one_of(
        st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31, 23, 59),
                     timezones=st.just(timezone.utc)),
        st.sampled_from([datetime(2026, 3, 8, 6, 59, tzinfo=timezone.utc),
                         datetime(2026, 11, 1, 5, 30, tzinfo=timezone.utc),
                         datetime(9999, 12, 30, tzinfo=timezone.utc),
                         datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
                         datetime(1970, 1, 1, tzinfo=timezone.utc)]))


# Pieces of Jinja that multiply work or memory, put together at random.
_EXPRS = ["x", "'ab'", "1000", "10**5", "(x * 1000)", "range(1000)", "range(99999)",
          "[x, x, x]", "{'k': x}", "ns.v", "(x ~ x)", "'%s%s' % (x, x)", "'{:>999}'.format(x)",
          "x | center(5000)", "x | replace('', x)", "range(500) | join(x)", "2 ** 200",
          "calendar('Mon-Fri').dates('2000-01-01', '2100-01-01') | list | length",
          "m(x)", "x | indent(99)", "(range(300) | list) * 300"]
_OPS = [" * ", " + ", " ~ ", " ** ", " % "]


@st.composite
def greedy_templates(draw):
    """Templates made of loops, macros, namespaces and multiplying expressions."""
    def expr(depth=0):
        e = draw(st.sampled_from(_EXPRS))
        if depth < 2 and draw(st.booleans()):
            e = f"({e}{draw(st.sampled_from(_OPS))}{expr(depth + 1)})"
        return e

    def body(depth=0):
        parts = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["out", "loop", "set", "block"] if depth < 3 else ["out", "set"]))
            if kind == "out":
                parts.append("{{ " + expr() + " }}")
            elif kind == "set":
                parts.append("{% set ns.v = " + expr() + " %}")
            elif kind == "loop":
                parts.append("{% for i in " + draw(st.sampled_from(["range(1000)", "range(99999)", "[1, 2]",
                                                                    "x"])) + " %}" + body(depth + 1)
                             + "{% endfor %}")
            else:
                parts.append("{% set b %}" + body(depth + 1) + "{% endset %}{{ b }}")
        return "".join(parts)

    macro = "{% macro m(s) %}{{ s }}{{ s }}{% if s | length < 10**6 %}{{ m(s ~ s) }}{% endif %}{% endmacro %}"
    return macro + "{% set ns = namespace(v=x) %}" + body()


# apsis's template names (ora's): dates well inside the range, day counts that stay there,
# and zones with and without daylight saving.
ora_dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31))
ora_day_counts = st.integers(min_value=-20_000, max_value=20_000)
ora_zones = st.sampled_from(["UTC", "America/New_York", "Europe/London", "Asia/Tokyo", "Australia/Sydney"])

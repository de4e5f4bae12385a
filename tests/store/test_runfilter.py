"""The filter language, checked by running the compiled SQL on a real SQLite table."""


import pytest

from apsis_lite.errors import BadRequest
from apsis_lite.store.database import Store
from apsis_lite.store.runfilter import STATES, compile_filter

ROWS = [
    (1, "etl/load prices", {"date": "2026-11-25"}, "success"),
    (2, "etl/load prices", {"date": "2026-11-26"}, "failure"),
    (3, "etl/Load_Volumes", {"date": "2026-11-25", "region": "eu"}, "running"),
    (4, "reports/daily", {}, "scheduled"),
    (5, "reports/100%", {"my arg": "a b", 'q"uote': "x"}, "skipped"),
    (6, "ops/a:b", {"date": "2026 11", "empty": ""}, "error"),
    (7, "adhoc/20261126-x", {}, "waiting"),
    (8, "etl\\raw", {"back\\slash": "1"}, "stopping"),
]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """The real schema, filled through the store (which keeps the filter's index tables)."""
    store = Store(tmp_path_factory.mktemp("filter") / "f.db")
    for run_id, job_id, args, state in ROWS:
        assert store.insert_run(job_id, args, state, 0.0, 0.0).run_id == run_id
    return store.conn


def match(db, text):
    sql, params = compile_filter(text)
    rows = db.execute(f"SELECT run_id FROM runs WHERE {sql} ORDER BY run_id", params)
    return [r[0] for r in rows]


ALL = [r[0] for r in ROWS]


@pytest.mark.parametrize("text, expected", [
    ("", ALL),
    ("   ", ALL),
    # words: substring of the job id, ASCII case-insensitive, AND-ed
    ("etl", [1, 2, 3, 8]),
    ("LOAD", [1, 2, 3]),
    ("etl load", [1, 2, 3]),
    ("load prices", [1, 2]),
    ('"load prices"', [1, 2]),
    ('"load  prices"', []),
    ("nothing-like-this", []),
    # LIKE wildcards and the escape character are literal
    ("%", [5]),
    ("_", [3]),
    ("load_", [3]),  # an unescaped _ would match "load " too
    ("100%", [5]),
    ("\\", [8]),
    ("l\\r", [8]),
    # a colon after something that is not a field name is ordinary text
    ("/a:b", [6]),
    ("a:b", None),  # looks like a field: error, checked below
    ('"ops/a":b', [6]),
    # job: is exact
    ("job:reports/daily", [4]),
    ("job:reports", []),
    ('job:"etl/load prices"', [1, 2]),
    # state:, with prefixes and lists
    ("state:success", [1]),
    ("state:run", [3]),
    ("state:fail,sk", [2, 5]),
    ("state:RUN", [3]),
    ("State:run", [3]),
    ("state:sc,w,e", [4, 6, 7]),
    # args
    ("date=2026-11-25", [1, 3]),
    ("date=2026-11", []),
    ("date=", [1, 2, 3, 6]),
    ('date="2026 11"', [6]),
    ('"my arg"="a b"', [5]),
    ('"my arg"=', [5]),
    ('"q\\"uote"=x', [5]),
    ('"back\\\\slash"=1', [8]),
    ("back\\slash=1", [8]),
    ("empty=", [6]),
    ('empty=""', [6]),
    ('date=""', []),
    ("region=eu date=2026-11-25", [3]),
    ("date=2026:11", []),
    ("x.y:z=1", []),
    ("=", None),  # error, checked below
    # negation
    ("!etl", [4, 5, 6, 7]),
    ("!state:run", [1, 2, 4, 5, 6, 7, 8]),
    ("!date=", [4, 5, 7, 8]),
    ("!date=2026-11-25", [2, 4, 5, 6, 7, 8]),
    ('!"load prices"', [3, 4, 5, 6, 7, 8]),
    ("!job:reports/daily", [1, 2, 3, 5, 6, 7, 8]),
    ("etl !state:fail", [1, 3, 8]),
    ("!!etl", [1, 2, 3, 8]),
    # quoted operators are literal text
    ('"!etl"', []),
    ('"state:run"', []),
    ('"date=x"', []),
    # combinations
    ("etl state:s,f date=2026-11-26", None),  # 's' is ambiguous
    ("etl state:su,f date=2026-11-26", [2]),
])
def test_matches(db, text, expected):
    if expected is None:
        with pytest.raises(BadRequest):
            compile_filter(text)
    else:
        assert match(db, text) == expected


@pytest.mark.parametrize("text, message", [
    ("state:s", "bad filter term 'state:s': ambiguous state 's' "
                "(scheduled, skipped, starting, stopping, success)"),
    ("etl state:bogus", "bad filter term 'state:bogus': unknown state 'bogus' "
                        "(states: " + ", ".join(STATES) + ")"),
    ("state:", "bad filter term 'state:': empty state name"),
    ("state:run,", "bad filter term 'state:run,': empty state name"),
    ('etl "load prices', "bad filter term '\"load prices': unterminated quote"),
    ('date="2026', "bad filter term 'date=\"2026': unterminated quote"),
    ('"abc\\"', "bad filter term '\"abc\\\\\"': unterminated quote"),
    ("=x", "bad filter term '=x': missing arg name before '='"),
    ('""=x', "bad filter term '\"\"=x': missing arg name before '='"),
    ("!", "bad filter term '!': nothing after '!'"),
    ('""', "bad filter term '\"\"': empty term"),
    ("job:", "bad filter term 'job:': empty job id"),
    ("stat:run", "bad filter term 'stat:run': unknown field 'stat' (fields: job, state, host); "
                 "quote the term to search job ids for it"),
])
def test_errors(text, message):
    with pytest.raises(BadRequest) as exc:
        compile_filter(text)
    assert str(exc.value) == message
    assert exc.value.status == 400


def test_empty_filter():
    assert compile_filter("") == ("1", [])


def test_states_parameter(db):
    sql, params = compile_filter("state:p", states=("pending", "done"))
    assert params == ["pending"]


@pytest.mark.parametrize("text", [
    "'; DROP TABLE runs; --",
    "x' OR '1'='1",
    "\"') OR 1=1 --\"",
    "date=') OR 1=1 --",
    "\"a') OR 1=1; --\"=x",
    "job:') OR 1=1 --",
    "state:run') OR 1=1 --",
])
def test_no_sql_injection(db, text):
    try:
        sql, params = compile_filter(text)
    except BadRequest:
        return
    # Everything the user wrote goes into params, never into the SQL text.
    for fragment in ("DROP", "OR", "'1'", "--", ";"):
        assert fragment not in sql
    assert match(db, text) == []
    assert db.execute("SELECT count(*) FROM runs").fetchall() == [(len(ROWS),)]


def test_host_term_matches_the_recorded_host_exactly(tmp_path):
    store = Store(tmp_path / "h.db")
    ids = [store.insert_run("j", {}, "starting", 0.0, 0.0).run_id for _ in range(4)]
    assert store.set_host(ids[0], "web1", 1.0, "sent to host web1")
    assert store.set_host(ids[1], "web2", 1.0, "sent to host web2 (group web, round-robin)")
    assert store.set_host(ids[2], "web1.example.com", 1.0, "sent to host web1.example.com")

    def hits(text):
        sql, params = compile_filter(text)
        return [r[0] for r in store.conn.execute(f"SELECT run_id FROM runs WHERE {sql} ORDER BY run_id", params)]

    assert hits("host:web1") == [ids[0]]
    assert hits("HOST:web2") == [ids[1]]
    assert hits("host:web") == []  # not a substring match
    assert hits("!host:web1") == [ids[1], ids[2], ids[3]]  # runs with no host included
    assert hits('host:"web1.example.com" j') == [ids[2]]
    with pytest.raises(BadRequest, match="empty host name"):
        compile_filter("host:")


def test_set_host_records_only_a_starting_run_and_logs_it(tmp_path):
    store = Store(tmp_path / "h.db")
    starting = store.insert_run("j", {}, "starting", 0.0, 0.0).run_id
    waiting = store.insert_run("j", {}, "waiting", 0.0, 0.0).run_id
    assert store.set_host(starting, "web1", 1.0, "sent to host web1")
    assert not store.set_host(waiting, "web1", 1.0, "sent to host web1")
    assert store.get_run(starting).host == "web1" and store.get_run(waiting).host is None
    assert store.get_run(starting).to_jso()["host"] == "web1"
    assert store.busy_hosts(["web1", "web2"]) == {"web1": 1}
    assert store.run_log(starting)[-1]["message"] == "sent to host web1"

"""Malformed requests, request size limits and logins under load, through the real server.

Every malformed request gets a 4xx with a JSON error (pages: a readable
page), never a 500, an empty body or a traceback; bodies larger than
``max_request_size`` are refused before they are read; password checks
leave the rest of the server responsive.
"""

import json
import os
import re
import secrets
import signal
import socket
import threading
import time
import urllib.parse

import pytest
import strategies
from conftest import ROOT, write_job
from hypothesis import HealthCheck, given, settings

SERVERS = ["gevent", "waitress"]
GREET = """
    params: [name]
    program: "echo hello {{ name }}"
"""


@pytest.fixture
def start(running, jobs_dir):
    """``start(**settings)``: a server with the job ``greet``."""
    write_job(jobs_dir, "greet", GREET)
    return running


def error_of(body):
    jso = json.loads(body)
    assert set(jso) == {"error"} and jso["error"], jso
    return jso["error"]


def no_traceback(server):
    assert "Traceback" not in server.log(), server.log()


# -- raw HTTP ------------------------------------------------------------------------------


def connect(server):
    u = urllib.parse.urlsplit(server.url)
    sock = socket.create_connection((u.hostname, u.port), timeout=10)
    return sock


def read_response(sock):
    """``(status, headers, body)`` of the response on ``sock`` (read until it is complete or closed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", -1))
    while length < 0 or len(body) < length:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        body += chunk
    return status, headers, body


def exchange(server, data):
    """Send ``data`` as it is; the response."""
    with connect(server) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all
        return read_response(sock)


def head(server, method, path, headers):
    host = urllib.parse.urlsplit(server.url).netloc
    headers = {"Host": host, "Connection": "close", **headers}
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_json(server, path, data):
    """POST the bytes ``data`` as JSON with the local token: the response."""
    return exchange(server, head(server, "POST", path, bearer(server) | {
        "Content-Type": "application/json", "Content-Length": len(data)}) + data)


def bearer(server):
    return {"Authorization": f"Bearer {server.token()}"}


def peak_rss_mb(server):
    with open(f"/proc/{server.proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


# -- malformed API input ----------------------------------------------------------------------


BAD_RUN_BODIES = [
    ('{"program": ""}', "program: must not be empty"),
    ('{"program": "  "}', "program: must not be empty"),
    ('{"program": []}', "program: must not be empty"),
    ('{"program": "true", "time": 1e20}', "time: time out of range"),
    ('{"program": "true", "time": -1e300}', "time: time out of range"),
    ('{"program": "true", "time": 99999999999999}', "time:"),
    ('{"program": "true", "time": Infinity}', "Infinity is not a JSON value"),
    ('{"program": "true", "time": 1e999}', "number out of range"),
    ("[" * 100_000 + "]" * 100_000, "nested deeper than 32 levels"),
    ('{"job": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}", "nested deeper than 32 levels"),
    ('{"job_id": "\\ud800"}', "job_id: not valid Unicode text"),
    ('{"job_id": "greet", "args": {"name": "x\\udfff"}}', "args.name: not valid Unicode text"),
    ('{"job_id": "greet", "args": {"\\udc00": "x"}}', "args: a key: not valid Unicode text"),
    ('{"job_id": 7}', "job_id: expected text, got a number"),
    ('{"program": "true", "time": "12:00", "tz": 5}', "tz: expected a time zone name"),
    ('{"program": "true", "time": "12:00", "tz": true}', "tz: expected a time zone name"),
    ('{"program": "true", "time": "12:00", "tz": "' + "x" * 10_000 + '"}', "tz: unknown time zone"),
    ('{"program": "true", "time": "12:00", "tz": "a\\u0000b"}', "tz: unknown time zone"),
    ('{"program": "true", "time": true}', "time: expected a time"),
    ('{"program": "true", "time": "9999-12-31T23:00:00", "tz": "Etc/GMT+12"}', "time: time out of range"),
]


def test_malformed_run_submissions_are_400s_naming_the_field(start):
    srv = start()
    for text, expected in BAD_RUN_BODIES:
        status, _, body = post_json(srv, "/api/v1/runs", text.encode())
        assert status == 400, (text[:80], status, body[:300])
        assert expected in error_of(body), (text[:80], body[:300])
    assert srv.runs() == []
    no_traceback(srv)


def test_output_wait_must_be_a_number_of_seconds_up_to_30(start):
    srv = start()
    run = srv.post("/api/v1/runs", {"program": "echo out"})
    srv.wait_run(run["run_id"])
    for wait in ["abc", "nan", "inf", "-1", "31", "1e309", "\ud800"]:
        status, body, _ = srv.request("GET", f"/api/v1/runs/{run['run_id']}/output?offset=0&wait="
                                      + strategies.quote(wait))
        assert status == 400 and error_of(body).startswith("wait: "), (wait, status, body)
    status, body, _ = srv.request("GET", f"/api/v1/runs/{run['run_id']}/output?offset=0&wait=0.5")
    assert (status, body) == (200, b"out\n")
    no_traceback(srv)


def test_a_filter_too_long_for_sqlite_is_a_400(start):
    """A LIKE pattern over 50,000 bytes, or 1,000 terms (an expression too deep), failed in SQLite."""
    srv = start(server="waitress")  # whose 64 KiB request line lets a 50,000-character filter through
    for q, expected in [("a" * 50_000, "filter too long: 50000 characters (at most 4096)"),
                        (" ".join(["a"] * 1000), "filter has too many terms: 1000"),
                        (" ".join(["a"] * 100), "filter has too many terms: 100 (at most 64)")]:
        for path in ["/api/v1/runs?q=", "/?q=", "/calendar?q=", "/calendar/day?q="]:
            status, _, body = exchange(srv, head(srv, "GET", path + strategies.quote(q), bearer(srv)))
            assert status == 400 and expected in body.decode(), (path, q[:20], status, body[:300])
    no_traceback(srv)


def test_pages_answer_malformed_input_with_a_readable_400(start):
    srv = start()
    srv.post("/api/v1/runs", {"job_id": "greet", "args": {"name": "x"}, "time": "2999-01-01T00:00:00Z"})
    for path, expected in [
        ("/?limit=%C2%B2", "limit: not a whole number"),                  # "²" passes str.isdigit()
        ("/runs/r%C2%B2", "not a run id"),
        ("/runs/r1/tail?offset=99999999999999999999", "offset: must be between 0 and"),
        ("/calendar?date=9999-12-31", "date: must be between 1900-01-01 and 9998-12-31"),
        ("/calendar/day?date=0001-01-01", "date: must be between"),
        ("/calendar?view=week&date=0001-01-01", "date: must be between"),
        ("/login?once=1.2.%C3%A9", "expired or was used already"),
    ]:
        status, headers, body = exchange(srv, head(srv, "GET", path, bearer(srv)))
        assert status in (400, 403) and headers["content-type"].startswith("text/html"), (path, status, body[:200])
        assert expected in body.decode(), (path, body.decode()[:2000])
    # Headers that are not URLs where a URL belongs.
    form = b"tz=Asia%2FTokyo"
    post = {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": len(form)} | bearer(srv)
    status, _, body = exchange(srv, head(srv, "POST", "/ui/zone", post | {"Origin": "http://["}) + form)
    assert status == 403 and b"refused a request from another site" in body
    status, headers, _ = exchange(srv, head(srv, "POST", "/ui/zone", post | {"Referer": "http://["}) + form)
    assert status == 303 and headers["location"] == "/"
    no_traceback(srv)


# -- the server layer: request line, headers, malformed HTTP ------------------------------------


@pytest.mark.parametrize("kind", SERVERS)
def test_a_long_query_string_gets_a_json_error(start, kind):
    srv = start(server=kind)
    status, headers, body = exchange(srv, head(srv, "GET", "/api/v1/runs?q=" + "a" * 100_000, bearer(srv)))
    # gevent limits the request line (414), waitress the request line and headers together (431).
    assert status == (414 if kind == "gevent" else 431)
    assert headers["content-type"] == "application/json"
    assert "too long" in error_of(body) or "too large" in error_of(body)
    assert srv.get("/api/v1/alive") == {"ok": True}


@pytest.mark.parametrize("kind", SERVERS)
def test_headers_too_large_get_a_json_431(start, kind):
    srv = start(server=kind)
    for headers in [{"X-Big": "b" * 70_000}, {f"X-H{i}": "x" * 600 for i in range(120)}]:
        status, resp_headers, body = exchange(srv, head(srv, "GET", "/api/v1/alive", headers))
        assert status == 431 and resp_headers["content-type"] == "application/json"
        assert "request line and headers too large" in error_of(body)


@pytest.mark.parametrize("kind", SERVERS)
def test_malformed_http_gets_a_json_400(start, kind):
    srv = start(server=kind)
    for data in [b"GARBAGE\r\n\r\n",
                 head(srv, "POST", "/api/v1/runs", {"Content-Length": "abc"}),
                 head(srv, "POST", "/api/v1/runs", {"Transfer-Encoding": "chunked"} | bearer(srv)) + b"zz\r\n"]:
        status, headers, body = exchange(srv, data)
        assert status == 400 and headers["content-type"] == "application/json", (data[:40], status, body)
        assert error_of(body)
    assert srv.get("/api/v1/alive") == {"ok": True}


# -- request size ----------------------------------------------------------------------------


def chunked(server, path, total, headers, piece=64 * 1024):
    """POST ``total`` bytes of form data to ``path`` in chunks; the response (the server may
    answer and close before all is sent)."""
    with connect(server) as sock:
        sock.sendall(head(server, "POST", path, {"Transfer-Encoding": "chunked",
                                                  "Content-Type": "application/x-www-form-urlencoded", **headers}))
        sent = 0
        try:
            while sent < total:
                n = min(piece, total - sent)
                sock.sendall(b"%x\r\n" % n + b"a" * n + b"\r\n")
                sent += n
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_response(sock)


@pytest.mark.parametrize("kind", SERVERS)
def test_bodies_over_max_request_size_get_413_before_they_are_read(start, kind):
    srv = start(server=kind, max_request_size=4096)
    json_headers = bearer(srv) | {"Content-Type": "application/json"}

    def submit(body, **more):
        return exchange(srv, head(srv, "POST", "/api/v1/runs", json_headers | {"Content-Length": len(body)} | more)
                        + body)

    # Exactly the limit is accepted; a byte more is not.
    body = b'{"program": "true", "time": "2999-01-01T00:00:00Z"}'
    assert submit(body.ljust(4096))[0] == 201
    status, headers, resp = submit(body.ljust(4097))
    assert status == 413 and "at most 4096 bytes (the max_request_size setting)" in error_of(resp)
    # A Content-Length alone is enough: the body is never waited for. Unauthenticated, and a page.
    for path, extra in [("/api/v1/runs", bearer(srv)), ("/api/v1/runs", {}), ("/login", {})]:
        status, headers, resp = exchange(srv, head(srv, "POST", path, {"Content-Length": 200 << 20} | extra))
        assert status == 413, (path, status, resp[:200])
        assert "max_request_size" in resp.decode()
        if path.startswith("/api/") or kind == "waitress":  # waitress refuses it itself, in JSON
            assert "at most 4096 bytes" in error_of(resp)
        else:
            assert "<html" in resp.decode() and "at most 4096 bytes" in resp.decode()
    # Chunked bodies have no length: they are cut off as they pass it.
    status, _, resp = chunked(srv, "/api/v1/runs", 1 << 20, bearer(srv) | {"Content-Type": "application/json"})
    assert status == 413 and "at most 4096 bytes" in error_of(resp)
    status, _, resp = chunked(srv, "/login", 1 << 20, {})
    assert status == 413 and "max_request_size" in resp.decode()
    # A small chunked body is fine.
    ok = b'{"program": "true", "time": "2999-01-01T00:00:00Z"}'
    data = head(srv, "POST", "/api/v1/runs", json_headers | {"Transfer-Encoding": "chunked"})
    status, _, resp = exchange(srv, data + b"%x\r\n" % len(ok) + ok + b"\r\n0\r\n\r\n")
    assert status == 201, resp
    assert srv.get("/api/v1/alive") == {"ok": True}
    no_traceback(srv)


@pytest.mark.parametrize("kind", SERVERS)
def test_a_200_mib_login_post_does_not_grow_the_server(start, kind):
    """An unauthenticated 200 MiB POST /login once took the server from 52 MiB to 916 MiB."""
    srv = start(server=kind)
    before = peak_rss_mb(srv)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with connect(srv) as sock:
        sock.sendall(head(srv, "POST", "/login", form | {"Content-Length": 200 << 20}))
        try:
            for _ in range(200):
                sock.sendall(b"a=" + b"x" * ((1 << 20) - 2))
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = read_response(sock)
    assert status == 413 and "max_request_size" in body.decode()
    status, _, body = chunked(srv, "/login", 200 << 20, {}, piece=1 << 20)
    assert status == 413 and "max_request_size" in body.decode()
    assert srv.get("/api/v1/alive") == {"ok": True}
    assert peak_rss_mb(srv) < before + 30, (before, peak_rss_mb(srv))


# -- logins ----------------------------------------------------------------------------------


def add_user(server, name="ann", password="correct horse"):
    result = server.cli("user", "add", name, "--role", "viewer", "--password-stdin", "--data",
                        str(server.data_dir), input=password + "\n")
    assert result.returncode == 0, result.stderr


def login_form(server):
    """(cookie, CSRF token) of a fresh login page."""
    with connect(server) as sock:
        sock.sendall(head(server, "GET", "/login", {}))
        status, headers, body = read_response(sock)
    assert status == 200
    return headers["set-cookie"].split(";", 1)[0], re.search(rb'name="csrf_token" value="([^"]+)"', body).group(1)


def post_login(server, cookie, csrf, name, password="wrong password"):
    form = urllib.parse.urlencode({"csrf_token": csrf, "name": name, "password": password}).encode()
    return exchange(server, head(server, "POST", "/login", {
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded", "Content-Length": len(form)}) + form)


@pytest.mark.parametrize("kind", SERVERS)
def test_logins_being_checked_do_not_hold_up_other_requests(start, kind):
    srv = start(server=kind)
    add_user(srv)
    forms = [login_form(srv) for _ in range(4)]
    in_flight, results = [0], []
    lock = threading.Lock()

    def login(cookie, csrf):
        with lock:
            in_flight[0] += 1
        t0 = time.monotonic()
        status = post_login(srv, cookie, csrf, "u" + secrets.token_hex(4))[0]
        with lock:
            in_flight[0] -= 1
            results.append((status, time.monotonic() - t0))

    threads = [threading.Thread(target=login, args=f) for f in forms]
    for t in threads:
        t.start()
    alive = []  # seconds of each /alive answered while at least two logins were being checked
    while any(t.is_alive() for t in threads):
        with lock:
            busy = in_flight[0] >= 2
        t0 = time.monotonic()
        status, _, body = srv.request("GET", "/api/v1/alive", token=False)
        assert status == 200
        with lock:
            if busy and in_flight[0] >= 2:
                alive.append(time.monotonic() - t0)
        time.sleep(0.01)
    for t in threads:
        t.join()
    # Four checks, two at a time, take a while: /alive was asked meanwhile, and answered at once.
    assert sorted(s for s, _ in results) == [401] * 4, results
    assert len(alive) >= 3, (alive, results)
    assert max(alive) < 0.2, (alive, results)


def test_too_many_logins_at_once_from_one_address_get_429(start):
    srv = start()
    add_user(srv)
    forms = [login_form(srv) for _ in range(8)]
    results = []
    barrier = threading.Barrier(len(forms))

    def login(cookie, csrf):
        barrier.wait()
        results.append(post_login(srv, cookie, csrf, "u" + secrets.token_hex(4)))

    threads = [threading.Thread(target=login, args=f) for f in forms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(status for status, _, _ in results)
    assert statuses.count(401) >= 4 and statuses.count(429) >= 1, statuses
    for status, headers, body in results:
        if status == 429:
            assert headers["retry-after"] == "1" and b"Too many logins at once from your address" in body
    # And the right password still works once the crowd has gone.
    cookie, csrf = login_form(srv)
    assert post_login(srv, cookie, csrf, "ann", "correct horse")[0] == 303


def test_a_name_that_cannot_be_a_user_costs_no_password_check(start):
    srv = start()
    add_user(srv)
    cookie, csrf = login_form(srv)
    t0 = time.monotonic()
    for name in ["x" * 100_000, "bad name", "../ann", "\x00"]:
        status, _, body = post_login(srv, cookie, csrf, name)
        assert status == 401 and b"Wrong user name or password" in body
    assert time.monotonic() - t0 < 1.0


# -- any request at all -------------------------------------------------------------------------


def check_response(method, path, status, body, content_type):
    what = (method, path[:200], status, body[:300])
    assert status < 500, what
    assert b"Traceback" not in body and b"internal error" not in body, what
    if status >= 400:
        assert body, what
        if path.startswith("/api/") or content_type.startswith("application/json"):
            # A page's error is a page, unless the server layer refused the request (a JSON error).
            assert content_type.startswith("application/json"), what
            error_of(body)
        else:
            assert content_type.startswith("text/html"), what


class Timeout(Exception):
    pass


def _alarm(_signum, _frame):
    raise Timeout("no answer within 20 s")


@pytest.fixture
def in_process(app_world):
    """The app in this process over the example jobs (every kind of schedule, for the calendar)
    and ``greet``, with runs r1-r3; its engine does not run anything."""
    examples = ROOT / "jobs"
    jobs = {str(p.relative_to(examples))[:-5]: p.read_text() for p in examples.rglob("*.yaml")}
    jobs["greet"] = GREET
    jobs["tick"] = """
        params: [time]
        program: {type: no-op}
        schedule: {type: interval, interval: 1h}
    """
    client, engine, _store, _clock = app_world(jobs, 1_790_000_000.0)
    for name in ["x", "y", "z"]:  # r1, r2, r3
        engine.submit("greet", {"name": name})
    return client


EXAMPLES = int(os.environ.get("HARDENING_EXAMPLES", 1000))
SHARED_APP = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]  # one app for every example


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=SHARED_APP)
@given(request=strategies.requests())
def test_no_request_gets_a_5xx_in_process(in_process, request):
    in_process_check(in_process, request)


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=SHARED_APP)
@given(request=strategies.queries())
def test_no_query_string_gets_a_5xx_in_process(in_process, request):
    in_process_check(in_process, request)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=SHARED_APP)
@given(request=strategies.bodies())
def test_no_json_body_gets_a_5xx_in_process(in_process, request):
    in_process_check(in_process, request)


def in_process_check(client, request):
    """Send ``request`` to the in-process app (at most 20 s) and check the response."""
    method, path, body, content_type = request
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    try:
        resp = client.open(path, method=method, data=body,
                               headers={"Content-Type": content_type} if content_type else {})
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    check_response(method, path, resp.status_code, resp.get_data(), resp.content_type or "")


@settings(max_examples=EXAMPLES // 8, deadline=None, suppress_health_check=SHARED_APP)
@given(request=strategies.requests(run_anything=False))
def test_no_request_gets_a_5xx_from_the_real_server(real_server, request):
    method, path, body, content_type = request
    headers = bearer(real_server)
    if body is not None:
        headers |= {"Content-Type": content_type, "Content-Length": len(body)}
    status, resp_headers, resp = exchange(real_server, head(real_server, method, path, headers) + (body or b""))
    check_response(method, path, status, resp, resp_headers.get("content-type", ""))


@pytest.fixture
def real_server(start):
    srv = start()
    srv.post("/api/v1/runs", {"job_id": "greet", "args": {"name": "x"}, "time": "2999-01-01T00:00:00Z"})
    yield srv
    no_traceback(srv)

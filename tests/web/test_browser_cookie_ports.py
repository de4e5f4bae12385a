"""The session cookie and other ports of the same address, in a real browser (Debian's Chromium
through Playwright): browsers send a host's cookies to every port of it, so a program listening
on another port of 127.0.0.1 receives the scheduler's cookie. It gets no CSRF token with it, its
replay from another local user is refused, a replay with the token from another origin is
refused, and a logout ends the session for every copy of the cookie; the scheduler serves on.
A server on a loopback address of its own (the desktop start's) shares no cookie with
127.0.0.1, and two servers on one address keep their own logins."""

import http.server
import json
import re
import subprocess
import threading
import urllib.parse
from contextlib import contextmanager

import pytest
from browsing import chromium, logged_in_page, served
from playwright.sync_api import expect
from users import RUN_AS_USER, ensure_user

from apsis_lite.cli.desktop import own_loopback_address

JOBS = {"alpha": "program: {type: no-op}\n"}


@pytest.fixture(scope="module")
def server():
    with served(JOBS) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, server, request, tmp_path):
    with logged_in_page(browser, server, request, tmp_path) as pg:
        yield pg


class Listener(http.server.BaseHTTPRequestHandler):
    """Another program on this machine, on another port: it keeps the cookies browsers send it."""

    received: list

    def do_GET(self):
        self.received.append(self.headers.get("Cookie") or "")
        body = b"<!doctype html><title>another local server</title><p>hello"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def listener(host="127.0.0.1"):
    """(its URL, the Cookie headers it received)."""
    received = []
    srv = http.server.ThreadingHTTPServer((host, 0), type("Handler", (Listener,), {"received": received}))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://{host}:{srv.server_port}", received
    finally:
        srv.shutdown()
        srv.server_close()


def session_cookie(cookie_header):
    """The ``name=value`` of the scheduler's session cookie in a Cookie header, or None."""
    return next((c.strip() for c in cookie_header.split(";") if c.strip().startswith("apsis_session")), None)


# What the listener's program does with the cookie: stdlib only, so that another user can run it.
REPLAY = r"""
import http.client, json, sys, urllib.parse
netloc, cookie, token, origin, wanted = sys.argv[1:6]
answers = {}
def send(key, method, path, form=None, headers=None):
    if key not in wanted.split(","):
        return
    conn = http.client.HTTPConnection(netloc, timeout=30)
    sent = {"Cookie": cookie, **(headers or {})}
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=sent)
    resp = conn.getresponse()
    answers[key] = [resp.status, resp.read().decode("utf-8", "replace"), resp.getheader("Set-Cookie")]
send("page", "GET", "/jobs")
send("api", "GET", "/api/v1/runs")
send("form", "POST", "/adhoc", {"command": "touch /tmp/replayed", "when": "now", "csrf_token": token})
send("htmx", "POST", "/adhoc", {"command": "touch /tmp/replayed", "when": "now"},
     {"X-CSRF-Token": token, "HX-Request": "true", **({"Origin": origin} if origin else {})})
print(json.dumps(answers))
"""


def replay(server, cookie, token, origin="", user=None, wanted=("page", "api", "form", "htmx")):
    """The ``wanted`` requests of the replay, as ``user`` (a uid) or as this process's user:
    {what: [status, body, Set-Cookie]}."""
    netloc = urllib.parse.urlsplit(server.url).netloc
    result = subprocess.run(["/usr/bin/python3", "-c", REPLAY, netloc, cookie, token, origin, ",".join(wanted)],
                            capture_output=True, text=True, timeout=60, cwd="/", user=user)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_another_port_gets_the_cookie_but_cannot_use_it(server, page):
    other_user = ensure_user(RUN_AS_USER).pw_uid
    page.goto(server.url + "/jobs")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    with listener() as (url, received):
        page.goto(url + "/")
        expect(page.locator("p")).to_have_text("hello")
    cookie = session_cookie(received[0])
    assert cookie is not None, received  # browsers do not keep a host's cookies from its other ports
    assert token not in received[0] and token not in urllib.parse.unquote(received[0])

    # Another local user's program replays it, even with the page's CSRF token: refused, all of it.
    answers = replay(server, cookie, token, user=other_user)
    assert answers["page"][0] == 303 and answers["page"][2] is None, answers
    assert answers["api"][0] == 401 and "authentication required" in answers["api"][1], answers
    assert answers["form"][0] == 401 and answers["htmx"][0] == 401, answers
    assert "another local user" not in answers["api"][1]  # the log says so, not the answer
    assert "refused a session cookie brought by local user" in server.log()
    # The same pair sent from the other port's origin (as a page there would send it) is refused too,
    # and so is the cookie without the token. (The same user's programs can read the local token,
    # and with it do anything: they are the owner, not a thief; docs/security.md.)
    answers = replay(server, cookie, token, origin=url, wanted=["htmx"])
    assert answers["htmx"][0] == 403 and "another site" in answers["htmx"][1], answers
    answers = replay(server, cookie, "not-the-token", wanted=["form", "htmx"])
    assert answers["form"][0] == 403 and "CSRF token" in answers["form"][1], answers
    assert answers["htmx"][0] == 403 and "CSRF token" in answers["htmx"][1], answers
    assert server.runs() == []

    # The scheduler serves on, and the user is still logged in and can act.
    page.goto(server.url + "/adhoc")
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    status, _, _ = server.request("GET", "/api/v1/alive", token=False)
    assert status == 200

    # A logout ends the session on the server: the copy of the cookie is no good to anyone.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    answers = replay(server, cookie, token)
    assert answers["page"][0] == 303 and answers["api"][0] == 401, answers
    assert answers["form"][0] == 401 and server.runs() == []


def test_a_server_on_an_address_of_its_own_shares_no_cookie_with_127_0_0_1(browser, request, tmp_path):
    address = own_loopback_address(str(tmp_path))
    assert address != "127.0.0.1"  # Linux answers on all of 127/8
    with served(JOBS, ["--host", address]) as srv, logged_in_page(browser, srv, request, tmp_path) as pg:
        assert srv.url.startswith(f"http://{address}:")
        pg.goto(srv.url + "/jobs")
        expect(pg.get_by_role("button", name="Log out")).to_be_visible()
        with listener() as (url, received):
            pg.goto(url + "/")
            expect(pg.locator("p")).to_have_text("hello")
        assert received and session_cookie(received[0]) is None, received
        # Its own other ports do get it: the address is the boundary, as the docs say.
        with listener(address) as (url, received):
            pg.goto(url + "/")
            expect(pg.locator("p")).to_have_text("hello")
        assert session_cookie(received[0]) is not None, received


def test_two_servers_on_one_address_keep_their_own_logins(browser, server, request, tmp_path):
    with served(JOBS) as second, logged_in_page(browser, server, request, tmp_path) as pg:
        pg.goto(second.login_link())
        expect(pg.get_by_role("button", name="Log out")).to_be_visible()
        for srv in (server, second, server):
            pg.goto(srv.url + "/jobs")
            expect(pg).to_have_url(srv.url + "/jobs")
            expect(pg.get_by_role("button", name="Log out")).to_be_visible()
        names = {c["name"] for c in pg.context.cookies() if c["name"].startswith("apsis_session")}
        assert len(names) == 2, names

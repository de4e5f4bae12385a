"""Browser sessions through the real server: where a login may redirect to, that a page of
another site cannot replace the session cookie, that sessions end (absolute lifetime, idle
timeout), and what refused requests give away."""

import json
import re
import time
import urllib.parse
from email.utils import parsedate_to_datetime

import pytest
from conftest import write_job
from test_security import Browser, add_user, logged_in

EVIL = "http://evil.example"


def once_path(server, **query):
    """A one-time login link's path and query, with more in the query (``next``)."""
    link = server.login_link()[len(server.url):]
    return link + ("&" + urllib.parse.urlencode(query) if query else "")


def session_expiry(browser):
    """When the session cookie the server last set says it expires."""
    line = next(c for c in browser.last_set_cookie if c.startswith("apsis_session_"))
    return parsedate_to_datetime(re.search(r"Expires=([^;]+)", line).group(1)).timestamp()


# -- item: redirects after logging in go to this site only ------------------------------------

# What a browser would make of each: tabs and newlines dropped, a backslash read as a slash.
OFF_SITE = [
    "/\t/evil.example:8080/path",
    "/\n/evil.example/x",
    "/\r\n/evil.example/x",
    "//evil.example/x",
    "/\\evil.example/x",
    "\\/evil.example",
    "/\\/evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    " //evil.example",
    "/x\x00y",
    "/\t",
]


def test_a_one_time_link_never_redirects_off_site(server):
    srv = server.start()
    for target in OFF_SITE:
        b = Browser(srv)
        status, body, resp = b.request("GET", once_path(srv, next=target))
        assert (status, resp.getheader("Location")) == (303, "/"), (target, status, body[:500])
        status, body, _ = b.request("GET", "/")
        assert status == 200 and "Log out" in body, target  # and the login itself worked
    b = Browser(srv)
    status, _, resp = b.request("GET", once_path(srv, next="/runs/r1?x=%2F%2Fy"))
    assert (status, resp.getheader("Location")) == (303, "/runs/r1?x=%2F%2Fy")


def test_the_login_form_and_the_zone_picker_never_redirect_off_site(server):
    srv = server.start()
    add_user(srv, "ann", "viewer", password="ann's password")
    for target in ("/\t/evil.example:8080/path", "/\n/evil.example", "/jobs?q=x"):
        b = Browser(srv)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', b.request("GET", "/login")[1]).group(1)
        status, body, resp = b.request("POST", "/login", form={
            "name": "ann", "password": "ann's password", "csrf_token": csrf, "next": target})
        expected = "/jobs?q=x" if target == "/jobs?q=x" else "/"
        assert (status, resp.getheader("Location")) == (303, expected), (target, status, body[:500])
    # The zone picker goes back to the page it was on: a path of this site, never another site.
    b = logged_in(srv)
    token = b.csrf()
    netloc = urllib.parse.urlsplit(srv.url).netloc
    for referer, back in [(f"http://{netloc}//evil.example/x", "/"),
                          (f"http://{netloc}/\\evil.example/x", "/"),
                          (f"http://{netloc}/jobs?q=a", "/jobs?q=a"),
                          (f"{EVIL}/runs?q=b", "/runs?q=b")]:
        status, _, resp = b.request("POST", "/ui/zone", form={"tz": "Asia/Tokyo", "csrf_token": token},
                                    headers={"Referer": referer})
        assert (status, resp.getheader("Location")) == (303, back), referer


# -- item: a page of another site cannot log the user out ---------------------------------------


def from_another_site(browser, method, path, form=None, headers=None):
    """A request another site makes the browser send: without the SameSite=Lax cookie, with
    the other site's Origin; whatever cookie it sets replaces the browser's, as it would."""
    kept = browser.cookies
    browser.cookies = {}
    try:
        answer = browser.request(method, path, form=form, headers=headers or {"Origin": EVIL})
    finally:
        browser.cookies = {**kept, **browser.cookies}
    return answer


def test_a_cross_site_request_refused_sets_no_cookie_and_the_user_stays_logged_in(srv_with_job):
    srv = srv_with_job
    add_user(srv, "ann", "operator", password="ann's password")
    b = logged_in(srv)
    for method, path, form, headers in [
        ("POST", "/adhoc", {"command": "touch /tmp/x", "when": "now"}, None),
        ("POST", "/jobs/greet/run", {"name": "x"}, None),
        ("POST", "/logout", {}, None),
        ("POST", "/ui/zone", {"tz": "Asia/Tokyo"}, None),
        ("POST", "/login", {"name": "ann", "password": "guess"}, None),
        ("POST", "/login", {"name": "ann", "password": "guess"}, {"Origin": "null"}),
        ("POST", "/adhoc", {"command": "true", "when": "now"}, {"Origin": "null"}),
        ("GET", "/", None, None),
        ("GET", "/no/such/page", None, None),
    ]:
        status, body, _ = from_another_site(b, method, path, form, headers)
        assert status in (303, 401, 403), (path, status, body[:300])
        assert b.last_set_cookie == [], (method, path, b.last_set_cookie)
        status, body, _ = b.request("GET", "/")
        assert status == 200 and "Log out" in body, (method, path)
    assert srv.runs() == []
    # The user's own login page still starts a session for its form, and logging in works.
    fresh = Browser(srv)
    status, body, _ = fresh.request("GET", "/login")
    assert status == 200 and any(c.startswith("apsis_session_") for c in fresh.last_set_cookie)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)
    status, _, _ = fresh.request("POST", "/login", form={"name": "ann", "password": "ann's password",
                                                         "csrf_token": csrf}, headers={"Origin": srv.url})
    assert status == 303 and "Log out" in fresh.request("GET", "/")[1]


@pytest.fixture
def srv_with_job(server, jobs_dir):
    write_job(jobs_dir, "greet", """
        params: [name]
        program: "echo hello {{ name }}"
    """)
    return server.start()


def test_pages_for_someone_not_logged_in_start_no_session(srv_with_job):
    add_user(srv_with_job, "ann", "viewer")
    b = Browser(srv_with_job)
    for method, path in [("GET", "/"), ("GET", "/jobs"), ("POST", "/adhoc"), ("GET", "/static/app.css"),
                         ("GET", "/no/such/page"), ("GET", "/api/v1/runs")]:
        b.request(method, path, form={} if method == "POST" else None)
        assert b.last_set_cookie == [], (method, path)
    # An expired login form posted from this site gets a new form that works.
    status, body, _ = b.request("POST", "/login", form={"name": "ann", "password": "x", "csrf_token": "old"},
                                headers={"Origin": srv_with_job.url})
    assert status == 403 and "The form had expired" in body and b.cookies


# -- item: sessions end ------------------------------------------------------------------------


def test_a_session_ends_at_its_lifetime_however_busy_the_browser(running):
    srv = running(session_lifetime="4s")
    b = Browser(srv)
    stolen = {}
    t0 = time.time()
    status, _, _ = b.request("GET", once_path(srv))
    assert status == 303
    expires = session_expiry(b)
    assert t0 + 3 <= expires <= t0 + 5, (t0, expires)
    stolen.update(b.cookies)
    # Busy all the while: every answer is the page, and no cookie moves the end further.
    while time.time() < t0 + 3:
        status, body, _ = b.request("GET", "/jobs")
        assert status == 200 and "Log out" in body
        for line in b.last_set_cookie:
            assert abs(session_expiry(b) - expires) < 1, line
        time.sleep(0.3)
    time.sleep(max(0.0, t0 + 4.2 - time.time()))
    status, _, resp = b.request("GET", "/jobs")
    assert status == 303 and resp.getheader("Location") == "/login?next=/jobs&ended=lifetime"
    assert not any(k.startswith("apsis_session") for k in b.cookies)  # the answer deleted it
    status, body, _ = b.request("GET", resp.getheader("Location"))
    assert status == 200 and "Your session has ended: a login lasts 4.0 s. Please log in again." in body
    # A copy of the cookie taken earlier is no good either, for the pages or the API.
    thief = Browser(srv)
    thief.cookies = dict(stolen)
    status, body, _ = thief.request("GET", "/api/v1/runs")
    assert status == 401 and "Your session has ended" in json.loads(body)["error"]
    assert not any(k.startswith("apsis_session") for k in thief.cookies)
    thief.cookies = dict(stolen)
    status, _, resp = thief.request("GET", "/", headers={"HX-Request": "true"})
    assert status == 401 and resp.getheader("HX-Redirect") == "/login?next=/&ended=lifetime"


def test_background_polls_do_not_keep_an_idle_session_alive_but_the_user_does(running):
    srv = running(session_idle_timeout="3s")
    idle, busy = Browser(srv), Browser(srv)
    assert idle.request("GET", once_path(srv))[0] == 303
    assert busy.request("GET", once_path(srv))[0] == 303
    t0 = time.time()
    poll = {"HX-Request": "true", "X-Apsis-Poll": "1"}
    # The heartbeat and a list refresh, every half second; the other browser is used.
    while time.time() < t0 + 2.2:
        assert idle.request("GET", "/ui/ping", headers={"HX-Request": "true"})[0] == 200
        assert idle.request("GET", "/?q=", headers=poll)[0] == 200
        assert busy.request("GET", "/jobs")[0] == 200
        time.sleep(0.5)
    while time.time() < t0 + 3.5:
        assert busy.request("GET", "/")[0] == 200
        time.sleep(0.5)
    # The polled one ended: its next poll sends the page to the login form, which says why.
    status, _, resp = idle.request("GET", "/ui/ping", headers={"HX-Request": "true"})
    assert status == 401 and resp.getheader("HX-Redirect") == "/login?next=/ui/ping&ended=idle"
    status, body, _ = idle.request("GET", "/login?ended=idle")
    assert "Your session has ended: nothing was done for 3.0 s. Please log in again." in body
    # The used one goes on, well past the idle timeout from its login.
    status, body, _ = busy.request("GET", "/")
    assert status == 200 and "Log out" in body


def test_the_idle_timeout_must_be_positive(running):
    with pytest.raises(RuntimeError) as exc:
        running(session_idle_timeout=0)
    assert "session_idle_timeout: must be more than zero" in str(exc.value)


# -- item: small leaks -------------------------------------------------------------------------


def test_a_foreign_host_is_refused_without_naming_the_hosts_allowed(running):
    srv = running(allowed_hosts=["intranet-name.example"])
    for path in ("/api/v1/alive", "/", "/login"):
        status, body, _ = Browser(srv, host="evil.example").request("GET", path)
        body = body.replace("&#39;", "'")
        assert status == 400 and "does not answer to the host name 'evil.example'" in body, path
        assert "intranet-name" not in body and "localhost" not in body and "127.0.0.1" not in body, body
    assert "intranet-name.example" in srv.log()  # the operator's log says what is allowed


def test_a_used_one_time_link_stays_used_after_a_restart(server):
    srv = server.start()
    used, unused = srv.login_link()[len(srv.url):], srv.login_link()[len(srv.url):]
    assert Browser(srv).request("GET", used)[0] == 303
    srv.stop()
    srv.start()
    status, body, _ = Browser(srv).request("GET", used)
    assert status == 403 and "expired or was used already" in body
    assert Browser(srv).request("GET", unused)[0] == 303  # links not used yet still work once
    assert (srv.data_dir / "used-login-links").stat().st_mode & 0o077 == 0


def test_raw_output_names_its_charset_once(srv_with_job):
    srv = srv_with_job
    run = srv.post("/api/v1/runs", {"job_id": "greet", "args": {"name": "wörld"}})
    srv.wait_run(run["run_id"])
    status, body, headers = srv.request("GET", f"/api/v1/runs/{run['run_id']}/output")
    assert status == 200 and body.decode() == "hello wörld\n"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


# -- item: sessions are kept on the server -----------------------------------------------------


def same_cookies(browser, server):
    """The browser, its cookies kept, pointed at ``server``'s (new) address."""
    moved = Browser(server)
    moved.cookies = dict(browser.cookies)
    return moved


def test_sessions_live_on_the_server_outlive_a_restart_and_end_with_the_token(server):
    srv = server.start()
    b = logged_in(srv)
    (name, sid), = [(k, v) for k, v in b.cookies.items() if k.startswith("apsis_session_")]
    # The cookie is a random id and nothing else: no user, no times, no CSRF token.
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sid)
    assert b.csrf() not in sid
    sessions = (srv.data_dir / "sessions")
    assert sessions.stat().st_mode & 0o777 == 0o600 and sid not in sessions.read_text()
    srv.stop()
    srv.start()
    b = same_cookies(b, srv)  # a new port: browsers send the cookies of a host to all of its ports
    status, body, _ = b.request("GET", "/jobs")
    assert status == 200 and "Log out" in body
    # A forged id, or a real one under another server's name, is nobody.
    assert Browser(srv).request("GET", "/jobs")[0] == 303
    other = Browser(srv)
    other.cookies = {name: sid[:-1] + ("A" if sid[-1] != "A" else "B")}
    assert other.request("GET", "/jobs")[0] == 303
    other.cookies = {"apsis_session_00000000": sid}
    assert other.request("GET", "/jobs")[0] == 303
    # A new local token (the token file deleted) ends every session and renames the cookie.
    srv.stop()
    (srv.data_dir / "token").unlink()
    srv.start()
    b = same_cookies(b, srv)
    status, _, resp = b.request("GET", "/jobs")
    assert status == 303 and resp.getheader("Location").startswith("/login")
    fresh = logged_in(srv)
    assert name not in fresh.cookies and any(k.startswith("apsis_session_") for k in fresh.cookies)

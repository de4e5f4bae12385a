"""Web security through the real server: who may do what, CSRF, Host checks, headers, escaping, paths."""

import http.client
import json
import re
import time
import urllib.parse

import pytest
from conftest import Server, write_job

from apsis_lite.web.security import SECURITY_HEADERS

HOSTILE = '<script>alert("x")</script>'


class Browser:
    """A browser's view of the server: a cookie jar, a Host header, no redirects followed."""

    def __init__(self, server, host=None):
        self.server = server
        parts = urllib.parse.urlsplit(server.url)
        self.netloc = parts.netloc
        self.host = host or parts.netloc
        self.cookies = {}
        self.last_set_cookie = []

    def request(self, method, path, form=None, headers=None):
        conn = http.client.HTTPConnection(self.netloc, timeout=30)
        sent = {"Host": self.host, **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        data = resp.read().decode("utf-8", "replace")
        self.last_set_cookie = resp.msg.get_all("Set-Cookie") or []
        for line in self.last_set_cookie:
            name, _, rest = line.partition("=")
            value = rest.split(";", 1)[0]
            if value and "Expires=Thu, 01 Jan 1970" not in line:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        conn.close()
        return resp.status, data, resp

    def csrf(self, path="/"):
        status, body, _ = self.request("GET", path)
        assert status == 200, (status, body)
        return re.search(r'<meta name="csrf-token" content="([^"]+)"', body).group(1)


@pytest.fixture
def srv(server, jobs_dir):
    write_job(jobs_dir, "greet", """
        params: [name]
        program: "echo hello {{ name }}"
    """)
    return server.start()


def logged_in(server):
    b = Browser(server)
    link = server.login_link()
    status, _, resp = b.request("GET", link[len(server.url):])
    assert (status, resp.getheader("Location")) == (303, "/"), status
    return b


def add_user(server, name, role, password="correct horse"):
    result = server.cli("user", "add", name, "--role", role, "--password-stdin", "--data", str(server.data_dir),
                        input=password + "\n")
    assert result.returncode == 0, result.stderr
    token = server.cli("user", "token", name, "--data", str(server.data_dir))
    assert token.returncode == 0, token.stderr
    return token.stdout.strip()


# -- authentication and roles -------------------------------------------------------------


def test_everything_but_alive_needs_authentication(srv):
    assert srv.request("GET", "/api/v1/alive", token=False)[0] == 200
    for method, path in [("GET", "/api/v1/runs"), ("GET", "/api/v1/jobs"), ("GET", "/api/v1/stats"),
                         ("POST", "/api/v1/runs"), ("POST", "/api/v1/jobs/reload"),
                         ("POST", "/api/v1/runs/r1/stop")]:
        status, body, headers = srv.request(method, path, {} if method == "POST" else None, token=False)
        assert status == 401, (path, status)
        assert "authentication required" in json.loads(body)["error"], path
        assert headers["WWW-Authenticate"].startswith("Bearer")
    # A wrong token is refused as such.
    status, body, _ = srv.request("GET", "/api/v1/runs", token="not-the-token")
    assert status == 401 and "bad credentials" in json.loads(body)["error"]
    # Pages send a browser to the login page; a POST without a login is refused.
    b = Browser(srv)
    status, _, resp = b.request("GET", "/jobs?q=x")
    assert status == 303 and resp.getheader("Location") == "/login?next=/jobs?q%3Dx"
    status, body, _ = b.request("POST", "/adhoc", form={"command": "touch /tmp/pwned", "when": "now"})
    assert status == 401 and "log in first" in body
    assert srv.runs() == []
    # The login page and static files need none.
    assert b.request("GET", "/login")[0] == 200
    assert b.request("GET", "/static/app.js")[0] == 200


def test_viewer_reads_but_cannot_operate_and_operator_is_named_in_the_log(srv):
    viewer = add_user(srv, "vera", "viewer")
    operator = add_user(srv, "otto", "operator")
    assert viewer.startswith("alt_") and viewer != operator
    run = srv.post("/api/v1/runs", {"job_id": "greet", "args": {"name": "x"}})
    srv.wait_run(run["run_id"])
    # The viewer sees everything...
    assert srv.request("GET", f"/api/v1/runs/{run['run_id']}", token=viewer)[0] == 200
    # ...and changes nothing.
    for path, jso in [("/api/v1/runs", {"job_id": "greet", "args": {"name": "v"}}),
                      (f"/api/v1/runs/{run['run_id']}/rerun", {}), ("/api/v1/jobs/reload", {}),
                      (f"/api/v1/runs/{run['run_id']}/mark/failure", {})]:
        status, body, _ = srv.request("POST", path, jso, token=viewer)
        assert status == 403 and "vera is a viewer" in json.loads(body)["error"], (path, body)
    # The operator may, and the run's log says who did it.
    status, body, _ = srv.request("POST", f"/api/v1/runs/{run['run_id']}/rerun", {}, token=operator)
    assert status == 201, body
    rerun = json.loads(body)["run_id"]
    log = srv.get(f"/api/v1/runs/{rerun}/log")["items"]
    assert any(e.get("user") == "otto" or "otto" in json.dumps(e) for e in log), log
    # The CLI with a user's token, through --token.
    result = srv.cli("rerun", run["run_id"], "--token", viewer)
    assert result.returncode == 1 and "vera is a viewer" in result.stderr


def test_the_local_token_acts_as_the_os_user(srv):
    import getpass
    run = srv.post("/api/v1/runs", {"program": "true"})
    log = srv.get(f"/api/v1/runs/{run['run_id']}/log")["items"]
    assert getpass.getuser() in json.dumps(log), log


# -- browser sessions and CSRF --------------------------------------------------------------


def test_one_time_link_works_once(srv):
    b = Browser(srv)
    link = srv.login_link()[len(srv.url):]
    assert b.request("GET", link)[0] == 303
    cookie = next(c for c in b.last_set_cookie if c.startswith("apsis_session_"))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert b.request("GET", "/jobs")[0] == 200
    # The same link again, in another browser: refused.
    other = Browser(srv)
    status, body, _ = other.request("GET", link)
    assert status == 403 and "expired or was used already" in body
    assert other.request("GET", "/jobs")[0] == 303
    # A forged one too.
    assert other.request("GET", "/login?once=9999999999.abc.def")[0] == 403


def test_a_post_from_a_session_needs_its_csrf_token(srv):
    b = logged_in(srv)
    form = {"kind": "command", "command": "echo csrf", "when": "now"}
    status, body, _ = b.request("POST", "/adhoc", form=form)
    assert status == 403 and "CSRF token" in body
    status, _, _ = b.request("POST", "/adhoc", form={**form, "csrf_token": "wrong"})
    assert status == 403
    assert srv.runs() == []
    token = b.csrf()
    # As a form field (no JavaScript) and as htmx's header.
    status, _, resp = b.request("POST", "/adhoc", form={**form, "csrf_token": token})
    assert status == 303 and re.fullmatch(r"/runs/r\d+", resp.getheader("Location"))
    status, _, resp = b.request("POST", "/adhoc", form=form, headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert status == 204 and resp.getheader("HX-Redirect").startswith("/runs/r")
    assert len(srv.runs()) == 2
    # A token of another session does not do.
    other = logged_in(srv)
    assert other.request("POST", "/adhoc", form={**form, "csrf_token": token})[0] == 403


def test_login_form_viewer_session_and_logout(srv):
    add_user(srv, "vera", "viewer", password="viewer password")
    b = Browser(srv)
    b.request("GET", "/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', b.request("GET", "/login")[1]).group(1)
    status, body, _ = b.request("POST", "/login", form={"name": "vera", "password": "nope", "csrf_token": csrf})
    assert status == 401 and "Wrong user name or password" in body
    status, _, resp = b.request("POST", "/login", form={"name": "vera", "password": "viewer password",
                                                         "csrf_token": csrf, "next": "//evil.example/"})
    assert status == 303 and resp.getheader("Location") == "/"
    status, body, _ = b.request("GET", "/")
    assert status == 200 and "vera · viewer" in body
    token = b.csrf()
    status, body, _ = b.request("POST", "/adhoc", form={"command": "true", "when": "now", "csrf_token": token})
    assert status == 403 and "vera is a viewer" in body
    # A viewer may still pick a time zone.
    assert b.request("POST", "/ui/zone", form={"tz": "Asia/Tokyo", "csrf_token": token})[0] == 303
    # A new password ends the sessions of the old one.
    result = srv.cli("user", "passwd", "vera", "--password-stdin", "--data", str(srv.data_dir),
                     input="another password\n")
    assert result.returncode == 0, result.stderr
    assert b.request("GET", "/")[0] == 303
    # Logging out ends a session.
    c = logged_in(srv)
    assert c.request("POST", "/logout", form={"csrf_token": c.csrf()})[0] == 303
    assert c.request("GET", "/")[0] == 303


def test_repeated_failed_logins_are_slowed_down(srv):
    from apsis_lite.web.login_throttle import FREE_FAILURES
    add_user(srv, "olga", "operator", password="the right one")
    b = Browser(srv)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', b.request("GET", "/login")[1]).group(1)

    def attempt(password, name="olga"):
        return b.request("POST", "/login", form={"name": name, "password": password, "csrf_token": csrf})

    for _ in range(FREE_FAILURES):
        assert attempt("guess")[0] == 401
    status, body, resp = attempt("the right one")  # even the right password must wait now
    assert status == 429 and "Too many failed logins" in body
    assert 1 <= int(resp.getheader("Retry-After")) <= 2
    assert attempt("guess", name="someone else")[0] == 401  # other names are not held up
    assert "failed login as 'olga' from 127.0.0.1" in srv.log()
    time.sleep(int(resp.getheader("Retry-After")) + 0.1)
    status, _, resp = attempt("the right one")
    assert status == 303 and resp.getheader("Location") == "/"


# -- hosts and headers -----------------------------------------------------------------------


def test_a_foreign_host_header_is_refused(srv):
    port = urllib.parse.urlsplit(srv.url).port
    for host in (f"evil.example:{port}", "rebind.attacker.test"):
        b = Browser(srv, host=host)
        status, body, _ = b.request("GET", "/api/v1/runs", headers={"Authorization": f"Bearer {srv.token()}"})
        assert status == 400 and "does not answer to the host name" in json.loads(body)["error"]
        status, body, _ = b.request("GET", "/")
        assert status == 400 and "allowed_hosts" in body
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        b = Browser(srv, host=host)
        assert b.request("GET", "/api/v1/runs", headers={"Authorization": f"Bearer {srv.token()}"})[0] == 200


def test_security_headers_on_every_response(srv):
    b = logged_in(srv)
    for path in ("/", "/jobs", "/login", "/static/app.css", "/api/v1/alive", "/no/such/page"):
        _, _, resp = b.request("GET", path)
        for name, value in SECURITY_HEADERS.items():
            assert resp.getheader(name) == value, (path, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp


# -- escaping and paths -----------------------------------------------------------------------


def test_hostile_output_args_and_description_are_inert(srv, jobs_dir):
    write_job(jobs_dir, "evil", f"""
        params: [p]
        program: "printf '%s\\\\n' '{{{{ p }}}}'; echo '<img src=x onerror=alert(1)>'"
        metadata:
          description: '{HOSTILE} <iframe src=//evil.example></iframe> [x](javascript:alert(1))'
    """)
    srv.post("/api/v1/jobs/reload")
    run = srv.post("/api/v1/runs", {"job_id": "evil", "args": {"p": HOSTILE}})
    srv.wait_run(run["run_id"])
    out = srv.request("GET", f"/api/v1/runs/{run['run_id']}/output")[1].decode()
    assert HOSTILE in out  # the job really printed it
    b = logged_in(srv)
    for path in (f"/runs/{run['run_id']}", "/jobs/evil", "/", f"/runs/{run['run_id']}/tail?offset=0"):
        status, body, _ = b.request("GET", path)
        assert status == 200, path
        assert HOSTILE not in body and "<img src=x" not in body and "<iframe" not in body, path
        assert 'href="javascript:' not in body, path
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", body, re.DOTALL)
        assert all("src=" in attrs and not inner.strip() for attrs, inner in scripts), path


@pytest.mark.parametrize("path", [
    "/api/v1/jobs/../../../etc/passwd", "/api/v1/jobs/..%2F..%2Fetc%2Fpasswd",
    "/api/v1/runs/..%2F..%2Fetc%2Fpasswd", "/api/v1/runs/r1%2F..%2F..%2Fpasswd/output",
    "/jobs/../../etc/passwd", "/runs/..%2Fetc%2Fpasswd", "/runs/..%2F..%2Fetc%2Fpasswd/tail?offset=0",
    "/static/..%2F..%2F..%2Fetc%2Fpasswd", "/static/../apsis_lite/auth.py",
])
def test_dot_dot_in_ids_is_refused(srv, path):
    b = Browser(srv)
    status, body, _ = b.request("GET", path, headers={"Authorization": f"Bearer {srv.token()}"})
    assert status in (400, 404), (path, status)
    assert "root:" not in body and "import" not in body


def test_a_second_server_on_the_same_data_folder_refuses(srv, jobs_dir, data_dir):
    second = Server(jobs_dir, data_dir)
    with pytest.raises(RuntimeError) as exc:
        second.start(timeout=15)
    assert "already using" in str(exc.value) and "two schedulers must never share one database" in str(exc.value)
    assert srv.get("/api/v1/alive") == {"ok": True}


def test_serve_prints_a_login_link_and_login_link_makes_another(srv):
    printed = re.search(r"log in from a browser on this machine: (\S+)", srv.log())
    assert printed and printed.group(1).startswith(srv.url + "/login?once=")
    assert Browser(srv).request("GET", printed.group(1)[len(srv.url):])[0] == 303
    out = srv.cli("login-link", "--data", str(srv.data_dir))
    assert out.returncode == 0, out.stderr
    link = out.stdout.strip()
    assert link.startswith(srv.url + "/login?once=") and link != printed.group(1)
    b = Browser(srv)
    assert b.request("GET", link[len(srv.url):])[0] == 303
    assert b.request("GET", "/jobs")[0] == 200
    missing = srv.cli("login-link", "--data", str(srv.data_dir / "nowhere"))
    assert missing.returncode == 1
    assert "no server has run with data folder" in missing.stderr and "Traceback" not in missing.stderr

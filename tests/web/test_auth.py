"""Tokens, users, one-time links and how the CLI and server find them."""

import json
import os
import stat
import subprocess
import sys

import pytest
from conftest import ROOT, Clock, Server, _kill_agents, short_tmpdir, write_job
from test_security import Browser

from apsis_lite.web.auth import (
    ONCE_TTL,
    Auth,
    UsersFile,
    ensure_local_token,
    is_loopback,
    one_time_code,
    read_local_token,
)
from apsis_lite.errors import ConfigError


T0 = 1_800_000_000.0


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# -- units ----------------------------------------------------------------------------------


def test_local_token_is_private_and_kept(tmp_path):
    data = tmp_path / "data"
    token = ensure_local_token(str(data))
    assert len(token) >= 40
    assert mode(data) == 0o700 and mode(data / "token") == 0o600
    assert ensure_local_token(str(data)) == token == read_local_token(str(data))
    # A token others could read may have leaked: replaced.
    os.chmod(data / "token", 0o644)
    fresh = ensure_local_token(str(data))
    assert fresh != token and mode(data / "token") == 0o600


def test_one_time_code_is_good_once_and_for_a_while(tmp_path):
    clock = Clock(T0)
    auth = Auth("secret-token", str(tmp_path / "users.json"), clock=clock, local_name="me")
    code = one_time_code("secret-token", now=T0)
    assert auth.redeem_once(code).name == "me"
    assert auth.redeem_once(code) is None  # used
    late = one_time_code("secret-token", now=T0)
    clock.t = T0 + ONCE_TTL + 1
    assert auth.redeem_once(late) is None  # expired
    clock.t = T0
    assert auth.redeem_once(one_time_code("another-token", now=T0)) is None  # another server's
    expires, nonce, sig = one_time_code("secret-token", now=T0).split(".")
    assert auth.redeem_once(f"{int(expires) + 30}.{nonce}.{sig}") is None  # tampered
    for junk in ("", "x", "1.2", "a.b.c.d"):
        assert auth.redeem_once(junk) is None


def test_login_throttle_doubles_the_wait_after_five_failures(monkeypatch):
    from apsis_lite.web import login_throttle
    from apsis_lite.web.login_throttle import FREE_FAILURES, MAX_WAIT, LoginThrottle

    clock = Clock(T0)
    throttle = LoginThrottle(clock=clock)
    for _ in range(FREE_FAILURES - 1):
        throttle.failed("ann", "10.0.0.1")
        assert throttle.wait("ann", "10.0.0.1") == 0  # people mistype
    waits = []
    for _ in range(14):
        throttle.failed("ann", "10.0.0.1")
        waits.append(throttle.wait("ann", "10.0.0.1"))
        clock.t += waits[-1]  # the next attempt as soon as allowed
    assert waits[:4] == [1, 2, 4, 8] and waits[-1] == MAX_WAIT
    assert throttle.wait("ann", "10.0.0.2") == 0  # another address
    assert throttle.wait("bob", "10.0.0.1") == 0  # another name
    throttle.failed("ann", "10.0.0.1")
    clock.t += MAX_WAIT / 2
    assert throttle.wait("ann", "10.0.0.1") == MAX_WAIT / 2
    throttle.succeeded("ann", "10.0.0.1")
    assert throttle.wait("ann", "10.0.0.1") == 0
    # A day without failures starts again from nothing.
    for _ in range(FREE_FAILURES):
        throttle.failed("cy", "10.0.0.1")
    clock.t += login_throttle.FORGET_AFTER + 1
    throttle.failed("cy", "10.0.0.1")
    assert throttle.wait("cy", "10.0.0.1") == 0
    # Memory stays bounded; the pairs still throttled are kept.
    monkeypatch.setattr(login_throttle, "MAX_TRACKED", 100)
    for _ in range(FREE_FAILURES):
        throttle.failed("dan", "10.0.0.9")
    for i in range(300):
        throttle.failed(f"name{i}", "10.0.0.3")
    assert len(throttle._failures) <= 100
    assert throttle.wait("dan", "10.0.0.9") > 0


def test_users_file_passwords_tokens_and_sessions(tmp_path):
    path = tmp_path / "users.json"
    users = UsersFile(str(path))
    users.add("ann", "operator", "long enough")
    assert mode(path) == 0o600
    assert "long enough" not in path.read_text() and "$argon2" in path.read_text()
    auth = Auth("local", str(path), local_name="me")
    ann = auth.check_password("ann", "long enough")
    assert (ann.name, ann.role, ann.kind) == ("ann", "operator", "password")
    assert auth.check_password("ann", "wrong one") is None
    assert auth.check_password("nobody", "long enough") is None
    token = users.issue_token("ann", "nightly script")
    assert token not in path.read_text()
    assert auth.from_bearer(token).name == "ann"  # the changed file is read again
    stamp = auth.stamp(ann)
    assert auth.from_session("ann", "password", stamp) == ann
    users.passwd("ann", "a new password")
    assert auth.from_session("ann", "password", stamp) is None
    users.remove("ann")
    assert auth.from_bearer(token) is None
    for bad in [lambda: users.add("bob", "admin", "long enough"), lambda: users.add("../x", "viewer", "long enough"),
                lambda: users.add("bob", "viewer", "short"), lambda: users.remove("nobody")]:
        with pytest.raises(ConfigError):
            bad()
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        users.load()


def test_api_tokens_are_listed_and_revoked_one_at_a_time(tmp_path):
    path = tmp_path / "users.json"
    users = UsersFile(str(path))
    users.add("ann", "operator", "long enough")
    auth = Auth("local", str(path), local_name="me")
    nightly = users.issue_token("ann", "nightly script", now=T0)
    backup = users.issue_token("ann", "backup", now=T0 + 60)
    listed = users.tokens("ann")
    assert [(label, created) for _, label, created in listed] == [("nightly script", T0), ("backup", T0 + 60)]
    nightly_id, backup_id = listed[0][0], listed[1][0]
    assert len(nightly_id) == 10 and nightly_id not in nightly  # the id is no part of the token
    assert users.revoke_token("ann", nightly_id[:6]) == nightly_id
    assert auth.from_bearer(nightly) is None and auth.from_bearer(backup).name == "ann"
    assert users.revoke_token("ann", backup) == backup_id  # the token itself will do too
    assert auth.from_bearer(backup) is None and users.tokens("ann") == []
    for which, message in [(backup_id, "ann has no token"), ("zz", "not a token id"),
                           ("alt_unknown", "ann has no token")]:
        with pytest.raises(ConfigError, match=message):
            users.revoke_token("ann", which)
    with pytest.raises(ConfigError, match="no user 'bob'"):
        users.tokens("bob")


def test_loopback_hosts():
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.10", "example.com", ""))


# -- the real server and CLI --------------------------------------------------------------------


def test_non_loopback_bind_needs_users(jobs_dir, data_dir):
    server = Server(jobs_dir, data_dir, extra_args=["--host", "0.0.0.0"])
    with pytest.raises(RuntimeError) as exc:
        server.start(timeout=15)
    assert "refusing to listen on 0.0.0.0" in str(exc.value)
    assert "apsis-lite user add NAME --role operator" in str(exc.value)
    assert "Traceback" not in str(exc.value)
    result = server.cli("user", "add", "ann", "--role", "operator", "--password-stdin", "--data", str(data_dir),
                        input="long enough\n")
    assert result.returncode == 0, result.stderr
    server.start()
    try:
        assert server.get("/api/v1/alive") == {"ok": True}
    finally:
        server.stop()


def test_user_token_then_bearer_and_waitress(jobs_dir, data_dir):
    write_job(jobs_dir, "hi", "program: {type: no-op}\n")
    server = Server(jobs_dir, data_dir, extra_args=["--server", "waitress"]).start()
    try:
        assert server.cli("user", "add", "ann", "--role", "operator", "--password-stdin", "--data",
                          str(data_dir), input="long enough\n").returncode == 0
        token = server.cli("user", "token", "ann", "--data", str(data_dir)).stdout.strip()
        status, body, _ = server.request("POST", "/api/v1/runs", {"job_id": "hi"}, token=token)
        assert status == 201, body
        listing = server.cli("user", "list", "--data", str(data_dir)).stdout
        assert listing == "ann\toperator\t1 token(s)\n"
        # Revoked: refused from the next request on, without a restart.
        tokens = server.cli("user", "tokens", "ann", "--data", str(data_dir)).stdout
        token_id = tokens.split("\t")[0]
        revoked = server.cli("user", "revoke", "ann", token_id, "--data", str(data_dir))
        assert revoked.returncode == 0 and revoked.stdout == f"revoked ann's token {token_id}\n"
        assert server.request("POST", "/api/v1/runs", {"job_id": "hi"}, token=token)[0] == 401
        again = server.cli("user", "revoke", "ann", token_id, "--data", str(data_dir))
        assert again.returncode == 1 and f"ann has no token '{token_id}'" in again.stderr
        assert "Traceback" not in again.stderr
    finally:
        server.stop()


def _cli(*args, env):
    full = {k: v for k, v in os.environ.items() if k not in ("APSIS_LITE_URL", "APSIS_LITE_TOKEN", "XDG_DATA_HOME")}
    return subprocess.run([sys.executable, "-m", "apsis_lite", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**full, **env})


@pytest.fixture
def xdg():
    import shutil
    from pathlib import Path
    d = Path(short_tmpdir("al-xdg-"))  # short: the notify socket lives in the data folder
    yield d
    _kill_agents(d / "apsis-lite")
    shutil.rmtree(d, ignore_errors=True)


def test_cli_finds_the_token_beside_server_url_and_keeps_it_from_other_servers(server, jobs_dir, xdg):
    """A server started on the default data folder: the CLI needs nothing typed."""
    write_job(jobs_dir, "hi", "program: {type: no-op}\n")
    server.data_dir = xdg / "apsis-lite"
    server.log_path = server.data_dir / "server-test.log"
    server.start()
    env = {"XDG_DATA_HOME": str(xdg)}
    result = _cli("run", "hi", env=env)
    assert result.returncode == 0, result.stderr
    # The same server by an explicit URL still gets the token; any other does not.
    assert _cli("jobs", "--url", server.url, env=env).returncode == 0
    other = server.url.replace("127.0.0.1", "localhost")
    result = _cli("jobs", "--url", other, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {other} needs a token: give one with --token or $APSIS_LITE_TOKEN")
    assert _cli("jobs", "--url", other, env={**env, "APSIS_LITE_TOKEN": server.token()}).returncode == 0
    result = _cli("jobs", "--url", other, "--token", "wrong", env=env)
    assert result.returncode == 1 and "refused the token" in result.stderr
    server.stop()


def test_auth_overhead_per_request(server):
    """Figures for the report: a Bearer request costs about what an unauthenticated one does."""
    import time
    server.start()
    n = 200

    def timed(**kw):
        t = time.perf_counter()
        for _ in range(n):
            assert server.request("GET", "/api/v1/alive", **kw)[0] == 200
        return (time.perf_counter() - t) / n * 1000

    timed(token=False)  # warm up
    bare, bearer = timed(token=False), timed()
    print(f"\n/alive: {bare:.2f} ms without a token, {bearer:.2f} ms with the local token")
    assert bearer < bare * 3 + 2, (bare, bearer)
    assert json.loads(server.request("GET", "/api/v1/stats")[1])["pid"] > 0


def test_built_in_tls_serves_https_with_a_secure_cookie(jobs_dir, data_dir, tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    config = tmp_path / "apsis-lite.yaml"
    config.write_text(f"tls_cert: {cert}\ntls_key: {key}\nallowed_hosts: [sched.example]\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test certificate, here and in the CLI
    server = Server(jobs_dir, data_dir, extra_args=["--config", str(config)]).start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        assert server.request("GET", "/api/v1/jobs")[0] == 200
        result = server.cli("jobs")
        assert result.returncode == 0, result.stderr
    finally:
        server.stop()
    import http.client
    import ssl
    # The cookie itself: Secure over TLS.
    server.start()
    try:
        host, port = server.url[len("https://"):].split(":")
        conn = http.client.HTTPSConnection(host, int(port), context=ssl.create_default_context(cafile=str(cert)))
        conn.request("GET", server.login_link()[len(server.url):])
        resp = conn.getresponse()
        resp.read()
        cookie = resp.getheader("Set-Cookie")
        assert resp.status == 303 and "Secure" in cookie and "HttpOnly" in cookie
        # HSTS for a real host name, never for loopback (it would hold for every port of it).
        assert resp.getheader("Strict-Transport-Security") is None
        for host, hsts in ((f"sched.example:{port}", "max-age=31536000"), (f"localhost:{port}", None)):
            conn.request("GET", "/api/v1/alive", headers={"Host": host})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200 and resp.getheader("Strict-Transport-Security") == hsts, host
    finally:
        server.stop()


def test_the_desktop_start_opens_a_one_time_login_link(server):
    from apsis_lite.config import load_config
    from apsis_lite.service import browser_url
    server.start()
    link = browser_url(load_config(None, data_dir=str(server.data_dir)), server.url)
    assert link.startswith(server.url + "/login?once=")
    path = link[len(server.url):]
    browser = Browser(server)
    assert browser.request("GET", path)[0] == 303
    status, body, _ = browser.request("GET", "/")
    assert status == 200 and "Log out" in body
    status, body, _ = Browser(server).request("GET", path)
    assert status == 403 and "expired or was used already" in body

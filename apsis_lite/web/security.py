"""Authentication and web security for the Flask app, in front of every request.

In order, before any view: the Host header must be one we answer to (no DNS
rebinding); the request must prove who it is from (a Bearer token, or a
browser session cookie made by the login page or a one-time link); a
state-changing request from a session must carry its CSRF token (Bearer
requests cannot be sent cross-site by a browser, so they need none); and
changing anything needs the operator role. Every response gets the
security headers. The login and logout pages are here too.
"""

import hashlib
import hmac
import logging
import math
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from apsis_lite.errors import ApsisError
from apsis_lite.web.auth import ONCE_TTL, USER_NAME, Auth, Identity, derived_key, is_loopback
from apsis_lite.web.login_throttle import LoginThrottle
from apsis_lite.web.password_checks import Busy, PasswordChecks
from apsis_lite.web.peers import local_address, peer_uid
from apsis_lite.web.session_store import SESSIONS_FILE, ServerSessions, SessionStore
from apsis_lite.web.sessions import OVERDUE_GRACE, ended, ended_message, touch

log = logging.getLogger("apsis_lite.web")

#: The session cookie's name, before a part that is this server's own (``session_cookie_name``).
SESSION_COOKIE = "apsis_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Reachable without logging in. The API's description is the same for every server
# of a version and published with it, so tools may read it without a token.
PUBLIC = {"api.alive", "api.openapi", "static", "ui.favicon", "auth.login", "auth.login_submit"}
# The pages that may start a session for someone not logged in (for the form's CSRF token).
LOGIN_FORMS = {"auth.login", "auth.login_submit"}
# Answers 401, as the API does, rather than sending a browser to the login page.
METRICS_ENDPOINT = "metrics.metrics"
# State-changing requests a viewer may send: their own preferences and session.
VIEWER_POSTS = {"ui.set_zone", "auth.logout"}
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; "
                                "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Sent over HTTPS (tls_cert, or secure_cookies behind a TLS proxy), except to
# loopback names: browsers apply it to every port of a host, and forcing
# HTTPS on all of a workstation's "localhost" for a year would break others.
HSTS = "max-age=31536000"
EXTENSION = "apsis_security"


class BadHost(ApsisError):
    status = 400


class Unauthorized(ApsisError):
    status = 401


class Forbidden(ApsisError):
    status = 403


def allowed_hosts(config) -> set:
    """Host names (without port) requests may name: loopback names, the bound host, the configured ones."""
    hosts = {"localhost", "127.0.0.1", "[::1]", "::1"}
    if config.host:
        # Even 0.0.0.0: a rebinding page sends its own name as Host, never the address listened on.
        hosts.add(f"[{config.host}]".lower() if ":" in config.host else config.host.lower())
    if not is_loopback(config.host):
        hosts.add(socket.gethostname().lower())  # this machine's own name, as colleagues type it
    hosts.update(h.lower() for h in config.allowed_hosts)
    return hosts


def host_name(host_header) -> str:
    """``example.com:5005`` -> ``example.com``; ``[::1]:5005`` -> ``[::1]``."""
    host = (host_header or "").lower()
    if host.startswith("["):
        return host[:host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def current_user():
    """The name of whoever sent this request (for run logs), or None."""
    identity = g.get("identity")
    return identity.name if identity else None


def csrf_token() -> str:
    """This browser session's CSRF token ("" for Bearer requests: they need none).

    A keyed hash of the session id, never in the cookie. Without a login
    only the login form gives the browser an id for it: a page shown to a
    stranger (a 401, say) must not set a cookie that replaces the user's.
    """
    if g.get("via") == "bearer":
        return ""
    if session.sid is None:
        if g.get("identity") is None and request.endpoint not in LOGIN_FORMS:
            return ""
        session.new_id()
    return current_app.session_interface.csrf_token(session.sid)


def csrf_matches(sent) -> bool:
    """Whether ``sent`` is this session's CSRF token."""
    expected = current_app.session_interface.csrf_token(session.sid) if session.sid else ""
    return bool(expected) and hmac.compare_digest((sent or "").encode(), expected.encode())


def safe_next(target) -> str:
    """A path on this site to redirect to (after logging in, say); ``/`` for anything else.

    Browsers drop tabs and newlines from a URL and read a backslash as a
    slash, so ``/\t/evil.example`` would take them to ``//evil.example``,
    another site: such characters, any control character, and a target that
    names a scheme or host are refused rather than cleaned up.
    """
    if (not target or not target.startswith("/") or target.startswith("//")
            or any(c == "\\" or c < " " or c == "\x7f" for c in target)):
        return "/"
    try:
        parts = urlsplit(target)
    except ValueError:
        return "/"
    return "/" if parts.scheme or parts.netloc else target


@dataclass(frozen=True)
class Gatekeeper:
    """One app's security: who it knows (``auth``), the host names it answers to, whether it
    is served over HTTPS, and the login form's throttle and password-check pool."""

    auth: Auth
    hosts: frozenset
    https: bool
    throttle: LoginThrottle
    checks: PasswordChecks
    lifetime: float  # seconds a browser session lasts from its login
    idle: float  # seconds a browser session lasts without activity

    @property
    def any_host(self) -> bool:
        return "*" in self.hosts


def gatekeeper() -> Gatekeeper:
    """The gatekeeper of the app serving this request."""
    return current_app.extensions[EXTENSION]


def install(app, config, auth):
    """Put ``auth`` in front of every request of ``app``; add the login pages."""
    https = bool(config.tls_cert) or config.secure_cookies
    configure_sessions(app, config, auth, https)
    app.extensions["apsis_auth"] = auth
    app.extensions[EXTENSION] = Gatekeeper(auth, frozenset(allowed_hosts(config)), https,
                                           LoginThrottle(clock=auth.clock), PasswordChecks(),
                                           config.session_lifetime, config.session_idle_timeout)
    app.before_request(guard)
    app.after_request(security_headers)
    app.context_processor(auth_context)
    app.register_blueprint(login_pages)


def session_cookie_name(local_token) -> str:
    """``apsis_session_`` and 8 hex digits of this server's own: two servers on one machine
    (whose cookies browsers share, as they share them across ports) keep their own logins."""
    return f"{SESSION_COOKIE}_{hmac.new(derived_key(local_token, 'cookie name'), b'', hashlib.sha256).hexdigest()[:8]}"


def configure_sessions(app, config, auth, https):
    """Browser sessions: kept on the server (``web.session_store``), named by a random id in an
    HttpOnly, SameSite=Lax cookie (Secure over HTTPS) of this server's own name that lasts
    ``session_lifetime`` from the login (see ``web.sessions``); tied to the local user whose
    browser logged in when the server listens on a loopback address."""
    app.secret_key = derived_key(auth.local_token, "session")
    store = SessionStore(os.path.join(config.data_dir, SESSIONS_FILE), derived_key(auth.local_token, "session id"),
                         config.session_lifetime + OVERDUE_GRACE, auth.clock)
    app.session_interface = ServerSessions(store, config.session_lifetime, derived_key(auth.local_token, "csrf"),
                                           peer=local_peers(config.host))
    app.config.update(
        SESSION_COOKIE_NAME=session_cookie_name(auth.local_token), SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=https, SESSION_REFRESH_EACH_REQUEST=False,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=config.session_lifetime))


def local_peers(host):
    """For a server on a loopback address: environ -> the uid of the client's local user
    (``web.peers``); None for one that listens beyond (its browsers are elsewhere)."""
    address = local_address(host) if is_loopback(host) else None
    if address is None:
        return None

    def peer(environ):
        return peer_uid(environ.get("REMOTE_ADDR") or "", environ.get("REMOTE_PORT") or 0,
                        address, environ.get("SERVER_PORT") or 0)
    return peer


# -- in front of every request ------------------------------------------------------


def guard():
    """Before every view: the Host check, who is asking, CSRF for a session, the operator role for a change."""
    gk = gatekeeper()
    if not gk.any_host and host_name(request.host) not in gk.hosts:
        # The names it does answer to (this machine's among them) are for its operator's log only.
        log.info("refused a request for host %r (allowed: %s)", host_name(request.host)[:100],
                 ", ".join(sorted(gk.hosts)))
        g.refused = True
        raise BadHost(f"this server does not answer to the host name {host_name(request.host)!r}; "
                      "its administrator can add the name to the allowed_hosts setting")
    try:
        g.identity, g.via = identify(gk)
        if request.endpoint in PUBLIC:
            return None
        if g.identity is None:
            g.refused = True
            return refuse_anonymous()
        if g.identity.kind == "metrics" and request.endpoint != METRICS_ENDPOINT:
            raise Forbidden("the metrics token may read /metrics only")
        if request.method in SAFE_METHODS:
            return None
        if g.via == "session":
            check_csrf()
        if not g.identity.can_operate and request.endpoint not in VIEWER_POSTS:
            raise Forbidden(f"{g.identity.name} is a viewer; this needs the operator role")
    except ApsisError:
        g.refused = True  # its answer sets no cookie (web.sessions)
        raise
    return None


def identify(gk):
    """(identity, "bearer" or "session") of this request, or (None, None); Unauthorized for a bad token."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        identity = gk.auth.from_bearer(token.strip()) if scheme.lower() == "bearer" else None
        if identity is None:
            raise Unauthorized("bad credentials: the Authorization header must be "
                               "'Bearer TOKEN' with a valid token")
        return identity, "bearer"
    if session.foreign_uid is not None:
        # Another port of this address received the cookie (browsers send it to every port) and
        # its program, another user's, sent it here. The user's own session goes on.
        log.warning("refused a session cookie brought by local user %s, not the one whose browser "
                    "logged in", session.foreign_uid)
        return None, None
    if "user" in session:
        now = gk.auth.clock()
        g.session_ended = ended(session, now, gk.lifetime, gk.idle)
        if g.session_ended:
            session.clear()  # the answer deletes the cookie
            session.keep = True  # and whoever brings it again hears why
            return None, None
        identity = gk.auth.from_session(session.get("user"), session.get("kind"), session.get("stamp"))
        if identity is not None:
            touch(session, now, gk.idle)
            return identity, "session"
    return None, None


def refuse_anonymous():
    """401 for the API; the login page for a browser (htmx follows HX-Redirect)."""
    message = ("authentication required: send 'Authorization: Bearer TOKEN' (the local token is in the "
               "server's data folder; 'apsis-lite user token NAME' issues one) or log in at /login")
    why = g.get("session_ended")
    if why:
        gk = gatekeeper()
        message = f"{ended_message(why, gk.lifetime, gk.idle)} ({message})"
    if request.path.startswith("/api/") or request.endpoint == METRICS_ENDPOINT:
        resp = jsonify(error=message)
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Bearer realm="apsis-lite"'
        return resp
    login = url_for("auth.login", next=request.full_path.rstrip("?"), **({"ended": why} if why else {}))
    if request.headers.get("HX-Request"):
        resp = make_response("", 401)
        resp.headers["HX-Redirect"] = login
        return resp
    if request.method in SAFE_METHODS:
        return redirect(login, 303)
    raise Unauthorized("log in first: " + message)


def check_csrf():
    if not csrf_matches(request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")


def same_origin() -> bool:
    """Whether this request's Origin, if it has one, is this server (browsers send it with a POST)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        return urlsplit(origin).netloc == request.host
    except ValueError:
        return False


def security_headers(resp):
    """After every view: the security headers; HSTS over HTTPS; no caching of what is private."""
    for name, value in SECURITY_HEADERS.items():
        resp.headers.setdefault(name, value)
    if gatekeeper().https and not is_loopback(host_name(request.host)):
        resp.headers.setdefault("Strict-Transport-Security", HSTS)
    if request.path.startswith("/api/") or "user" in session:
        resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def auth_context():
    return {"csrf_token": csrf_token, "current_identity": g.get("identity")}


# -- the login and logout pages -----------------------------------------------------

login_pages = Blueprint("auth", __name__)


def start_session(identity: Identity, auth):
    """A fresh session, under a new id (so a new CSRF token too: no fixation), for ``identity``
    and, on a loopback address, the local user whose browser this is."""
    session.clear()
    session.new_id()
    now = auth.clock()
    session.update(user=identity.name, kind=identity.kind, stamp=auth.stamp(identity),
                   since=round(now, 1), seen=round(now, 1),
                   peer=current_app.session_interface.peer_of(request.environ))


def form_page(error=None, status=200, name=""):
    resp = make_response(render_template("login.html", error=error, name=name,
                                         next=safe_next(request.values.get("next")),
                                         has_users=gatekeeper().auth.has_users()), status)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@login_pages.get("/login")
def login():
    """The login form; with ``once``, a one-time link that logs the browser in."""
    code = request.args.get("once")
    if code is not None:
        auth = gatekeeper().auth
        identity = auth.redeem_once(code)
        if identity is None:
            return form_page("This login link has expired or was used already: each link works once, "
                             f"within {ONCE_TTL // 60} minutes. For a new one, run apsis-lite login-link "
                             "on the server's machine (or start apsis-lite again), or log in below.", 403)
        start_session(identity, auth)
        return redirect(safe_next(request.args.get("next")), 303)
    why = request.args.get("ended")
    if why in ("idle", "lifetime"):
        gk = gatekeeper()
        return form_page(ended_message(why, gk.lifetime, gk.idle))
    return form_page()


@login_pages.post("/login")
def login_submit():
    """A name and password: checked off the event loop, throttled per name and address."""
    if not csrf_matches(request.form.get(CSRF_FIELD)):
        if not same_origin():
            # A page of another site posting here: no form, and no new session to replace the user's.
            g.refused = True
            raise Forbidden("refused a login form sent from another site")
        return form_page("The form had expired; please try again.", 403)
    name = request.form.get("name", "").strip()
    address = request.remote_addr or "unknown"
    if not USER_NAME.fullmatch(name):
        # No user can have this name (the rule is public): nothing to hash or count.
        log.warning("failed login as %r from %s (not a user name)", name[:64], address)
        return form_page("Wrong user name or password.", 401, name=name[:64])
    gk = gatekeeper()
    wait = math.ceil(gk.throttle.wait(name, address))
    if wait:
        resp = form_page(f"Too many failed logins as this user from your address: "
                         f"try again in {wait} s.", 429, name=name)
        resp.headers["Retry-After"] = str(wait)
        return resp
    try:
        identity = gk.auth.check_password(name, request.form.get("password", ""),
                                          run=lambda fn, *args: gk.checks.run(address, fn, *args))
    except Busy as exc:
        log.warning("refused a login as %r from %s: %s", name, address, exc)
        resp = form_page(f"{str(exc).capitalize()}.", 429, name=name)
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    if identity is None:
        gk.throttle.failed(name, address)
        log.warning("failed login as %r from %s", name, address)
        return form_page("Wrong user name or password.", 401, name=name)
    gk.throttle.succeeded(name, address)
    start_session(identity, gk.auth)
    return redirect(safe_next(request.form.get("next")), 303)


@login_pages.post("/logout")
def logout():
    session.clear()
    if request.headers.get("HX-Request"):
        resp = make_response("", 204)
        resp.headers["HX-Redirect"] = url_for("auth.login")
        return resp
    return redirect(url_for("auth.login"), 303)

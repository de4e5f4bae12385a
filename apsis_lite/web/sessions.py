"""Browser sessions: how long they last, and when their cookie is sent.

A session is a signed cookie (Flask's) holding who logged in, when
(``since``) and when they were last active (``seen``). It ends
``session_lifetime`` after the login, however busy the browser is, and
after ``session_idle_timeout`` without activity. The pages' background
polls (the heartbeat, list and output refreshes) say so with the
``X-Apsis-Poll`` header (``static/app.js``) and do not count as activity: a
tab left open does not keep a session alive. The header can only make a
request count for less, so a client gains nothing by sending it.

The cookie is sent only when the session changed (a login, a new CSRF
token, ``seen`` moved on, a logout), never merely re-issued, and never with
the answer to a refused request: a page of another site that makes the
browser send a request the server refuses must not be able to replace the
user's cookie with a new, anonymous one (which would log them out).
"""

from datetime import datetime, timezone

from flask import g, request
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature

from apsis_lite.timeutil import format_duration

POLL_HEADER = "X-Apsis-Poll"
# Background requests by endpoint, for pages loaded before the header existed.
POLL_ENDPOINTS = {"ui.ping"}
#: ``seen`` moves on at most this often (or a quarter of the idle timeout, if shorter),
#: so that a busy page does not get a new cookie with every request.
SEEN_STEP = 60.0
#: How long after its end a session's cookie is still read, to say why it was refused.
OVERDUE_GRACE = 86400


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions; the cookie expires with the session's absolute
    lifetime, and a refused request's answer sets none."""

    def __init__(self, lifetime):
        self.lifetime = lifetime

    def open_session(self, app, request):
        # Flask rejects a cookie signed longer ago than the lifetime, whole seconds rounded
        # down, which makes the session look anonymous rather than ended (no "your session
        # has ended" message). Accept a day longer and let ``ended`` judge by the signed
        # ``since`` and ``seen``.
        serializer = self.get_signing_serializer(app)
        if serializer is None:
            return None
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return self.session_class()
        try:
            return self.session_class(serializer.loads(value, max_age=self.lifetime + OVERDUE_GRACE))
        except BadSignature:
            return self.session_class()

    def get_expiration_time(self, app, session):
        since = session.get("since")
        if isinstance(since, (int, float)):
            return datetime.fromtimestamp(since + self.lifetime, timezone.utc)
        return super().get_expiration_time(app, session)

    def save_session(self, app, session, response):
        if g.get("refused") and session:
            return  # a refused request may end a session (an expired one) but never set a cookie
        super().save_session(app, session, response)


def ended(session, now, lifetime, idle):
    """Why the session has ended ("lifetime" or "idle"), or None if it is still good."""
    since = session.get("since")
    if not isinstance(since, (int, float)) or now >= since + lifetime:
        return "lifetime"
    seen = session.get("seen", since)
    if not isinstance(seen, (int, float)) or now >= seen + idle:
        return "idle"
    return None


def is_poll() -> bool:
    """Whether this request is a page's background refresh rather than the user's doing."""
    return request.headers.get(POLL_HEADER) == "1" or request.endpoint in POLL_ENDPOINTS


def touch(session, now, idle):
    """Count this request as activity (unless it is a background poll)."""
    if is_poll():
        return
    seen = session.get("seen", session.get("since", 0))
    if now - seen >= min(SEEN_STEP, idle / 4):
        session["seen"] = round(now, 1)


def ended_message(why, lifetime, idle) -> str:
    """What the login page and a refused request say about a session that has ended."""
    if why == "idle":
        return (f"Your session has ended: nothing was done for {format_duration(idle)}. "
                "Please log in again.")
    return f"Your session has ended: a login lasts {format_duration(lifetime)}. Please log in again."

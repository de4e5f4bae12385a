"""Browser sessions: how long they last, and when their cookie is sent.

A session (kept on the server, see ``web.session_store``) holds who logged
in, when (``since``) and when they were last active (``seen``). It ends
``session_lifetime`` after the login, however busy the browser is, and
after ``session_idle_timeout`` without activity. The pages' background
polls (the heartbeat, list and output refreshes) say so with the
``X-Apsis-Poll`` header (``static/app.js``) and do not count as activity: a
tab left open does not keep a session alive. The header can only make a
request count for less, so a client gains nothing by sending it.

The cookie, only a session id, is sent only when a new id is issued (a
login, the login form) or to delete it (a logout, an ended session), and
never with the answer to a refused request: a page of another site that makes the
browser send a request the server refuses must not be able to replace the
user's cookie with a new, anonymous one (which would log them out).
"""

from flask import request

from apsis_lite.timeutil import format_duration

POLL_HEADER = "X-Apsis-Poll"
# Background requests by endpoint, for pages loaded before the header existed.
POLL_ENDPOINTS = {"ui.ping"}
#: ``seen`` moves on at most this often (or a quarter of the idle timeout, if shorter),
#: so that a busy page does not rewrite the sessions file with every request.
SEEN_STEP = 60.0
#: How long after its end a session is still known, to say why it was refused.
OVERDUE_GRACE = 86400


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

"""Browser sessions kept on the server; the cookie holds only a random session id.

A session is a record in the server's ``sessions`` file (owner-only, in the
data folder, so that logins outlive a restart), found by a keyed hash of the
id: the file alone gives no usable cookie, and a new local token (a deleted
token file) makes every old id unknown. Logging out deletes the record, so
a copy of the cookie taken before stops working at once.

The CSRF token is not stored anywhere: it is a keyed hash of the session id,
so the cookie alone cannot forge a form. On a loopback address each session
also names the local user whose browser logged in (``web.peers``), and a
request bringing its cookie from another user's program is refused.
"""

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from datetime import datetime, timezone

from flask import g
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from apsis_lite.web.auth import write_private

log = logging.getLogger("apsis_lite.web")

SESSIONS_FILE = "sessions"
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


class SessionStore:
    """The sessions logged in, by keyed hash of their id; read once, written at each change.

    A record is kept ``keep`` seconds from its login (its lifetime and a
    while more, to say why an ended session was refused), then dropped.
    """

    def __init__(self, path, key, keep, clock):
        self.path, self.key, self.keep, self.clock = path, key, keep, clock
        self._lock = threading.Lock()
        self._records = self._read()

    def _read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                records = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("cannot read the sessions in %s (%s): everyone logs in again", self.path, exc)
            return {}
        return {k: v for k, v in records.items() if isinstance(v, dict)} if isinstance(records, dict) else {}

    def _hash(self, sid) -> str:
        return hmac.new(self.key, sid.encode(), hashlib.sha256).hexdigest()

    def get(self, sid):
        """A copy of session ``sid``'s record, or None."""
        with self._lock:
            record = self._records.get(self._hash(sid))
            return dict(record) if record is not None else None

    def put(self, sid, record):
        with self._lock:
            self._records[self._hash(sid)] = dict(record)
            self._save()

    def drop(self, sid):
        with self._lock:
            if self._records.pop(self._hash(sid), None) is not None:
                self._save()

    def __len__(self):
        return len(self._records)

    def _save(self):
        now = self.clock()
        self._records = {k: v for k, v in self._records.items()
                         if isinstance(v.get("since"), (int, float)) and v["since"] + self.keep > now}
        try:
            write_private(self.path, json.dumps(self._records, sort_keys=True))
        except OSError as exc:
            # Sessions still work until a restart; a logout still ends its session now.
            log.warning("cannot write the sessions to %s: %s", self.path, exc.strerror or exc)


class ServerSession(CallbackDict, SessionMixin):
    """``flask.session``: the record of the session the cookie names (empty if none), and its id."""

    def __init__(self, record=None, sid=None, foreign_uid=None):
        def on_update(self):
            self.modified = True
        super().__init__(record or {}, on_update)
        self.sid = sid
        self.stored = record is not None  # a record exists for ``sid``
        self.issued = False  # ``sid`` is new: the answer sends the cookie
        self.replaced = None  # a stored id a new one replaced (a login): its record goes
        self.keep = False  # cleared but its record stays (an ended session: say why to whoever brings it)
        self.foreign_uid = foreign_uid  # the cookie came from another local user's program
        self.modified = False

    def new_id(self):
        """Give the session a new random id (at login: no fixation; for the login form's CSRF token)."""
        if self.stored:
            self.replaced = self.sid
        self.sid = secrets.token_urlsafe(32)
        self.stored = False
        self.issued = True


class ServerSessions(SessionInterface):
    """Flask's session interface over a ``SessionStore``; the cookie expires with the
    session's absolute lifetime, is sent only when a new id is issued (or to delete it),
    and never with the answer to a refused request."""

    def __init__(self, store, lifetime, csrf_key, peer=None):
        self.store = store
        self.lifetime = lifetime
        self.csrf_key = csrf_key
        self.peer = peer  # environ -> uid of the client's local user (None: unknown); None: not tied

    def peer_of(self, environ):
        """The local user at the other end of this request, as sessions record it."""
        return self.peer(environ) if self.peer is not None else None

    def csrf_token(self, sid) -> str:
        """The CSRF token of session ``sid``: a keyed hash, so that only the server can make it."""
        digest = hmac.new(self.csrf_key, sid.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()[:32]

    def open_session(self, app, request):
        sid = request.cookies.get(self.get_cookie_name(app), "")
        if not SESSION_ID.fullmatch(sid):
            return ServerSession()
        record = self.store.get(sid)
        if record is None:
            return ServerSession(sid=sid)  # an id with no login (the login form's), or one that ended
        if self.peer is not None:
            uid = self.peer(request.environ)
            if record.get("peer") != uid:
                return ServerSession(foreign_uid=uid if uid is not None else "unknown")
        return ServerSession(record, sid)

    def save_session(self, app, session, response):
        if session.replaced:
            self.store.drop(session.replaced)
        if not session:
            if session.modified and session.sid:  # logged out, or the session ended
                if session.stored and not session.keep:
                    self.store.drop(session.sid)
                self._delete_cookie(app, response)
            elif session.issued and not g.get("refused"):
                self._set_cookie(app, response, session, None)
            return
        if g.get("refused"):
            return  # a refused request may end a session (above) but never set a cookie
        if session.modified or session.issued:
            self.store.put(session.sid, dict(session))
        if session.issued:
            since = session.get("since")
            expires = (datetime.fromtimestamp(since + self.lifetime, timezone.utc)
                       if isinstance(since, (int, float)) else None)
            self._set_cookie(app, response, session, expires)

    def _set_cookie(self, app, response, session, expires):
        response.set_cookie(self.get_cookie_name(app), session.sid, expires=expires,
                            httponly=self.get_cookie_httponly(app), domain=self.get_cookie_domain(app),
                            path=self.get_cookie_path(app), secure=self.get_cookie_secure(app),
                            samesite=self.get_cookie_samesite(app))
        response.vary.add("Cookie")

    def _delete_cookie(self, app, response):
        response.delete_cookie(self.get_cookie_name(app), domain=self.get_cookie_domain(app),
                               path=self.get_cookie_path(app), secure=self.get_cookie_secure(app),
                               httponly=self.get_cookie_httponly(app), samesite=self.get_cookie_samesite(app))
        response.vary.add("Cookie")

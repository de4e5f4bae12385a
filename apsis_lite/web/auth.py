"""Who may do what: the local token, users and their API tokens, one-time login links.

- The **local token** is a random secret the server keeps in its data folder
  (``token``, owner-only). Whoever can read it is the owner of the scheduler:
  it acts as an operator named after the OS user. The CLI on the same
  machine reads it from there, and the double-click start turns it into a
  one-time login link for the browser.
- **Users** live in a JSON file (default ``DATA/users.json``, owner-only),
  managed by ``apsis-lite user ...``: a role, an argon2 password hash and
  the SHA-256 hashes of API tokens issued for scripts (the tokens are long
  random strings, so a fast hash is enough for them and keeps each API
  request cheap; passwords get the slow, salted hash).
- **One-time links** are signed with a key derived from the local token, so
  any process that can read the token file can make one; the server refuses
  a link twice and after ``ONCE_TTL`` seconds. The links used are kept in a
  file (``used-login-links``, owner-only) until they expire, so that a
  restart does not make a used link good again.

The Flask side (sessions, CSRF, Host checks, headers) is in ``web.security``.
"""

import getpass
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass

from apsis_lite.errors import ConfigError

ROLES = ("viewer", "operator")
TOKEN_FILE = "token"
USED_LINKS_FILE = "used-login-links"
USERS_FILE = "users.json"
ONCE_TTL = 120  # seconds a one-time login link stays good
MIN_PASSWORD = 8
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
API_TOKEN_PREFIX = "alt_"
#: Hex digits of a token's hash shown as its id (``user tokens``, ``user revoke``).
TOKEN_ID_LENGTH = 10


@dataclass(frozen=True)
class Identity:
    """Who a request is from: a name for run logs, a role, and how they proved it."""

    name: str
    role: str
    kind: str  # "local" (the local token), "password" (a user's session), "token" (a user's API token)

    @property
    def can_operate(self) -> bool:
        return self.role == "operator"


# -- files with owner-only permissions --------------------------------------------


def private_dir(path):
    """Make ``path`` (and parents) and keep it owner-only (0700)."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o700)


def make_folders_private(path):
    """Make the folder ``path`` and any missing parents, each owner-only (0700);
    folders that exist already keep their mode (``/etc`` must stay as it is)."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise
        else:
            os.chmod(folder, 0o700)  # whatever the umask


def write_private(path, text):
    """Write ``text`` to ``path`` atomically, readable by the owner only (0600)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- the local token ---------------------------------------------------------------


def token_path(data_dir) -> str:
    return os.path.join(data_dir, TOKEN_FILE)


def read_local_token(data_dir):
    """The local token in ``data_dir``, or None if there is none (or it cannot be read)."""
    try:
        with open(token_path(data_dir), encoding="utf-8") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def ensure_local_token(data_dir) -> str:
    """The local token, made if missing; the folder is made 0700 and the file 0600.

    A token kept in a file others could read is replaced: it may have leaked.
    """
    private_dir(data_dir)
    path = token_path(data_dir)
    token = read_local_token(data_dir)
    if token is not None and os.stat(path).st_mode & 0o077 == 0:
        return token
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    return token


def derived_key(token, purpose) -> bytes:
    """A key for ``purpose`` (signing sessions, links) derived from the local token."""
    return hmac.new(token.encode(), f"apsis-lite {purpose}".encode(), hashlib.sha256).digest()


# -- the metrics token ----------------------------------------------------------------

#: Who the metrics token proves: it may read /metrics, and nothing else.
METRICS_READER = Identity("metrics", "metrics", "metrics")
MIN_METRICS_TOKEN = 16


def read_metrics_token(config):
    """The token in ``metrics_token_file`` (None if the setting is not set); ConfigError
    if the file cannot be read or holds too short a token."""
    path = config.metrics_token_file
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config: metrics_token_file: cannot read {path}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    if len(token) < MIN_METRICS_TOKEN or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(f"config: metrics_token_file: {path} must hold one token of at least "
                          f"{MIN_METRICS_TOKEN} printable characters without spaces")
    return token


# -- one-time login links ---------------------------------------------------------------


def _sign(token, payload) -> str:
    return hmac.new(derived_key(token, "once"), payload.encode(), hashlib.sha256).hexdigest()[:32]


def one_time_code(token, now=None) -> str:
    """A login code good once, for ``ONCE_TTL`` seconds from ``now``."""
    expires = int((time.time() if now is None else now) + ONCE_TTL)
    payload = f"{expires}.{secrets.token_urlsafe(12)}"
    return f"{payload}.{_sign(token, payload)}"


def one_time_link(base_url, token, now=None) -> str:
    """``{base_url}/login?once=CODE``: opens a browser session as the local operator."""
    return f"{base_url.rstrip('/')}/login?once={one_time_code(token, now)}"


def used_links_path(data_dir) -> str:
    return os.path.join(data_dir, USED_LINKS_FILE)


def read_used_links(path) -> dict:
    """The one-time codes used, as {nonce: expiry}, from ``path`` (lines "NONCE EXPIRY")."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    used = {}
    for line in lines:
        nonce, _, expires = line.partition(" ")
        if nonce and expires.isdigit():
            used[nonce] = int(expires)
    return used


def one_time_link_for(data_dir, base_url, now=None):
    """A one-time link for the server using ``data_dir``; None without its token file."""
    token = read_local_token(data_dir)
    return one_time_link(base_url, token, now) if token else None


# -- hosts -------------------------------------------------------------------------


def is_loopback(host) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    host = (host or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- users -------------------------------------------------------------------------


def users_path(config) -> str:
    return config.users_file or os.path.join(config.data_dir, USERS_FILE)


def hash_api_token(token) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _hasher():
    from argon2 import PasswordHasher  # lazily: only logins and `user` commands need it

    return PasswordHasher()


def check_name(name):
    if not USER_NAME.fullmatch(name or ""):
        raise ConfigError(f"bad user name {name!r}: use 1 to 64 letters, digits and . _ @ - "
                          "(starting with a letter or digit)")


def check_role(role):
    if role not in ROLES:
        raise ConfigError(f"bad role {role!r}: must be one of {', '.join(ROLES)}")


class UsersFile:
    """The users file: ``{"users": {name: {"role", "password", "tokens": {sha256: {...}}}}}``."""

    def __init__(self, path):
        self.path = path

    def load(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as f:
                jso = json.load(f)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"cannot read users file {self.path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"users file {self.path} is not valid JSON: {exc}") from None
        users = jso.get("users") if isinstance(jso, dict) else None
        if not isinstance(users, dict):
            raise ConfigError(f"users file {self.path}: expected {{\"users\": {{name: ...}}}}")
        return users

    def save(self, users):
        make_folders_private(os.path.dirname(os.path.abspath(self.path)))
        write_private(self.path, json.dumps({"users": users}, indent=2, sort_keys=True) + "\n")

    def _get(self, users, name):
        if name not in users:
            raise ConfigError(f"no user {name!r} in {self.path}")
        return users[name]

    def add(self, name, role, password):
        check_name(name)
        check_role(role)
        users = self.load()
        if name in users:
            raise ConfigError(f"user {name!r} already exists (change it with 'apsis-lite user passwd')")
        users[name] = {"role": role, "password": hash_password(password), "tokens": {}}
        self.save(users)

    def remove(self, name):
        users = self.load()
        self._get(users, name)
        del users[name]
        self.save(users)

    def passwd(self, name, password):
        users = self.load()
        self._get(users, name)["password"] = hash_password(password)
        self.save(users)

    def issue_token(self, name, label="", now=None) -> str:
        """A new API token for ``name``; only its hash is kept, so it is shown once."""
        users = self.load()
        user = self._get(users, name)
        token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        user.setdefault("tokens", {})[hash_api_token(token)] = {
            "label": label, "created": int(time.time() if now is None else now)}
        self.save(users)
        return token

    def tokens(self, name) -> list:
        """``name``'s API tokens as (id, label, created): the id is the start of
        the token's hash, which tells nothing about the token itself."""
        user = self._get(self.load(), name)
        return sorted(((digest[:TOKEN_ID_LENGTH], info.get("label", ""), info.get("created"))
                       for digest, info in (user.get("tokens") or {}).items()), key=lambda t: t[2] or 0)

    def revoke_token(self, name, which) -> str:
        """Revoke one of ``name``'s API tokens, given as its id (or the start of
        one) or as the token itself; returns its id."""
        users = self.load()
        tokens = self._get(users, name).get("tokens") or {}
        which = (which or "").strip()
        if which.startswith(API_TOKEN_PREFIX):
            found = [hash_api_token(which)] if hash_api_token(which) in tokens else []
        elif len(which) >= 4 and all(c in "0123456789abcdef" for c in which):
            found = [digest for digest in tokens if digest.startswith(which)]
        else:
            raise ConfigError(f"not a token id: {which!r} (see 'apsis-lite user tokens {name}')")
        if not found:
            raise ConfigError(f"{name} has no token {which[:TOKEN_ID_LENGTH]!r}"
                              f" (see 'apsis-lite user tokens {name}')")
        if len(found) > 1:
            raise ConfigError(f"{which!r} is the start of {len(found)} of {name}'s token ids: give more of it")
        del tokens[found[0]]
        self.save(users)
        return found[0][:TOKEN_ID_LENGTH]


def hash_password(password) -> str:
    if len(password or "") < MIN_PASSWORD:
        raise ConfigError(f"password too short: use at least {MIN_PASSWORD} characters")
    return _hasher().hash(password)


# -- deciding who a request is from --------------------------------------------------------


class Auth:
    """Checks credentials against the local token and the users file (re-read when it changes)."""

    def __init__(self, local_token, users_file, clock=time.time, local_name=None, used_links=None,
                 metrics_token=None):
        self.local_token = local_token
        self.metrics_token = metrics_token  # may read /metrics and nothing else (see read_metrics_token)
        self.users_file = UsersFile(users_file)
        self.clock = clock
        self.local_name = local_name or _os_user()
        self._lock = threading.Lock()
        self._stat = None
        self._users = {}
        self._by_token = {}
        self.used_links = used_links  # the file that keeps the used codes across restarts, if any
        # nonce -> expiry of redeemed one-time codes
        self._used_once = read_used_links(used_links) if used_links else {}

    def users(self) -> dict:
        """The users, re-read when the file changes (``user add`` needs no restart)."""
        try:
            st = os.stat(self.users_file.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stat:
                users = self.users_file.load() if stamp else {}
                self._users = users
                self._by_token = {h: name for name, u in users.items() for h in (u.get("tokens") or {})}
                self._stat = stamp
            return self._users

    def has_users(self) -> bool:
        return bool(self.users())

    def local(self) -> Identity:
        return Identity(self.local_name, "operator", "local")

    def from_bearer(self, token):
        """The identity a Bearer token proves, or None."""
        if not token:
            return None
        if hmac.compare_digest(token.encode(), self.local_token.encode()):
            return self.local()
        if self.metrics_token and hmac.compare_digest(token.encode(), self.metrics_token.encode()):
            return METRICS_READER
        users = self.users()
        name = self._by_token.get(hash_api_token(token))
        if name is None or name not in users:
            return None
        return Identity(name, users[name].get("role", "viewer"), "token")

    def check_password(self, name, password, run=None):
        """The user's identity if ``password`` is theirs, else None.

        ``run(fn, *args)`` runs the slow part, the hash (by default here and
        now; the server passes a thread pool's, see ``password_checks``).
        """
        user = self.users().get(name)
        stored = user.get("password") if user else None
        if not (run or _call)(verify_password, stored, password):
            return None
        return Identity(name, user.get("role", "viewer"), "password")

    def redeem_once(self, code):
        """The local operator if ``code`` is a good one-time code not used before, else None."""
        try:
            expires, nonce, sig = (code or "").split(".")
            expires = int(expires)
        except ValueError:
            return None
        if not hmac.compare_digest(sig.encode(), _sign(self.local_token, f"{expires}.{nonce}").encode()):
            return None
        now = self.clock()
        with self._lock:
            self._used_once = {n: e for n, e in self._used_once.items() if e >= now}
            if expires < now or expires > now + ONCE_TTL + 5 or nonce in self._used_once:
                return None
            self._used_once[nonce] = expires
            self._save_used_links()
        return self.local()

    def _save_used_links(self):
        if not self.used_links:
            return
        try:
            write_private(self.used_links, "".join(f"{n} {e}\n" for n, e in self._used_once.items()))
        except OSError as exc:
            # This run still refuses the link again; a restart before it expires would not.
            logging.getLogger("apsis_lite.web").warning(
                "cannot record a used login link in %s: %s", self.used_links, exc.strerror)

    def stamp(self, identity) -> str:
        """A value kept in a session that changes when its user's password or role does, or the
        user goes: sessions of a removed user or an old password stop working at once."""
        if identity.kind == "local":
            secret = self.local_token
        else:
            user = self.users().get(identity.name)
            if user is None:
                return ""
            secret = f"{user.get('password')}|{user.get('role')}"
        return hashlib.sha256(f"{identity.name}|{identity.role}|{secret}".encode()).hexdigest()[:24]

    def from_session(self, name, kind, stamp):
        """The identity a session names, if it is still valid, else None."""
        if kind == "local":
            identity = self.local() if name == self.local_name else None
        else:
            user = self.users().get(name)
            identity = Identity(name, user.get("role", "viewer"), "password") if user else None
        if identity is None or not stamp or not hmac.compare_digest(stamp, self.stamp(identity)):
            return None
        return identity


def verify_password(stored, password) -> bool:
    """Whether ``password`` matches the argon2 hash ``stored``. With no hash (no such
    user) it spends the same time and says no, so timing does not tell names apart."""
    from argon2.exceptions import Argon2Error, InvalidHashError
    try:
        if stored is None:
            _hasher().verify(_DUMMY_HASH(), password + "x")
            return False
        return _hasher().verify(stored, password)
    except (Argon2Error, InvalidHashError):
        return False


def _call(fn, *args):
    return fn(*args)


_dummy = []


def _DUMMY_HASH():
    if not _dummy:
        _dummy.append(_hasher().hash(secrets.token_urlsafe(16)))
    return _dummy[0]


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return f"uid{os.getuid()}"

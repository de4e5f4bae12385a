"""A small HTTP client for the JSON API, used by the CLI (stdlib only).

Every failure, from a refused connection to an error response, becomes a
``ClientError`` with a message meant for a person, so the CLI never shows a
traceback.

The server is found through an explicit URL, else ``$APSIS_LITE_URL``, else
the ``server.url`` file a server writes into the default data folder at
start-up, else ``DEFAULT_URL``.

Every request but ``/alive`` needs a token, sent as ``Authorization:
Bearer``: an explicit one, else ``$APSIS_LITE_TOKEN``, else the ``token``
file a server writes into the default data folder, but only when the URL
is the one that server wrote into ``server.url`` beside it (the local
token never goes to another server).
"""

import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_URL = "http://127.0.0.1:5005"
API_PREFIX = "/api/v1"


class ClientError(Exception):
    """The server could not be reached, or it answered with an error."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        self.status = status


def url_file() -> str:
    """``server.url`` in the default data folder, which a server there writes at start-up."""
    from apsis_lite.config import default_data_dir  # lazily: the client needs nothing else from config

    return os.path.join(default_data_dir(), "server.url")


def token_file() -> str:
    """``token`` in the default data folder: the local token of the server there (owner-only)."""
    return os.path.join(os.path.dirname(url_file()), "token")


def resolve_token(token, url):
    """The token to send to ``url``: ``token``, else ``$APSIS_LITE_TOKEN``, else the default data
    folder's token file if its server is the one at ``url``; None if there is none."""
    for candidate in (token, os.environ.get("APSIS_LITE_TOKEN")):
        if candidate and candidate.strip():
            return candidate.strip()
    local = _url_from_file()
    if local is None or local.rstrip("/") != url:
        return None
    try:
        with open(token_file(), encoding="utf-8") as f:
            return f.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _url_from_file():
    """The URL in ``url_file()``, or None if it is missing, unreadable or empty."""
    try:
        with open(url_file(), encoding="utf-8") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text.splitlines()[0].strip() if text else None


def resolve_url(url=None) -> tuple[str, str]:
    """``(url, where it came from)``: ``url``, else ``$APSIS_LITE_URL``, else
    ``server.url`` in the default data folder, else ``DEFAULT_URL``; no trailing slash."""
    env = os.environ.get("APSIS_LITE_URL", "").strip()
    if url and url.strip():
        source = "--url"
    elif env:
        url, source = env, "$APSIS_LITE_URL"
    elif from_file := _url_from_file():
        url, source = from_file, url_file()
    else:
        url, source = DEFAULT_URL, "default"
    url = url.strip()
    if "://" not in url:
        url = "http://" + url  # accept "host:port"
    return url.rstrip("/"), source


def base_url(url=None) -> str:
    """The server URL (see ``resolve_url``)."""
    return resolve_url(url)[0]


def quote_id(id_: str) -> str:
    """A job or run id as a URL path part: job ids contain ``/`` and spaces."""
    return urllib.parse.quote(str(id_), safe="/")


class Client:
    """Calls ``{url}/api/v1{path}``; ``path`` is e.g. ``/runs/r12``."""

    def __init__(self, url=None, timeout=30.0, token=None):
        self.url, self.url_source = resolve_url(url)
        self.timeout = timeout
        self.token = resolve_token(token, self.url)

    def get(self, path, **params):
        """GET, returning the decoded JSON body."""
        body, _ = self._request("GET", path, params)
        return self._json(body)

    def post(self, path, jso=None):
        """POST ``jso`` as JSON (an empty object if None), returning decoded JSON."""
        data = json.dumps({} if jso is None else jso).encode()
        body, _ = self._request("POST", path, {}, data)
        return self._json(body)

    def get_bytes(self, path, **params):
        """GET raw bytes: ``(bytes, headers)``; headers look up case-insensitively."""
        # A long poll (``wait=``) legitimately takes that long to answer.
        timeout = self.timeout + float(params.get("wait") or 0)
        return self._request("GET", path, params, timeout=timeout)

    def _request(self, method, path, params, data=None, timeout=None):
        query = urllib.parse.urlencode(
            {k: v for k, v in params.items() if v is not None}, doseq=True
        )
        url = self.url + API_PREFIX + path + ("?" + query if query else "")
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, url, self.token) from None
        except urllib.error.URLError as exc:
            raise ClientError(self._unreachable(exc.reason)) from None
        except (OSError, http.client.HTTPException) as exc:
            # Timeouts, resets and protocol errors after connecting.
            raise ClientError(self._unreachable(exc)) from None

    def _unreachable(self, reason):
        if isinstance(reason, ConnectionRefusedError):
            if self.url_source not in ("--url", "$APSIS_LITE_URL", "default"):
                # A server killed without its clean shutdown leaves the file behind.
                return (
                    f"cannot reach apsis-lite at {self.url} (read from {self.url_source}): "
                    "connection refused (is the server running? start it with 'apsis-lite serve')"
                )
            return (
                f"cannot reach apsis-lite at {self.url}: connection refused "
                "(is the server running? start it with 'apsis-lite serve')"
            )
        if isinstance(reason, (socket.timeout, TimeoutError)):
            why = "timed out"
        elif isinstance(reason, OSError) and reason.strerror:
            why = reason.strerror
        else:
            why = str(reason) or type(reason).__name__
        return f"cannot reach apsis-lite at {self.url}: {why}"

    @staticmethod
    def _http_error(exc, url, token=None):
        try:
            body = exc.read()
            msg = json.loads(body)["error"]
            if not isinstance(msg, str):
                raise TypeError
        except Exception:
            # Not our API's error shape: a proxy, or the wrong server.
            msg = f"HTTP {exc.code} {exc.reason} from {url}"
        if exc.code == 401:
            msg = (f"{url.split('/api/')[0]} refused the token; give a valid one with --token or "
                   "$APSIS_LITE_TOKEN" if token else
                   f"{url.split('/api/')[0]} needs a token: give one with --token or $APSIS_LITE_TOKEN "
                   "(a server writes its local token to the file 'token' in its data folder; "
                   "'apsis-lite user token NAME' issues one for a user)")
        return ClientError(msg, exc.code)

    def _json(self, body):
        try:
            return json.loads(body)
        except ValueError:
            raise ClientError(f"bad response from {self.url}: not JSON") from None

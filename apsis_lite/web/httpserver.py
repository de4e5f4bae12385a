"""The HTTP server under the Flask app: gevent's pywsgi (the default) or waitress, with our limits.

Both refuse, before reading it, a request whose body is larger than the
``max_request_size`` setting (413), and a request line and headers larger
than MAX_HEAD_BYTES (431; under gevent, a request line longer than
MAX_REQUEST_LINE is a 414). Whatever the server layer refuses by itself
gets the same JSON error body as the app's own errors, ``{"error":
message}``, instead of an empty or plain-text one. The app checks the body
size too (see ``web.body_limit``): a chunked body has no length
to check in advance, so it is cut off once it passes the limit.

A refused body is not read to its end (a client could send gigabytes): the
server answers, stops sending, reads and discards what arrives for at most
LINGER_SECONDS or LINGER_BYTES (so that the client, still sending, sees the
answer rather than a reset connection), and closes the connection.
"""

import http.client
import json
import socket
import time

#: Request line and headers together, at most.
MAX_HEAD_BYTES = 64 * 1024
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 * 1024 * 1024


def too_large_message(max_size, size=None) -> str:
    sent = f" ({size} bytes)" if size is not None else ""
    return (f"request body too large{sent}: this server accepts at most {max_size} bytes "
            "(the max_request_size setting)")


def head_too_large_message() -> str:
    return f"request line and headers too large: this server accepts at most {MAX_HEAD_BYTES} bytes of them"


REASONS = {400: "Bad Request", 413: "Content Too Large", 414: "URI Too Long",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented"}


def json_error_body(message) -> bytes:
    return json.dumps({"error": message}).encode()


def raw_error_response(status: int, message: str) -> bytes:
    """A whole HTTP response (status line, headers, JSON body) that closes the connection."""
    body = json_error_body(message)
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n")
    return head.encode("latin-1") + body


def linger(sock, seconds=LINGER_SECONDS, most=LINGER_BYTES):
    """Stop sending on ``sock`` and discard what the client still sends, within bounds."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        got = 0
        while got < most:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                return
            got += len(data)
    except OSError:
        pass


# -- gevent ------------------------------------------------------------------------------


class HeadTooLarge(ValueError):
    """The request line and headers are larger than MAX_HEAD_BYTES, or more than 100 header lines."""


class _HeadReader:
    """The connection's reader as ``http.client.parse_headers`` uses it, cut off after ``budget`` bytes."""

    def __init__(self, fp, budget):
        self.fp = fp
        self.left = budget

    def readline(self, limit=-1):
        want = self.left + 1 if limit is None or limit < 0 else min(limit, self.left + 1)
        line = self.fp.readline(want)
        self.left -= len(line)
        if self.left < 0:
            raise HeadTooLarge(head_too_large_message())
        return line


def gevent_server(listener, app, config, **kw):
    """A started-later ``gevent.pywsgi.WSGIServer`` for ``app`` on ``listener``, with our limits."""
    from gevent import pywsgi

    class Handler(pywsgi.WSGIHandler):
        """gevent's handler, with a bound on the headers, JSON error bodies and no reading of refused bodies."""

        refused_body = False

        def MessageClass(self, fp, *_args):  # noqa: N802 (gevent's name)
            reader = _HeadReader(fp, MAX_HEAD_BYTES - len(self.requestline or ""))
            try:
                return http.client.parse_headers(reader, _class=pywsgi.OldMessage)
            except http.client.LineTooLong:
                raise HeadTooLarge(head_too_large_message()) from None
            except http.client.HTTPException as exc:  # more than 100 header lines
                raise HeadTooLarge(f"{head_too_large_message()} ({exc})") from None

        def _handle_client_error(self, ex):
            if isinstance(ex, HeadTooLarge):
                self.log_error("(from %s) %s", self.client_address, ex)
                return "431", raw_error_response(431, str(ex))
            super()._handle_client_error(ex)  # logs it
            return "400", raw_error_response(400, f"malformed HTTP request: {str(ex)[:200] or type(ex).__name__}")

        def handle_one_request(self):
            self.refused_body = False
            result = super().handle_one_request()
            if isinstance(result, tuple):
                status, response = result
                if status == "414":
                    response = raw_error_response(
                        414, f"request line too long: this server accepts at most {pywsgi.MAX_REQUEST_LINE} "
                             "bytes of method, URL and query string")
                elif b"application/json" not in response.partition(b"\r\n\r\n")[0]:
                    response = raw_error_response(int(status), REASONS.get(int(status), "bad request"))
                # Send it here to linger before the connection closes.
                self.status = status
                try:
                    self.socket.sendall(response)
                except OSError:
                    return None
                self.log_request()
                linger(self.socket)
                return None
            if self.refused_body and self.socket is not None:
                linger(self.socket)
                return None
            return result

        def start_response(self, status, headers, exc_info=None):
            body = self.wsgi_input
            unread_chunks = body is not None and body.chunked_input and body.chunk_length != 0
            if status.startswith("413") or unread_chunks:
                # A body refused, or left unread, and possibly endless: close the
                # connection rather than read it all to reach the next request.
                # gevent skips that reading for input in an unknown state, as this is.
                self.refused_body = True
                self.close_connection = True
                if body is not None:
                    body._chunked_input_error = True
                headers = [*headers, ("Connection", "close")]
            return super().start_response(status, headers, exc_info)

    return pywsgi.WSGIServer(listener, app, handler_class=Handler, **kw)


# -- waitress ------------------------------------------------------------------------------


def waitress_server(listener, app, config):
    """A waitress server for ``app`` on ``listener`` with our limits; its own errors as JSON."""
    import waitress
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    messages = {
        413: too_large_message(config.max_request_size),
        431: head_too_large_message(),
    }

    class JSONErrorTask(ErrorTask):
        def execute(self):
            e = self.request.error
            message = messages.get(e.code) or f"{e.reason.lower()}: {e.body}"
            body = json_error_body(message)
            self.status = f"{e.code} {e.reason}"
            self.response_headers.extend([("Content-Type", "application/json"), ("Cache-Control", "no-store")])
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class Channel(HTTPChannel):
        error_task_class = JSONErrorTask

    server = waitress.create_server(
        app, sockets=[listener], threads=config.threads,
        # waitress refuses a body of max_request_body_size bytes or more: allow exactly the limit.
        max_request_body_size=config.max_request_size + 1,
        max_request_header_size=MAX_HEAD_BYTES)
    server.channel_class = Channel
    return server

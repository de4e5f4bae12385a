"""The app's bound on request bodies: the ``max_request_size`` setting, on every route.

The HTTP server refuses a body that says it is too large before the app
sees it (see ``httpserver``); here the app checks again, and a chunked body,
which has no length to check in advance, is cut off once it passes the limit.
"""

from flask import current_app, request

from apsis_lite.errors import ApsisError
from apsis_lite.web.httpserver import too_large_message


class RequestTooLarge(ApsisError):
    status = 413


class CappedInput:
    """A request body without a length (chunked), read until it passes ``max_size`` bytes:
    then RequestTooLarge. (werkzeug's own limit would quietly cut it short instead.)"""

    def __init__(self, stream, max_size):
        self.stream = stream
        self.max_size = max_size
        self.left = max_size

    def _take(self, data):
        self.left -= len(data)
        if self.left < 0:
            raise RequestTooLarge(too_large_message(self.max_size))
        return data

    def _want(self, size):
        return self.left + 1 if size is None or size < 0 else min(size, self.left + 1)

    def read(self, size=-1):
        return self._take(self.stream.read(self._want(size)))

    def readline(self, size=-1):
        return self._take(self.stream.readline(self._want(size)))


def limit_request_bodies(app, max_size):
    """Refuse a request body larger than ``max_size`` on every route, before reading it.

    A body with a Content-Length is judged by it, first thing; one without
    (chunked) is read through ``CappedInput``. Form fields, held in memory,
    have the same bound.
    """
    # One byte more for werkzeug's own cap, so that CappedInput sees a body that is too large.
    app.config.update(MAX_CONTENT_LENGTH=max_size + 1, MAX_FORM_MEMORY_SIZE=max_size)
    app.before_request(refuse_large_bodies)


def refuse_large_bodies():
    """Before every view: RequestTooLarge for a body over the limit, a capped stream for one of no known length."""
    max_size = current_app.config["MAX_FORM_MEMORY_SIZE"]  # the limit itself (see limit_request_bodies)
    size = request.content_length
    if size is not None and size > max_size:
        raise RequestTooLarge(too_large_message(max_size, size))
    if size is None:
        request.environ["wsgi.input"] = CappedInput(request.environ["wsgi.input"], max_size)

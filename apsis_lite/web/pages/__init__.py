"""The browser pages: server-rendered HTML with htmx fragments; one blueprint, ``ui``, its routes
by area in the modules beside this one.

Thin, like the API: it reads through the (read-only) store and changes
state only through the engine's operations, always with a POST. A page and
the fragment that refreshes it come from one template, the fragment alone
when htmx asks for it (``HX-Request``). Lists and the run page poll for
fresh fragments every couple of seconds (see ``static/app.js``): a poll is
one short request, so it suits waitress's fixed thread pool as well as
gevent, where a server-sent event stream would hold a thread per open tab.
"""

from flask import Blueprint

bp = Blueprint("ui", __name__)

# Each area adds its views to ``bp`` as it is imported (after ``bp`` exists).
from apsis_lite.web.pages import (  # noqa: E402, F401, I001
    rendering, same_origin, runs, overview, run, run_operations, jobs, pauses, adhoc, header,
    calendar, calendar_month, calendar_day, sanity,
)

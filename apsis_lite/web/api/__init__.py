"""The JSON API under ``/api/v1``: one blueprint, ``api``, its routes by area in the modules beside this one.

Thin by design: it reads through the read-only store and changes state only
through the engine's operations (see ``web.backend``). Errors become JSON
``{"error": message}`` with 400 (bad input), 404 (unknown), 409 (illegal
transition), through the app's error handlers (``web.app``). Every route is
described in ``openapi.yaml`` (``description``), which also says which query
parameters each takes.
"""

from flask import Blueprint, request

from apsis_lite.web.request_args import json_body

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def request_json() -> dict:
    """The JSON object this request's body holds (``{}`` for none), checked by ``json_body``."""
    return json_body(request.get_data(cache=True, parse_form_data=False))


# Each area adds its views to ``bp`` as it is imported (after ``bp`` exists).
from apsis_lite.web.api import description, status, pauses, jobs, runs, output, operations, sanity  # noqa: E402, F401, I001

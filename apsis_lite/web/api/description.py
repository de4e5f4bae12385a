"""The API's OpenAPI description, ``openapi.yaml`` beside this module: served as
``/api/v1/openapi.json``, and the one list of the query parameters each operation takes.

A query parameter an operation does not list is refused with 400 naming it,
so a mistyped name never passes silently as a default. An operation that
lists a free-form object parameter (``style: form``, exploded: its
properties are parameters of their own, as ``GET /runs`` takes args) checks
the other names itself.
"""

import functools
import os
import re

import yaml
from flask import request

from apsis_lite.errors import BadRequest
from apsis_lite.web.api import bp
from apsis_lite.web.request_args import shown

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.yaml")
# ``<job_id>``, ``<path:job_id>`` in a Flask rule; ``{job_id}`` in the description.
_RULE_VARIABLE = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")
#: Unknown names an error message lists at most.
NAMES_SHOWN = 10


@functools.cache
def description() -> dict:
    """The description, read once."""
    with open(PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


@functools.cache
def openapi_path(rule: str) -> str:
    """The description's path for a Flask rule of the API: ``/api/v1/jobs/<path:job_id>`` -> ``/jobs/{job_id}``."""
    return _RULE_VARIABLE.sub(r"{\1}", rule.removeprefix(bp.url_prefix))


def resolve(node: dict) -> dict:
    """``node``, or what its local ``$ref`` (``#/components/...``) points to."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target = description()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


@functools.cache
def query_parameters(path: str, method: str) -> tuple[tuple[str, ...], bool]:
    """(the names of the query parameters of ``method path``, whether it takes free-form ones too).

    An operation not in the description takes none: describing it is what
    lets a request send it parameters.
    """
    item = description()["paths"].get(path, {})
    operation = item.get(method.lower())
    if operation is None:
        return (), False
    params = [resolve(p) for p in item.get("parameters", []) + operation.get("parameters", [])]
    query = [p for p in params if p["in"] == "query"]
    free = any(p.get("schema", {}).get("type") == "object" and p.get("explode", True) for p in query)
    return tuple(p["name"] for p in query if p.get("schema", {}).get("type") != "object"), free


def unknown_parameters_error(unknown, names, where, others="") -> BadRequest:
    """The 400 for query parameters ``where`` (``GET /api/v1/jobs``) does not take; ``others``
    says what else it takes."""
    unknown = list(dict.fromkeys(unknown))
    listed = ", ".join(shown(n) for n in unknown[:NAMES_SHOWN])
    more = f" and {len(unknown) - NAMES_SHOWN} more" if len(unknown) > NAMES_SHOWN else ""
    takes = f"it takes {', '.join(names)}{others}" if names else "it takes none"
    noun = "parameter" if len(unknown) == 1 else "parameters"
    return BadRequest(f"unknown query {noun} {listed}{more} for {where} ({takes})")


@bp.before_request
def refuse_unknown_query_parameters():
    """Before every API view: 400 for a query parameter the operation does not list, or one
    it lists sent more than once (only one would be read)."""
    rule = request.url_rule
    if rule is None or request.method == "OPTIONS":
        return  # no such route (404 or 405 follows), or a CORS preflight
    method = "GET" if request.method == "HEAD" else request.method
    path = openapi_path(rule.rule)
    names, free = query_parameters(path, method)
    unknown = []
    for name, values in request.args.lists():
        if name not in names:
            unknown.append(name)
        elif len(values) > 1:
            raise BadRequest(f"query parameter {name} given {len(values)} times; it takes one value")
    if unknown and not free:
        raise unknown_parameters_error(unknown, names, f"{method} {bp.url_prefix}{path}")


@bp.get("/openapi.json")
def openapi():
    """This description, as JSON; open to anyone (see ``web.security.PUBLIC``)."""
    return description()

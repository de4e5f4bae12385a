"""The Flask application: the JSON API under ``/api/v1`` (``web.api``) and the pages (``web.pages``).

``create_app`` assembles them over one ``Backend`` (``web.backend``) behind
the body limit and the security checks. Errors become JSON ``{"error":
message}`` with 400 (bad input), 404 (unknown), 409 (illegal transition) in
one handler; outside ``/api/`` the same errors render as a readable page or
fragment.
"""

import logging

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from apsis_lite import paths
from apsis_lite.engine.sanity import SanityChecker
from apsis_lite.errors import ApsisError
from apsis_lite.web import api, pages, security
from apsis_lite.web.auth import Auth, ensure_local_token, read_metrics_token, used_links_path, users_path
from apsis_lite.web.backend import EXTENSION, Backend, backend
from apsis_lite.web.body_limit import limit_request_bodies
from apsis_lite.web.httpserver import too_large_message
from apsis_lite.web.metrics import Metrics
from apsis_lite.web.metrics import bp as metrics_bp
from apsis_lite.web.pages.rendering import render_error

log = logging.getLogger("apsis_lite.web")


def create_app(config, store, engine, launcher, reload_jobs=None, auth=None, sanity=None, metrics=None):
    """The WSGI app over a read ``store``, the ``engine`` and its ``launcher``.

    ``reload_jobs()`` reloads the jobs folder and says what changed. Every
    request but ``/alive`` and the login page is checked by ``auth`` (by
    default: the local token in the data folder, the users file and the
    metrics token); it is ``app.extensions["apsis_auth"]``. ``sanity`` and
    ``metrics``: the server's sanity checker and metrics (made here, checking
    only when asked and counting nothing over time, when not given).
    """
    app = Flask(__name__, template_folder=paths.templates_dir(), static_folder=paths.static_dir())
    if auth is None:
        auth = Auth(ensure_local_token(config.data_dir), users_path(config),
                    used_links=used_links_path(config.data_dir), metrics_token=read_metrics_token(config))
    if sanity is None:
        sanity = SanityChecker(config, store, engine, launcher, clock=engine.clock)
    if metrics is None:
        metrics = Metrics(config, store, engine, sanity)
    app.extensions[EXTENSION] = Backend(config, store, engine, launcher, reload_jobs, sanity=sanity,
                                        metrics=metrics)
    limit_request_bodies(app, config.max_request_size)
    security.install(app, config, auth)
    app.json.sort_keys = False
    api.description.description()  # read now: a broken install fails at start, not in every API request
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(metrics_bp)
    app.register_error_handler(ApsisError, apsis_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, internal_error)
    return app


def error(message, status):
    """The error as the client reads it: JSON under ``/api/``, else a page or fragment."""
    if request.path.startswith("/api/") or request.path == "/metrics":
        return jsonify(error=message), status
    return render_error(message, status)


def apsis_error(exc):
    resp = error(str(exc), exc.status)
    if exc.status == 503:  # the database cannot be written now: worth trying again soon
        resp = current_app.make_response(resp)
        resp.headers["Retry-After"] = "5"
    return resp


def http_error(exc):
    if exc.code == 413:  # werkzeug's, for a chunked body that ran past the limit
        return error(too_large_message(backend().config.max_request_size), 413)
    return error(f"{exc.name}: {exc.description}", exc.code)


def internal_error(exc):
    log.exception("internal error serving %s %s", request.method, request.path)
    return error(f"internal error: {type(exc).__name__}; see the server log", 500)

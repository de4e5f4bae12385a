"""The web side: the JSON API, the htmx pages, authentication, and the HTTP servers.

``app.create_app`` assembles a Flask app over one ``backend.Backend`` (the
read store, the engine, its launcher, the config): the ``api`` blueprint
(``/api/v1``, in ``api/``), the ``ui`` blueprint (the pages, in ``pages/``)
and the login pages, behind ``body_limit`` and ``security``. ``httpserver``
runs it under gevent or waitress.
"""

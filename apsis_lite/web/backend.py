"""What the views work on: this app's read store, engine, launcher and settings.

``create_app`` keeps one ``Backend`` in ``app.extensions["apsis_lite"]``;
every view reaches it through ``backend()``, so the routes are plain
module-level functions and one process can serve several apps (as the tests
and benchmarks do).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from apsis_lite.config import Config
    from apsis_lite.engine.core import Engine
    from apsis_lite.engine.launcher import LocalLauncher
    from apsis_lite.engine.sanity import SanityChecker
    from apsis_lite.web.metrics import Metrics
    from apsis_lite.store.database import Store

EXTENSION = "apsis_lite"


@dataclass(frozen=True)
class Backend:
    """The parts a request may use: it reads through ``store`` (read-only) and changes
    state only through the ``engine``'s operations."""

    config: Config
    store: Store
    engine: Engine
    launcher: LocalLauncher
    #: Reloads the jobs folder and says what changed; None where the server cannot.
    reload_jobs: Callable[[], dict] | None = None
    #: When the app was made (epoch seconds), for ``/api/v1/stats``' uptime.
    started: float = field(default_factory=time.time)
    #: The sanity checker (``/api/v1/sanity``, the /sanity page and the banner).
    sanity: SanityChecker | None = None
    #: What ``/metrics`` serves.
    metrics: Metrics | None = None


def backend(app=None) -> Backend:
    """The backend of ``app``, by default the app serving this request."""
    return (app or current_app).extensions[EXTENSION]

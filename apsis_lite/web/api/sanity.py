"""``/sanity``: what the sanity checker finds, checked now."""

from apsis_lite.web.api import bp
from apsis_lite.web.backend import backend


@bp.get("/sanity")
def sanity():
    """Check now: ``ok``, ``counts`` by kind, ``findings`` (each with ``kind``, ``run_id``
    or ``job_id``, ``reason``, ``since``) and ``problems`` (checks that could not be done)."""
    return backend().sanity.check().to_jso()

"""Whether the server is well: ``/alive`` for monitors and load balancers, ``/stats`` for people."""

import os
import time

from apsis_lite.web.api import bp
from apsis_lite.web.backend import backend


@bp.get("/alive")
def alive():
    """200 while the engine passes; 503 with the reason when it is stopped, stuck or cannot write."""
    problems = backend().engine.health.problems()
    if problems:
        return {"ok": False, "error": "; ".join(problems), "problems": problems}, 503
    return {"ok": True}


@bp.get("/stats")
def stats():
    b = backend()
    engine = b.engine
    return {
        **b.store.stats(),
        "jobs": len(engine.jobs),
        "job_errors": len(engine.job_errors),
        "pid": os.getpid(),
        "uptime": round(time.time() - b.started, 3),
        "pauses": [p.to_jso() for p in engine.pauses],
        "health": engine.health.to_jso(),
    }

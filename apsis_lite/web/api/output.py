"""A run's output: whole, streamed until the run ends; or a chunk from an offset, waiting a while for more."""

import time

from flask import Response, request

from apsis_lite.model.runs import format_run_id, parse_run_id
from apsis_lite.web.api import bp
from apsis_lite.web.backend import backend
from apsis_lite.web.request_args import float_arg, int_arg
from apsis_lite.web.run_output import output_chunk

OUTPUT_CHUNK = 1 << 20
MAX_WAIT = 30.0


@bp.get("/runs/<run_id>/output")
def run_output(run_id):
    """Without ``offset``, the whole output; with it, the bytes from there (``limit`` at most),
    waiting up to ``wait`` seconds for some; headers say the run's state and where the next chunk begins."""
    b = backend()
    rid = parse_run_id(run_id)
    # Checked even when unused (no offset), so that a wrong one is never silently ignored.
    offset = int_arg(request.args, "offset", 0, 0)
    size = int_arg(request.args, "limit", OUTPUT_CHUNK, 1, OUTPUT_CHUNK)
    wait = float_arg(request.args, "wait", 0.0, 0.0, MAX_WAIT)
    run = b.store.get_run(rid)
    if "offset" not in request.args:
        return whole_output(run)
    deadline = time.monotonic() + wait
    while True:
        run = b.store.get_run(rid)
        data, complete = output_chunk(b.store, b.launcher, run, offset, size)
        if data or complete or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    headers = {"X-Run-State": run.state, "X-Output-Complete": "1" if complete else "0",
               "X-Output-Offset": str(offset + len(data))}
    return Response(data, mimetype="application/octet-stream", headers=headers)


def whole_output(run):
    """The whole output as text, streamed chunk by chunk until the end known when each chunk is read."""
    store, launcher = backend().store, backend().launcher

    def chunks():
        offset = 0
        while True:
            data, complete = output_chunk(store, launcher, store.get_run(run.run_id), offset, OUTPUT_CHUNK)
            if data:
                yield data
                offset += len(data)
            if complete or not data:
                return
    name = f"{format_run_id(run.run_id)}-output.txt"
    return Response(chunks(), content_type="text/plain; charset=utf-8",
                    headers={"Content-Disposition": f'inline; filename="{name}"',
                             "X-Run-State": run.state})

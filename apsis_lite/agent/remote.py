"""The agent's face to a server on another machine: ``python3 agent-HASH.pyz remote STATE_DIR``.

The server reaches a remote host only through ``ssh``; each call runs this
command there, with one JSON request on stdin and one JSON reply on stdout.
It acts on run folders under ``STATE_DIR/runs/`` with the same files and
rules as locally (spec, claim, pid, output, result, stop), and starts the
same agent, detached in its own session (``AgentClient`` does that), for
``STATE_DIR/agent/``: runs outlive both the command and the ssh connection.

Requests (``{"op": ..., ...}``):

``start``   ``runs: {RUN_ID: spec}``: write each spec (the login's
            environment under the spec's ``env``; no ``cwd`` means the
            home folder) and ask the agent to start them all; replies
            ``{RUN_ID: null | error}``
``poll``    ``runs: {RUN_ID: offset}``, ``cap``, ``remove: [RUN_ID]``:
            remove finished folders, then, per run: whether a shepherd
            holds it, its claim, pid, result, output size and the output
            bytes from ``offset`` (base64, at most ``cap``), and whether
            the host restarted since the run was started
``stop``    ``runs: {RUN_ID: [signal, grace_period]}``: ``request_stop``
``signal``  ``runs: {RUN_ID: signal}``: ``send_signal``
``revoke``  ``runs: [RUN_ID]``: True for each run that provably never started

Every reply also has ``boot_id``, the host's. A run id is ``r`` and digits:
nothing in a request names a path.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys

from apsis_lite.agent.client import AgentClient, request_stop, send_signal
from apsis_lite.agent.protocol import (
    OUTPUT, PID, RESULT, SHEPHERD, SPEC, SPEC_CLAIMED, STOP, atomic_write_json, boot_id, is_alive,
    read_json, revoke, write_spec,
)

#: The boot id when the run was started, in its remote folder.
STARTED_ON = "boot.json"
_RUN_ID = re.compile(r"r[0-9]{1,18}")


class RequestError(ValueError):
    """A request this command cannot act on."""


def _run_dir(state_dir: str, run_id) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise RequestError(f"not a run id: {run_id!r}")
    return os.path.join(state_dir, "runs", run_id)


_clients: dict = {}


def _agent_client(state_dir: str) -> AgentClient:
    """The client of the agent for ``state_dir`` (one per process: a session keeps it open)."""
    if state_dir not in _clients:
        # This very zipapp (or module) serves as the agent: ``python3 FILE STATE_DIR``.
        entry = os.path.abspath(sys.argv[0])
        command = [sys.executable, entry] if entry.endswith(".pyz") else [sys.executable, "-m", "apsis_lite.agent"]
        _clients[state_dir] = AgentClient(os.path.join(state_dir, "agent"), command)
    return _clients[state_dir]


def start(state_dir: str, request: dict) -> dict:
    runs = request.get("runs") or {}
    home = os.path.expanduser("~")
    this_boot = boot_id()
    paths, replies = [], {}
    for run_id, spec in runs.items():
        path = _run_dir(state_dir, run_id)
        if os.path.exists(os.path.join(path, SPEC_CLAIMED)) or os.path.exists(os.path.join(path, SHEPHERD)):
            replies[run_id] = None  # a start sent again: it has started already
            continue
        # A revoked spec was never claimed (revoking and claiming are renames of one file):
        # a start after it is a new one, written afresh, as locally.
        if os.path.exists(os.path.join(path, SPEC)):
            # Sent again (a broken connection): ask again, never write it again, since a
            # spec written after a shepherd claimed the first could be claimed a second time.
            paths.append((run_id, path))
            continue
        spec = dict(spec)
        env = dict(os.environ)
        env.update(spec.get("env") or {})
        spec["env"] = env
        spec["cwd"] = spec.get("cwd") or home
        spec["notify"] = None  # no server here: the shepherd makes its result durable itself
        os.makedirs(path, mode=0o700, exist_ok=True)
        atomic_write_json(os.path.join(path, STARTED_ON), {"boot_id": this_boot}, durable=False)
        write_spec(path, spec)
        paths.append((run_id, path))
    if paths:
        results = _agent_client(state_dir).start_many([path for _, path in paths])
        for (run_id, _), result in zip(paths, results):
            replies[run_id] = str(result) if isinstance(result, Exception) else None
    return {"runs": replies}


def _read_from(path: str, offset: int, cap: int) -> bytes:
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            return file.read(cap)
    except OSError:
        return b""


def poll(state_dir: str, request: dict) -> dict:
    for run_id in request.get("remove") or ():
        shutil.rmtree(_run_dir(state_dir, run_id), ignore_errors=True)
    cap = max(0, int(request.get("cap", 1 << 20)))
    this_boot = boot_id()
    replies = {}
    for run_id, offset in (request.get("runs") or {}).items():
        path = _run_dir(state_dir, run_id)
        if not os.path.isdir(path):
            replies[run_id] = {"exists": False}
            continue
        # Liveness before the result, as locally: "not alive and no result" is never a race.
        alive = is_alive(path)
        result = read_json(path, RESULT)
        try:
            size = os.path.getsize(os.path.join(path, OUTPUT))
        except OSError:
            size = 0
        data = _read_from(os.path.join(path, OUTPUT), int(offset), cap) if size > int(offset) else b""
        started_on = (read_json(path, STARTED_ON) or {}).get("boot_id")
        try:
            pending = os.path.getmtime(os.path.join(path, SPEC))
        except OSError:
            pending = None
        replies[run_id] = {
            "exists": True, "alive": alive, "result": result, "pid": read_json(path, PID),
            "claimed": os.path.exists(os.path.join(path, SPEC_CLAIMED))
            or os.path.exists(os.path.join(path, SHEPHERD)),
            "pending": pending is not None, "stop": os.path.exists(os.path.join(path, STOP)),
            "size": size, "output": base64.b64encode(data).decode("ascii"),
            "rebooted": bool(started_on and this_boot and started_on != this_boot),
        }
    return {"runs": replies}


def stop(state_dir: str, request: dict) -> dict:
    return {"runs": {run_id: request_stop(_run_dir(state_dir, run_id), sig, float(grace))
                     for run_id, (sig, grace) in (request.get("runs") or {}).items()}}


def signal(state_dir: str, request: dict) -> dict:
    return {"runs": {run_id: send_signal(_run_dir(state_dir, run_id), sig)
                     for run_id, sig in (request.get("runs") or {}).items()}}


def revoke_runs(state_dir: str, request: dict) -> dict:
    replies = {}
    for run_id in request.get("runs") or ():
        path = _run_dir(state_dir, run_id)
        claimed = os.path.exists(os.path.join(path, SPEC_CLAIMED)) or os.path.exists(os.path.join(path, SHEPHERD))
        replies[run_id] = revoke(path) or (not claimed and not os.path.exists(os.path.join(path, SPEC)))
    return {"runs": replies}


OPS = {"start": start, "poll": poll, "stop": stop, "signal": signal, "revoke": revoke_runs}


def answer(state_dir: str, line: bytes) -> dict:
    """The reply to one request (a JSON document); RequestError for one that cannot be acted on."""
    try:
        request = json.loads(line or b"{}")
        if not isinstance(request, dict) or request.get("op") not in OPS:
            raise RequestError(f"unknown request: {str(request)[:80]}")
        os.makedirs(os.path.join(state_dir, "runs"), mode=0o700, exist_ok=True)
        reply = OPS[request["op"]](state_dir, request)
    except (ValueError, TypeError, AttributeError) as exc:
        raise RequestError(str(exc)) from None
    reply["boot_id"] = boot_id()
    return reply


def serve(state_dir: str) -> int:
    """``--serve``: a request per line on stdin, a reply per line on stdout, until stdin ends
    (the server's ssh connection closed). Saves a server a Python start per request."""
    out = sys.stdout.buffer
    out.write(json.dumps({"ready": True, "boot_id": boot_id()}).encode() + b"\n")
    out.flush()
    for line in sys.stdin.buffer:
        try:
            reply = answer(state_dir, line)
        except RequestError as exc:
            reply = {"error": f"bad request: {exc}"}
        out.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
        out.flush()
    return 0


def main(argv: list[str]) -> int:
    """``remote STATE_DIR``: one request on stdin, one reply on stdout, exit 2 for a bad
    request; ``remote STATE_DIR --serve``: requests and replies a line each (``serve``)."""
    if len(argv) not in (1, 2) or argv[1:] not in ([], ["--serve"]):
        print("usage: agent.pyz remote STATE_DIR [--serve]  (JSON requests on stdin)", file=sys.stderr)
        return 2
    state_dir = os.path.abspath(os.path.expanduser(argv[0]))
    if argv[1:] == ["--serve"]:
        return serve(state_dir)
    try:
        reply = answer(state_dir, sys.stdin.buffer.read())
    except RequestError as exc:
        print(f"bad request: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(reply, separators=(",", ":")))
    sys.stdout.flush()
    return 0

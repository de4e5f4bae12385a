"""The agent: a small detached process that starts runs so they outlive the server.

Why this exists
---------------
The scheduler server holds SQLite connections and runs gevent, so it must never
fork (a forked copy of an open database or a gevent hub is a corruption risk),
and the programs it starts must keep running when the server stops or crashes.
So the server hands each run to this agent over a Unix socket. The agent forks
one *shepherd* per run (a fork, about a millisecond, rather than a new
interpreter, 30+ ms: bursts of a thousand runs must start in about a second).
The shepherd puts itself in its own session, spawns the program in another
session, captures its output, and writes the outcome into the run's folder.
Neither the agent nor the server is needed for a run to finish and be
recorded. A shepherd that has finished a run waits, idle, for the agent to
hand it another: forking is the expensive part.

The parts
---------
``protocol``     the run folder's files, the state folder's, the socket lines
                 (and the recovery rules the server follows from them)
``server``       the agent process: serves start requests on ``agent.sock``
``pool``         its shepherds: forked, handed runs when idle, retired
``shepherd``     one run's supervision, claim to result; a shepherd's life
``program``      the run's program and its process group: spawn, stop, timeout
``sink``         the run's output on disk, within its head and tail caps
``state_files``  shepherd.json and pid.json, late on a full disk
``full_disk``    which errors mean no room, and when to try again
``client``       the server's side: ``AgentClient``, ``request_stop``, ``send_signal``
``processes``, ``files``, ``log``: /proc lookups, atomic writes, the log lines
``__main__``     ``python -m apsis_lite.agent STATE_DIR``

Self-contained
--------------
The package is stdlib only and imports nothing from ``apsis_lite`` outside
``apsis_lite.agent``: it is meant to run beside the programs, possibly on
another machine, copied there on its own (as a zipapp, say, with
``__main__`` as its entry point). It is cheap to import: the agent imports it
at each start, and the server imports the client helpers from a
gevent-patched process (they only use ``socket``, ``os`` and ``time`` calls,
which gevent patches).

The agent process imports neither ``logging`` nor ``threading``: each
registers a handler that runs Python code in every forked child, and in a
child every object that Python code touches costs a page fault (a copy of a
page shared with the agent), a few microseconds each. Without them the fork
itself costs a new shepherd 80 faults rather than 230, and its whole first
run about 515 rather than 590.

This module is the agent's face to the server side: the names below are what
the engine, the command line and the tests use, importable as
``from apsis_lite.agent import NAME``.
"""

from apsis_lite.agent.client import AgentClient, AgentError, request_stop, send_signal
from apsis_lite.agent.processes import exited_unreaped, group_members
from apsis_lite.agent.program import KILL_WAIT, SETTLE_POLL_MAX, SETTLE_POLL_MIN
from apsis_lite.agent.protocol import (
    OUTPUT, PID, RESULT, SHEPHERD, SPEC, SPEC_CLAIMED, SPEC_REVOKED, STOP, boot_id, dropped_marker,
    is_alive, read_json, revoke, signal_from_name, write_spec,
)
from apsis_lite.agent.server import main

__all__ = [
    "AgentClient", "AgentError", "request_stop", "send_signal",
    "exited_unreaped", "group_members", "KILL_WAIT", "SETTLE_POLL_MAX", "SETTLE_POLL_MIN",
    "OUTPUT", "PID", "RESULT", "SHEPHERD", "SPEC", "SPEC_CLAIMED", "SPEC_REVOKED", "STOP",
    "boot_id", "dropped_marker", "is_alive", "read_json", "revoke", "signal_from_name", "write_spec",
]

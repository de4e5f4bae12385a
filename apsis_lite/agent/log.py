"""The agent's log: ``logging``'s interface without importing ``logging``.

The agent process imports neither ``logging`` nor ``threading``: each
registers a handler that runs Python code in every forked child, and in a
child every object that Python code touches costs a page fault (see the
package docstring).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "exception": 40}


class _Log:
    """``logging``'s interface for the agent package, without importing
    ``logging`` into the agent.

    In a process that has ``logging`` (the server, tests) it is the standard
    logger ``apsis_lite.agent``; in the agent and its shepherds it writes one
    line per message, INFO and up, to stderr (the agent's log file).
    """

    name = "apsis_lite.agent"

    def __getattr__(self, method):
        if method not in _LEVELS:
            raise AttributeError(method)

        def emit(msg, *args):
            logging = sys.modules.get("logging")
            if logging is not None:
                getattr(logging.getLogger(self.name), method)(msg, *args)
            elif _LEVELS[method] >= 20:
                _write_log_line(method, msg % args if args else msg, method == "exception")

        return emit


def _write_log_line(level: str, text: str, with_traceback: bool) -> None:
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now % 1 * 1000):03d}"
    line = f"{stamp} {os.getpid()} {'ERROR' if level == 'exception' else level.upper()} {_Log.name}: {text}\n"
    if with_traceback and sys.exc_info()[0] is not None:
        import traceback
        line += traceback.format_exc()
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line)
        sys.stderr.flush()


log = _Log()

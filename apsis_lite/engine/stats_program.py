"""The in-server program type ``apsis-lite-stats``, apsis's internal ``stats`` program.

A run records the server's figures as one line of JSON: its output, and,
with ``path:``, a line appended to that file (as apsis's does). The figures
are the ones ``/api/v1/stats`` shows that the database holds, plus the
server process's own usage.
"""

import json
import os
import resource
import time
from dataclasses import dataclass
from typing import ClassVar

from apsis_lite.model.fields import nonempty_text
from apsis_lite.model.programs import Outcome, ServerProgram
from apsis_lite.model.registry import PROGRAMS
from apsis_lite.store.database import Store
from apsis_lite.timeutil import to_iso


def server_stats(data_dir) -> dict:
    """The server's figures: runs by state, the database's size, actions due, the process's usage."""
    store = Store(os.path.join(data_dir, "apsis-lite.db"), migrate=False)
    try:
        space = store.space()
        figures = {**store.stats(), "pending_actions": store.pending_action_count(),
                   "database_bytes": space["pages"] * space["page_size"],
                   "database_free_bytes": space["free_pages"] * space["page_size"]}
    finally:
        store.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"time": to_iso(time.time()), "pid": os.getpid(), **figures,
            "rusage_maxrss": usage.ru_maxrss * 1024, "rusage_utime": usage.ru_utime,
            "rusage_stime": usage.ru_stime}


@PROGRAMS.register("apsis-lite-stats", aliases=["apsis.program.internal.stats.StatsProgram"])
@dataclass(frozen=True, kw_only=True)
class StatsProgram(ServerProgram):
    """Records the server's figures as a line of JSON: the run's output, and appended to ``path``.

    ``path`` (may be a template) is written by the server's user, as any of
    its programs could; a relative one is in the data folder.
    """

    type_name: ClassVar[str] = "apsis-lite-stats"

    path: str | None = None

    @classmethod
    def _read(cls, f, allow_templates):
        return {**super()._read(f, allow_templates), "path": f.take("path", nonempty_text, None)}

    def to_jso(self):
        jso = super().to_jso()
        if self.path is not None:
            jso["path"] = self.path
        return jso

    def describe(self):
        return "record the server's figures" + (f" in {self.path}" if self.path else "")

    def run(self, context):
        line = json.dumps(server_stats(context.data_dir), sort_keys=True) + "\n"
        if self.path is not None:
            path = os.path.join(context.data_dir, self.path)  # an absolute path stays as it is
            try:
                with open(path, "a") as file:
                    file.write(line)
            except OSError as exc:
                return Outcome(success=False, message=f"cannot append to {path}: {exc.strerror}", output=line)
        return Outcome(message="recorded the server's figures" + (f" in {path}" if self.path else ""),
                       output=line)

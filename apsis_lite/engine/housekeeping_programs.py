"""Built-in in-server program types for a job to do the server's housekeeping, as apsis's
internal archive and vacuum programs do: ``apsis-lite-prune``, ``apsis-lite-archive`` and
``apsis-lite-vacuum``.

Each runs in an in-server worker thread (see ``inserver``) on its own connection to
the server's database, in the same short batches as the background task, so that
the engine's writes go on between them; a stop is noticed between batches.
"""

import json
import os
import time
from dataclasses import dataclass
from typing import ClassVar

# apsis's third internal program, stats, registers with these.
import apsis_lite.engine.stats_program  # noqa: F401
from apsis_lite.engine.housekeeping import Policy, archive_dir, archive_file_name, give_back_space, prune
from apsis_lite.model.fields import SpecError, duration, positive_duration
from apsis_lite.model.programs import Outcome, ServerProgram
from apsis_lite.model.registry import PROGRAMS
from apsis_lite.store.database import Store

#: Sleep between batches: the engine's writes come first.
PAUSE = 0.005


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number of at least 0, not {value!r}")
    return value


def _open(context):
    return Store(os.path.join(context.data_dir, "apsis-lite.db"), migrate=False)


def _outcome(tally, archived=False, dry_run=False):
    return Outcome(message=tally.describe(dry_run=dry_run, archived=archived),
                   output=json.dumps(tally.to_jso()) + "\n")


def _pass(context, policy):
    store = _open(context)
    try:
        tally = prune(store, policy, time.time(), between=lambda: time.sleep(PAUSE),
                      stopping=context.stopping.is_set)
        tally.pages_freed = give_back_space(store, between=lambda: time.sleep(PAUSE),
                                            stopping=context.stopping.is_set)
        return tally
    finally:
        store.close()


@PROGRAMS.register("apsis-lite-prune")
@dataclass(frozen=True, kw_only=True)
class PruneProgram(ServerProgram):
    """Removes finished runs older than ``older_than`` and the output of those older than
    ``output_older_than``, sparing each job's ``keep_per_job`` latest; then gives back space."""

    type_name: ClassVar[str] = "apsis-lite-prune"
    default_timeout: ClassVar[float] = 3600.0

    older_than: float | None = None
    output_older_than: float | None = None
    keep_per_job: int = 10

    @classmethod
    def _read(cls, f, allow_templates):
        out = {**super()._read(f, allow_templates),
               "older_than": f.take("older_than", positive_duration, None),
               "output_older_than": f.take("output_older_than", positive_duration, None),
               "keep_per_job": f.take("keep_per_job", _count, 10)}
        if out["older_than"] is None and out["output_older_than"] is None:
            raise SpecError("older_than", "give older_than, output_older_than, or both")
        return out

    def to_jso(self):
        jso = {**super().to_jso(), "keep_per_job": self.keep_per_job}
        for key in ("older_than", "output_older_than"):
            if getattr(self, key) is not None:
                jso[key] = getattr(self, key)
        return jso

    def describe(self):
        return "prune runs and output past their age"

    def run(self, context):
        policy = Policy(runs_older_than=self.older_than, output_older_than=self.output_older_than,
                        keep_per_job=self.keep_per_job)
        return _outcome(_pass(context, policy))


@PROGRAMS.register("apsis-lite-archive", aliases=["apsis.program.internal.archive.ArchiveProgram"])
@dataclass(frozen=True, kw_only=True)
class ArchiveProgram(ServerProgram):
    """Moves finished runs older than ``older_than`` (apsis: ``age``) to archive files, at most
    ``count`` per run; into the file named ``path`` in DATA/archive if given, else DATA/archive/runs-YYYY-MM.db by month."""

    type_name: ClassVar[str] = "apsis-lite-archive"
    default_timeout: ClassVar[float] = 3600.0

    older_than: float
    keep_per_job: int = 10
    count: int | None = None
    path: str | None = None

    @classmethod
    def _read(cls, f, allow_templates):
        age = f.take("age", duration, None)  # apsis's name, in seconds
        older = f.take("older_than", positive_duration, None)
        if (age is None) == (older is None):
            raise SpecError("older_than", "give older_than (or apsis's age), once")
        return {**super()._read(f, allow_templates), "older_than": older if older is not None else age,
                "keep_per_job": f.take("keep_per_job", _count, 10),
                "count": f.take("count", _count, None), "path": f.take("path", archive_file_name, None)}

    def to_jso(self):
        jso = {**super().to_jso(), "older_than": self.older_than, "keep_per_job": self.keep_per_job}
        for key in ("count", "path"):
            if getattr(self, key) is not None:
                jso[key] = getattr(self, key)
        return jso

    def describe(self):
        return f"archive runs older than {self.older_than:g} s"

    def run(self, context):
        folder = archive_dir(context.data_dir)
        path = None if self.path is None else os.path.join(folder, self.path)
        policy = Policy(runs_older_than=self.older_than, keep_per_job=self.keep_per_job,
                        archive_dir=folder, archive_file=path, max_runs=self.count)
        return _outcome(_pass(context, policy), archived=True)


@PROGRAMS.register("apsis-lite-vacuum", aliases=["apsis.program.internal.vacuum.VacuumProgram"])
@dataclass(frozen=True, kw_only=True)
class VacuumProgram(ServerProgram):
    """Gives the database's free pages back to the file system, a few MiB per step."""

    type_name: ClassVar[str] = "apsis-lite-vacuum"
    default_timeout: ClassVar[float] = 3600.0

    def describe(self):
        return "give the database's free space back"

    def run(self, context):
        store = _open(context)
        try:
            space = store.space()
            if space["auto_vacuum"] != "incremental":
                return Outcome(success=False, message=(
                    "the database gives no space back while the server runs (auto_vacuum is "
                    f"{space['auto_vacuum']}); stop the server once and run 'apsis-lite vacuum'"))
            freed = give_back_space(store, between=lambda: time.sleep(PAUSE), stopping=context.stopping.is_set)
            return Outcome(message=f"gave back {freed} free pages ({freed * space['page_size']} bytes)")
        finally:
            store.close()

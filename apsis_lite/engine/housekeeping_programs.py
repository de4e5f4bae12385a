"""Built-in in-server program types for a job to do the server's housekeeping, as apsis's
internal archive and vacuum programs do: ``apsis-lite-prune``, ``apsis-lite-archive`` and
``apsis-lite-vacuum``.

Each runs in an in-server worker thread (see ``inserver``) on its own connection to
the server's database, in the same short batches as the background task, so that
the engine's writes go on between them; a stop is noticed between batches.
"""

import itertools
import json
import os
import time
from dataclasses import dataclass
from typing import ClassVar

# apsis's third internal program, stats, registers with these.
import apsis_lite.engine.stats_program  # noqa: F401
from apsis_lite.errors import StoreUnavailable
from apsis_lite.engine.housekeeping import Policy, archive_dir, archive_file_name, give_back_space, prune
from apsis_lite.model.fields import SpecError, duration, positive_duration
from apsis_lite.model.programs import Outcome, ServerProgram, _or_template
from apsis_lite.model.registry import PROGRAMS
from apsis_lite.store.database import Store
from apsis_lite.store.maintenance import open_archive
from apsis_lite.store.retention import ARCHIVE_KEY

#: Sleep between batches: the engine's writes come first.
PAUSE = 0.005


def _count(value) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # a bound template
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number of at least 0, not {value!r}")
    return value


def _positive_count(value) -> int:
    value = _count(value)
    if value < 1:
        raise ValueError(f"expected a whole number of at least 1, not {value!r}")
    return value


def _open(context):
    return Store(os.path.join(context.data_dir, "apsis-lite.db"), migrate=False)


def _outcome(tally, archived=False, dry_run=False):
    return Outcome(message=tally.describe(dry_run=dry_run, archived=archived),
                   output=json.dumps(tally.to_jso()) + "\n")


def _pass(context, policy, pause=PAUSE):
    store = _open(context)
    calls = itertools.count()

    def between():
        # The engine's writes first; a longer pause (apsis's chunk_sleep) only after a batch,
        # cut short by a stop.
        context.stopping.wait(pause if next(calls) else PAUSE)

    try:
        tally = prune(store, policy, time.time(), between=between,
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
    """Moves finished runs older than ``older_than`` (apsis: ``age``, in seconds) to archive files,
    at most ``count`` per run; into ``path`` if given (a file name in DATA/archive, or an absolute
    path), else DATA/archive/runs-YYYY-MM.db by month.

    ``older_than``, ``age``, ``count`` and ``path`` may be templates, checked when a run binds them.
    """

    type_name: ClassVar[str] = "apsis-lite-archive"
    default_timeout: ClassVar[float] = 3600.0

    # Exactly one of the two is set; the one the job file used is kept, so that a bad
    # bound value is reported under the key the operator wrote.
    older_than: float | str | None = None
    age: float | str | None = None
    keep_per_job: int = 10
    count: int | str | None = None
    path: str | None = None
    chunk_size: int | str | None = None  # apsis's name: runs per write transaction
    chunk_sleep: float | str | None = None  # apsis's name: seconds between them

    @classmethod
    def _read(cls, f, allow_templates):
        absent = object()
        older = f.take("older_than", _or_template(positive_duration, allow_templates), absent)
        age = f.take("age", _or_template(duration, allow_templates), absent)
        if older is absent and age is absent:
            f.error("older_than", "missing (required): give older_than, or apsis's age in seconds")
        elif older is not absent and age is not absent:
            f.error("age", "give older_than or apsis's age, not both")
        return {**super()._read(f, allow_templates),
                "older_than": None if older is absent else older, "age": None if age is absent else age,
                "keep_per_job": f.take("keep_per_job", _count, 10),
                "count": f.take("count", _or_template(_count, allow_templates), None),
                "path": f.take("path", _or_template(archive_path, allow_templates), None),
                "chunk_size": f.take("chunk_size", _or_template(_positive_count, allow_templates), None),
                "chunk_sleep": f.take("chunk_sleep", _or_template(duration, allow_templates), None)}

    @property
    def cutoff(self):
        """Seconds a finished run waits before it is archived (a template until bound)."""
        return self.older_than if self.older_than is not None else self.age

    def to_jso(self):
        jso = {**super().to_jso(), "keep_per_job": self.keep_per_job}
        for key in ("older_than", "age", "count", "path", "chunk_size", "chunk_sleep"):
            if getattr(self, key) is not None:
                jso[key] = getattr(self, key)
        return jso

    def describe(self):
        shown = f"{self.cutoff:g} s" if isinstance(self.cutoff, (int, float)) else self.cutoff
        return f"archive runs older than {shown}"

    def run(self, context):
        folder = archive_dir(context.data_dir)
        path = None if self.path is None else os.path.join(folder, self.path)  # an absolute path stays
        if path is not None:
            problem = _unfit_archive(path, os.path.join(context.data_dir, "apsis-lite.db"))
            if problem:
                return Outcome(success=False, message=f"path: {problem}")
        policy = Policy(runs_older_than=self.cutoff, keep_per_job=self.keep_per_job,
                        archive_dir=folder, archive_file=path, max_runs=self.count,
                        **({} if self.chunk_size is None else {"batch": self.chunk_size}))
        pause = PAUSE if self.chunk_sleep is None else max(PAUSE, self.chunk_sleep)
        return _outcome(_pass(context, policy, pause), archived=True)


def archive_path(value) -> str:
    """A job file's archive ``path``: a file name in DATA/archive, or an absolute path.

    An absolute path is the operator's choice, as in apsis (a job file runs any
    command already); a relative path with folders is refused, being neither.
    """
    if isinstance(value, str) and os.path.isabs(value) and "\0" not in value:
        if value.endswith(os.sep) or os.path.basename(value) in (".", ".."):
            raise ValueError(f"not an archive file: {value!r} names a folder")
        return value
    try:
        return archive_file_name(value)
    except ValueError:
        raise ValueError(f"not an archive file name or absolute path: {value!r} (an absolute path, or a "
                         "name in DATA/archive such as runs-2026-11.db: letters, digits, '.', '_' and '-', "
                         "ending in .db, no folder)") from None


def _unfit_archive(path, database):
    """Why ``path`` must not be written as an archive, or None: it would be the server's
    own database, or it is a file that is not an apsis-lite archive."""
    if not os.path.exists(path):
        return None
    if os.path.isdir(path):
        return f"{path} is a folder, not an archive file"
    if os.path.exists(database) and os.path.samefile(path, database):
        return f"{path} is the server's own database, not an archive file"
    try:
        store = open_archive(path)
    except StoreUnavailable as exc:
        return f"{exc}; archiving into it would change it"
    try:
        if store.get_meta(ARCHIVE_KEY) is None:
            return f"{path} is an apsis-lite database but not an archive file; archiving into it would change it"
    finally:
        store.close()
    return None


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

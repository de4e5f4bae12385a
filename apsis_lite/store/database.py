"""The SQLite store: every SQL statement apsis-lite runs lives in this package.

``Store`` is the one object the rest of the code uses: a connection
(``Transactions``) with the statements of each concern mixed in, so that a
call costs what it did as one class. Transitions are compare-and-set: an
UPDATE that names the state it expects, so two callers can never both move
a run.

* ``transactions``: the connection, write transactions, savepoints,
  after-commit callbacks, storage faults as ``StoreUnavailable``.
* ``schema``: the migration steps, and how a runs row becomes a ``Run``.
* ``run_writes``: inserting runs, transitions, run logs, listeners.
* ``run_reads``: the engine's reads of runs.
* ``run_listing``: pages, calendar windows, logs and counts for the API and pages.
* ``outputs``: runs' output blobs.
* ``retention``: old runs and output found by age, removed or archived; free pages given back.
* ``scheduler_records``: horizons, ad hoc jobs, meta, pauses, deadlines, pending actions.
* ``health_reads``: the reads of the sanity checks and the metrics.
* ``overview_reads``: the overview page's and a job's history picture's reads.
"""

from apsis_lite.store.health_reads import HealthReads
from apsis_lite.store.outputs import Outputs
from apsis_lite.store.overview_reads import OverviewReads
from apsis_lite.store.run_listing import RunListing
from apsis_lite.store.run_reads import UNFINISHED, RunReads
from apsis_lite.store.retention import Retention
from apsis_lite.store.run_writes import RunWrites
from apsis_lite.store.scheduler_records import SchedulerRecords
from apsis_lite.store.schema import MIGRATIONS, RERUN_SLOT_PREFIX, RUN_COLUMNS
from apsis_lite.store.transactions import STORAGE_FAULTS, Transactions

__all__ = ["Store", "MIGRATIONS", "RUN_COLUMNS", "RERUN_SLOT_PREFIX", "UNFINISHED", "STORAGE_FAULTS"]


class Store(RunWrites, RunReads, RunListing, HealthReads, OverviewReads, Outputs, SchedulerRecords, Retention,
            Transactions):
    """A connection to the apsis-lite database; ``readonly`` for readers."""

    def __init__(self, path, readonly=False, vfs=None, migrate=True):
        # Who hears of state changes (see RunWrites.add_listener).
        self._listeners = []
        self._tx_listeners = []
        super().__init__(path, readonly, vfs, migrate)

"""The SQLite store: runs, their history and output, transactions and storage faults.

``Store`` (from ``database``) is the one object the rest of the code uses;
``runfilter`` turns the run filter language into SQL for it.
"""

from apsis_lite.store.database import Store

__all__ = ["Store"]

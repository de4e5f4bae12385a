"""The SQLite store: runs, their history and output, transactions and storage faults."""

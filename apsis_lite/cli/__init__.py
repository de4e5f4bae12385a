"""The ``apsis-lite`` command line: server commands, client commands, offline tools."""

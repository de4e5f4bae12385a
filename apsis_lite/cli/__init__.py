"""The ``apsis-lite`` command line.

``main``: the click group, ``serve`` and the local commands; ``server_commands``:
the commands that talk to a server (through ``client``); ``offline``: tools
over a jobs folder (check-jobs, schedule, try); ``crontab_import``;
``desktop``: the no-argument start. ``arguments`` reads what people type and
``formatting`` writes what they read.
"""

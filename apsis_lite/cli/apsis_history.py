"""``apsis-lite import-apsis APSIS.db``: apsis's run history into this scheduler's database.

Like the other database commands (``cli.maintenance``) it works on the
database file directly, whether the server runs or not, in short batches
that let a running server's engine go on between them. The apsis file is
only read.
"""

import fcntl
import os
import time

import apsw
import click

from apsis_lite.cli.maintenance import PAUSE, data_options, load, server_running
from apsis_lite.errors import ApsisError

BATCH = 200


def _store(config):
    from apsis_lite.store.database import Store
    exists = os.path.isfile(config.db_path)
    if not exists:
        os.umask(0o077)  # a database made here is owner-only, as the server makes everything
        os.makedirs(config.data_dir, mode=0o700, exist_ok=True)
    try:
        # An existing database is used as it is (a running server may hold it); a new one is made.
        return Store(config.db_path, migrate=not exists)
    except ApsisError as exc:
        raise click.ClickException(f"{exc}; nothing was imported") from None


def _lock(data_dir):
    fd = os.open(os.path.join(data_dir, "apsis-import.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise click.ClickException("another import-apsis is running on this data folder; wait for it") from None
    return fd


@click.command("import-apsis")
@click.argument("apsis_db", metavar="APSIS.db", type=click.Path(exists=True, dir_okay=False))
@data_options
def import_apsis_cmd(apsis_db, config_file, data_dir):
    """Import the runs of an apsis database (job, args, states and times, log, output).

    Each apsis run becomes a finished run here, with a new id; its apsis id is
    in its log and its JSON (meta.apsis). Runs that were not finished in apsis
    come in as skipped (not started there) or error (started, outcome
    unknown), and are never started again. Importing the same file again adds
    only runs not imported before. The apsis file is never changed.

    Exit status 0: imported; 1: the file is not an apsis database, or the
    import stopped (what was imported before that is kept; run it again).
    """
    from apsis_lite.store.apsis_import import Importer, NotApsisDatabase, open_apsis
    config = load(config_file, data_dir)
    try:
        src, has_output = open_apsis(apsis_db)
    except NotApsisDatabase as exc:
        raise click.ClickException(f"{exc}; nothing was imported") from None
    store = _store(config)
    lock = _lock(config.data_dir)
    pause = PAUSE if server_running(config.data_dir) else 0
    importer = None
    try:
        importer = Importer(store, src, has_output, os.path.abspath(apsis_db), time.time())
        batch = []
        for row in importer.rows():
            batch.append(row)
            if len(batch) == BATCH:
                importer.import_batch(batch)
                batch = []
                time.sleep(pause)
        importer.import_batch(batch)
    except (ApsisError, OSError, apsw.Error) as exc:
        # A full disk for the unpacked output, or a damaged apsis file read mid-way: what was
        # imported stays, and the next attempt goes on from there.
        done = importer.tally.describe() if importer else "nothing imported"
        raise click.ClickException(f"{exc}; before that: {done}; run the same command again "
                                   "to go on (runs imported are not imported twice)") from None
    finally:
        os.close(lock)
        store.close()
        src.close()
    click.echo(f"{apsis_db}: {importer.tally.describe()}")

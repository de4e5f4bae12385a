"""The server's retention waits for the disk in a worker thread, with a connection of its own,
while the event loop runs on: checked with a disk whose every fsync takes a while."""

import time

import apsw
import gevent

from apsis_lite.engine.housekeeping import InThread, Policy, RetentionTask
from apsis_lite.store.database import Store


class SlowDisk(apsw.VFS):
    """A VFS whose fsync sleeps ``delay`` (as a busy disk's does), saying while it does."""

    def __init__(self, name="slow-disk", delay=0.03):
        self.name, self.delay = name, delay
        self.syncing, self.syncs = False, 0
        super().__init__(name, base="")

    def xOpen(self, name, flags):
        return _SlowFile(self, name, flags)


class _SlowFile(apsw.VFSFile):
    def __init__(self, disk, name, flags):
        self.disk = disk
        super().__init__("", name, flags)

    def xSync(self, flags):
        self.disk.syncing = True
        self.disk.syncs += 1
        time.sleep(self.disk.delay)
        self.disk.syncing = False
        return super().xSync(flags)


def test_batches_wait_for_the_disk_in_a_worker_thread_while_the_loop_runs(tmp_path):
    path = str(tmp_path / "apsis-lite.db")
    writer = Store(path)
    for _ in range(30):
        run = writer.insert_run("old", {}, "scheduled", 1000.0, 1000.0)
        writer.transition(run.run_id, "scheduled", "starting", 1000.0, "starting")
        writer.transition(run.run_id, "starting", "running", 1000.0, "running")
        writer.transition(run.run_id, "running", "success", 1000.0, "success")
    disk = SlowDisk()
    own = InThread(Store(path, vfs=disk.name, migrate=False))
    task = RetentionTask(own, Policy(runs_older_than=86400.0, batch=5), 3600.0, pause=0.0, clock=lambda: 1e9)
    seen = []

    def ticker():
        while True:
            gevent.sleep(0.002)
            seen.append(disk.syncing)

    probe = gevent.spawn(ticker)
    try:
        tally = task.run_once()
    finally:
        probe.kill()
        task.stop()
    assert tally.runs == 30 and writer.stats()["runs"] == 0
    # The loop ran while a batch's commit waited for the disk: on the loop's own
    # thread, the fsync would have held every greenlet.
    assert disk.syncs >= 6 and any(seen)
    writer.close()

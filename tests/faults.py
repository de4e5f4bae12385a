"""Disk faults on demand, beneath a real SQLite database: an SQLite VFS that
passes everything to the operating system until told to fail writes."""

import apsw


class FaultyDisk(apsw.VFS):
    """A VFS named ``name``: while ``full`` is set, every write fails as on a full disk."""

    def __init__(self, name="faulty-disk"):
        self.name = name
        self.full = False
        self.refused = 0
        super().__init__(name, base="")

    def xOpen(self, name, flags):
        return _File(self, name, flags)


class _File(apsw.VFSFile):
    def __init__(self, disk, name, flags):
        self.disk = disk
        super().__init__("", name, flags)

    def xWrite(self, data, offset):
        if self.disk.full:
            self.disk.refused += 1
            raise apsw.FullError("database or disk is full (injected)")
        return super().xWrite(data, offset)

    def xTruncate(self, size):
        if self.disk.full:
            raise apsw.FullError("database or disk is full (injected)")
        return super().xTruncate(size)

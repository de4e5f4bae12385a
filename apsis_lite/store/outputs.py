"""Runs' output in the database: copied in a chunk at a time once a run is over, read back by range.

Output is a BLOB per run, written and read through apsw's incremental blob
I/O, so that a large output never has to be held in memory whole.
"""

import os


class Outputs:
    """The output blobs of ``Store`` (a part of it, over ``Transactions``)."""

    def store_output(self, run_id, path, bytes_total, bytes_dropped, chunk=1 << 20):
        """Copy a run's output file into the database, a chunk at a time."""
        size = os.path.getsize(path) if os.path.exists(path) else 0
        with self.write():
            self._exec("INSERT OR REPLACE INTO outputs (run_id, data, bytes_total, bytes_dropped)"
                       " VALUES (?, zeroblob(?), ?, ?)", (run_id, size, bytes_total, bytes_dropped))
            if size:
                try:
                    blob = self.conn.blob_open("main", "outputs", "data", run_id, True)
                    try:
                        with open(path, "rb") as f:
                            while data := f.read(chunk):
                                blob.write(data)
                    finally:
                        blob.close()
                except self._storage_faults as exc:
                    raise self._fault(exc) from exc
        return size

    def store_output_bytes(self, run_id, data, bytes_total, bytes_dropped):
        """Store a run's output given in memory (an in-server program's, already bounded)."""
        with self.write():
            self._exec("INSERT OR REPLACE INTO outputs (run_id, data, bytes_total, bytes_dropped)"
                       " VALUES (?, ?, ?, ?)", (run_id, bytes(data), bytes_total, bytes_dropped))

    def output_length(self, run_id):
        row = self._one("SELECT length(data) FROM outputs WHERE run_id=?", (run_id,))
        return None if row is None else row[0]

    def read_output(self, run_id, offset=0, size=None):
        """Bytes of a finished run's stored output from ``offset``; None if none is stored."""
        with self._lock:
            row = self._exec("SELECT length(data) FROM outputs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                return None
            length = row[0]
            offset = min(max(0, offset), length)
            want = length - offset if size is None else max(0, min(size, length - offset))
            if want == 0:
                return b""
            try:
                blob = self.conn.blob_open("main", "outputs", "data", run_id, False)
                try:
                    blob.seek(offset)
                    return blob.read(want)
                finally:
                    blob.close()
            except self._storage_faults as exc:
                raise self._fault(exc) from exc

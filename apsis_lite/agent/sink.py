"""A run's output on disk: the head as it comes, the tail in a ring file,
both within fixed caps, and what a full disk costs counted and marked."""

from __future__ import annotations

import contextlib
import errno
import os

from apsis_lite.agent.files import write_all
from apsis_lite.agent.full_disk import Backoff, error_reason, no_room
from apsis_lite.agent.log import log
from apsis_lite.agent.protocol import OUTPUT, OUTPUT_TAIL, dropped_marker, lost_marker


class OutputSink:
    """Stores a stream of output in bounded disk and memory.

    The first ``head`` bytes go straight to ``output`` as they arrive, so a
    client can follow them by byte offset. Later bytes go to a fixed-size ring
    file, ``output.tail``, at position ``(offset - head) % tail``; only the
    last ``tail`` bytes survive. ``finish`` appends them, in order and after a
    marker if anything was dropped, to ``output``. Nothing but the current
    chunk is ever held in RAM, so a program printing 1 GB costs head + tail on
    disk and a few kB of memory.

    Output that cannot be stored (a full disk) is counted, never waited for:
    the program must not block on a full pipe. Storing is tried again when
    more output comes, RETRY_MIN to RETRY_MAX apart; where it works again, a
    line ``[apsis-lite: N bytes of output lost: <why>]`` takes the place of
    what was lost (in ``output`` at once for the head, at the end for the
    tail), so what is stored never reads as if it were all there.
    """

    def __init__(self, run_dir: str, head: int, tail: int):
        self.head = head
        self.tail = tail
        self.path = os.path.join(run_dir, OUTPUT)
        self.tail_path = os.path.join(run_dir, OUTPUT_TAIL)
        self.fd: int | None = None
        self.tail_fd: int | None = None
        self.total = 0  # Bytes read from the program.
        self.written = 0  # Length of ``output`` known good: where the next write goes.
        self.stored_to = 0  # Offset in the stream up to which the chunk being stored is stored.
        self.lost_head = 0  # Bytes of the head not stored, all told...
        self.head_gap = 0  # ...of which this many are not yet marked in ``output``.
        self.head_gap_reason = ""
        # [start, end, why] offsets in the stream of bytes past the head that
        # could not be stored, oldest first: the ring holds stale bytes there.
        self.ring_gaps: list[list] = []
        self.failing: str | None = None  # Why storing fails, until it works again.
        self.first_failure: str | None = None
        self.retry = Backoff()
        self.trailer: bytes | None = None  # Set by finish: the end of ``output`` still to write.
        self.info: dict | None = None  # Set by finish: the byte counts for result.json.
        try:
            self._open()
        except OSError as exc:
            self._failed(exc)

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.written = 0

    def write(self, data: bytes) -> None:
        offset = self.total
        self.total += len(data)
        if self.failing is not None and not (self.retry.due() and self._resume()):
            self._lose(offset, self.total, self.failing)
            return
        try:
            self._store(data, offset)
        except OSError as exc:
            self._lose(self.stored_to, self.total, error_reason(exc))
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        if self.failing is None:
            log.warning("%s: cannot store output: %s; counting what is lost until it can",
                        os.path.dirname(self.path), exc)
        self.failing = error_reason(exc)
        self.first_failure = self.first_failure or self.failing
        self.retry.failed()

    def _resume(self) -> bool:
        """Try to store again: open ``output`` if need be and mark the head's gap."""
        try:
            if self.fd is None:
                self._open()
            if self.head_gap:
                self._append_text(lost_marker(self.head_gap, self.head_gap_reason))
                self.head_gap = 0
        except OSError as exc:
            self._failed(exc)
            return False
        log.info("%s: storing output again", os.path.dirname(self.path))
        self.failing = None
        self.retry.succeeded()
        return True

    def _lose(self, start: int, end: int, reason: str) -> None:
        """Count the stream's bytes from ``start`` to ``end`` as not stored."""
        if start < self.head:
            n = min(end, self.head) - start
            self.lost_head += n
            if not self.head_gap:
                self.head_gap_reason = reason
            self.head_gap += n
            start += n
        if start >= end or self.tail == 0:
            return  # Nothing past the head, or it would be dropped anyway.
        gaps = self.ring_gaps
        if gaps and gaps[-1][1] == start:
            gaps[-1][1] = end
        else:
            gaps.append([start, end, reason])
        while gaps and gaps[0][1] <= self.total - self.tail:  # Overwritten in the ring by now.
            gaps.pop(0)

    def _store(self, data: bytes, offset: int) -> None:
        self.stored_to = offset
        if offset < self.head:
            n = min(len(data), self.head - offset)
            self._append(data[:n] if n < len(data) else data)
            data = data[n:]
            offset += n
        if not data or self.tail == 0:
            self.stored_to = offset + len(data)
            return
        if len(data) > self.tail:  # Only the end of a huge chunk can survive.
            offset += len(data) - self.tail
            data = data[-self.tail:]
            self.stored_to = offset
        if self.tail_fd is None:
            self.tail_fd = os.open(
                self.tail_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600
            )
        pos = (offset - self.head) % self.tail
        first = min(len(data), self.tail - pos)
        self._pwrite_all(data[:first], pos)
        if first < len(data):
            self._pwrite_all(data[first:], 0)

    def _append(self, data) -> None:
        """Write at the end of ``output``, counting what got there."""
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.written += n
            self.stored_to += n

    def _append_text(self, text: bytes) -> None:
        """Append a line of ours whole, or leave ``output`` as it was."""
        try:
            write_all(self.fd, text)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.written)
                os.lseek(self.fd, self.written, os.SEEK_SET)
            raise
        self.written += len(text)

    def _pwrite_all(self, data, pos: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.tail_fd, view, pos)
            view = view[n:]
            pos += n
            self.stored_to += n

    def finish(self) -> dict:
        """Complete ``output`` and drop the ring file; returns the byte counts
        for result.json. Not fsynced: see ``Shepherd._finish`` in ``apsis_lite.agent.shepherd``.

        Raises OSError only for lack of room, after which it may be called
        again, until the end of ``output`` is written. The tail is not waited
        for: if there is no room to copy it from the ring, it is counted as
        lost and its ring file freed, so a run never keeps the disk full with
        its own output; only the short line saying so is waited for.
        """
        if self.info is None:
            self._assemble()
        if self.trailer:
            try:
                if self.fd is None:
                    self._open()
                self._append_text(self.trailer)
            except OSError as exc:
                if no_room(exc):
                    raise
                log.error("%s: cannot end the output: %s", os.path.dirname(self.path), exc)
                self.info.setdefault("error", f"cannot store output: {exc}")
            self.trailer = None
        self.close()
        return self.info

    def _assemble(self) -> None:
        """Append what follows the head to ``output``; what cannot be written
        becomes ``trailer``, the lines that say it was lost."""
        beyond = max(0, self.total - self.head)
        kept_tail = min(beyond, self.tail)
        dropped = beyond - kept_tail
        # What follows the head, in order: ("text", line), ("lost", count, why)
        # and ("copy", ring position, count).
        pieces: list[tuple] = []
        if self.head_gap:
            pieces.append(("lost", self.head_gap, self.head_gap_reason))
        if dropped:
            pieces.append(("text", dropped_marker(dropped)))
        offset = self.total - kept_tail
        lost = self.lost_head
        for start, end, reason in self.ring_gaps:
            start, end = max(start, offset), min(end, self.total)
            if start < end:
                if start > offset:
                    pieces.append(("copy", (offset - self.head) % self.tail, start - offset))
                pieces.append(("lost", end - start, reason))
                lost += end - start
                offset = end
        if offset < self.total:
            pieces.append(("copy", (offset - self.head) % self.tail, self.total - offset))
        trailer = b""
        for i, piece in enumerate(pieces):
            try:
                if self.fd is None:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                if piece[0] == "text":
                    self._append_text(piece[1])
                elif piece[0] == "lost":
                    self._append_text(lost_marker(piece[1], piece[2]))
                else:
                    self._copy_ring(piece[1], piece[2])
            except OSError as exc:
                # The rest is lost: the lines of ours that say so are all that
                # is waited for.
                reason = error_reason(exc)
                self.first_failure = self.first_failure or reason
                lost += sum(p[2] for p in pieces[i:] if p[0] == "copy")
                trailer = _trailer(pieces[i:], reason)
                log.warning("%s: cannot store the end of the output (%s): %d bytes of output lost",
                            os.path.dirname(self.path), exc, lost)
                break
        self.head_gap = 0
        self.trailer = trailer
        self.info = {
            "bytes_total": self.total,
            "bytes_kept": self.total - dropped - lost,
            "bytes_dropped": dropped,
        }
        if lost:
            self.info["bytes_lost"] = lost
            self.info["error"] = f"cannot store output: {self.first_failure}"
        self._drop_ring()

    def _copy_ring(self, start: int, length: int) -> None:
        """Append ``length`` bytes of the ring from ``start``, whole or not at all."""
        written = self.written
        pos = start
        try:
            while length:
                n = min(length, self.tail - pos, 1024 * 1024)
                chunk = os.pread(self.tail_fd, n, pos)
                if not chunk:
                    raise OSError(errno.EIO, "output.tail is shorter than expected")
                write_all(self.fd, chunk)
                self.written += len(chunk)
                length -= len(chunk)
                pos = (pos + len(chunk)) % self.tail
        except OSError:
            self.written = written
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, written)
                os.lseek(self.fd, written, os.SEEK_SET)
            raise

    def _drop_ring(self) -> None:
        if self.tail_fd is not None:
            os.close(self.tail_fd)
            self.tail_fd = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tail_path)

    def close(self) -> None:
        """Let go of the files, finished or not."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self._drop_ring()


def _trailer(pieces: list[tuple], reason: str) -> bytes:
    """The lines that stand for ``pieces`` that could not be written: ours
    as they are, the program's output as a count of bytes lost."""
    lines, count = [], 0
    for piece in pieces:
        if piece[0] == "text":
            if count:
                lines.append(lost_marker(count, reason))
                count = 0
            lines.append(piece[1])
        else:
            count += piece[1] if piece[0] == "lost" else piece[2]
    if count:
        lines.append(lost_marker(count, reason))
    return b"".join(lines)

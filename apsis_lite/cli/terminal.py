"""What the command line prints is text, never terminal commands.

Job ids, args, messages and anything else the CLI prints may come from
others (a job file's name, an arg given through the API, a program's
output quoted in a run's log). Escape sequences in them would retitle the
terminal, move the cursor or hide text; ``escape_controls`` writes every
control character as ``\\x1b``-style text instead. ``install()`` puts it
between the CLI and its stdout and stderr once, for every command; bytes
written to the binary stream underneath (``apsis-lite output``, which
prints a program's output as it is, as ``cat`` would) pass unchanged.
"""

from __future__ import annotations

import sys

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional
# overrides and isolates (they reorder what is shown).
_CONTROLS = [c for c in range(0x20) if chr(c) not in "\t\n"] + list(range(0x7F, 0xA0))
_BIDI = [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES = {c: f"\\x{c:02x}" for c in _CONTROLS} | {c: f"\\u{c:04x}" for c in _BIDI}


def escape_controls(text: str) -> str:
    """``text`` with each control character written as an escape (``\\x1b``, ``\\u202e``)."""
    return text.translate(_ESCAPES)


class EscapingStream:
    """A text stream that escapes control characters in what is written to it.

    Everything else (``buffer``, ``encoding``, ``isatty``, ``flush``...) is
    the wrapped stream's, so bytes written to ``buffer`` are not touched.
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        self._stream.write(escape_controls(text))
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def install():
    """Escape control characters in all the CLI prints to stdout and stderr from now on."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, EscapingStream):
            setattr(sys, name, EscapingStream(stream))

"""The agent on a remote host: the stdlib-only ``apsis_lite.agent`` package as a zipapp.

The zipapp holds the agent package, a stub ``apsis_lite/__init__.py`` (so
that ``apsis_lite.agent`` imports without the rest of apsis-lite) and a root
``__main__.py`` that runs the agent. It is named by the hash of its bytes,
``~/.cache/apsis-lite/agent-HASH.pyz`` in the login user's home, so a host
has the version the server ships or none: a new version is a new name, and
the old ones are removed when it is installed. All it needs there is
``python3`` and a POSIX ``sh``.

On first use, one ssh round trip checks that ``python3`` is there and the
file exists; only when it does not is the zipapp uploaded, to a temporary
name that is checked (size, ``python3 FILE --help``) before it is moved into
place, so a host never holds a partial agent under the real name.
"""

import hashlib
import io
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import apsis_lite.agent
from apsis_lite.hosts.ssh import HostError, Target, call

AGENT_SOURCE = Path(apsis_lite.agent.__file__).resolve().parent
REMOTE_FOLDER = ".cache/apsis-lite"
INSTALL_TIMEOUT = 120.0

_MAIN = b'''"""The apsis-lite agent: ``python3 agent-HASH.pyz STATE_DIR`` serves it;
``python3 agent-HASH.pyz remote STATE_DIR`` answers one server request (see apsis_lite.agent.remote)."""
import sys

if sys.argv[1:2] == ["remote"]:
    from apsis_lite.agent.remote import main as remote_main

    sys.exit(remote_main(sys.argv[2:]))

from apsis_lite.agent.server import main

sys.exit(main())
'''
_STUB = b'"""Only the agent of apsis-lite: the rest of the package stays on the server."""\n'
# Fixed so that the same sources always make the same bytes, hence the same name.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

# $1: the file name, $2: its size. Prints "present|absent PATH"; exit 127 without python3.
_CHECK = r'''command -v python3 >/dev/null 2>&1 || { echo "python3: not found on PATH=$PATH" >&2; exit 127; }
p="$HOME/''' + REMOTE_FOLDER + r'''/$1"
if [ -f "$p" ]; then echo "present $p"; else echo "absent $p"; fi
'''
# Reads the zipapp on stdin; the real name appears only once the file is whole and starts.
_UPLOAD = r'''set -e
umask 077
d="$HOME/''' + REMOTE_FOLDER + r'''"; p="$d/$1"; tmp="$p.tmp.$$"
trap 'rm -f "$tmp"' EXIT
mkdir -p "$d"
cat > "$tmp"
size=$(wc -c < "$tmp")
[ "$size" -eq "$2" ] || { echo "the upload was cut short: $size of $2 bytes arrived" >&2; exit 3; }
python3 "$tmp" --help > /dev/null
mv -f "$tmp" "$p"
for old in "$d"/agent-*.pyz; do [ "$old" = "$p" ] || rm -f "$old"; done
echo "$p"
'''


@dataclass(frozen=True)
class Zipapp:
    """The agent's zipapp: its bytes and the name they give it."""

    data: bytes

    @property
    def name(self) -> str:
        return f"agent-{hashlib.sha256(self.data).hexdigest()[:16]}.pyz"


@dataclass(frozen=True)
class Installed:
    """The agent on a host: its path there, and whether this call uploaded it."""

    host: str
    path: str
    uploaded: bool


def _add(archive: zipfile.ZipFile, name: str, data: bytes):
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def build_zipapp(source: Path = AGENT_SOURCE) -> Zipapp:
    """The zipapp of the agent package in the folder ``source``, built in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        _add(archive, "__main__.py", _MAIN)
        _add(archive, "apsis_lite/__init__.py", _STUB)
        for path in sorted(Path(source).rglob("*.py")):
            if "__pycache__" not in path.parts:
                relative = path.relative_to(source).as_posix()
                _add(archive, f"apsis_lite/agent/{relative}", path.read_bytes())
    return Zipapp(buffer.getvalue())


_shipped: Zipapp | None = None


def shipped_zipapp() -> Zipapp:
    """The zipapp of this server's own agent (built once per process)."""
    global _shipped
    if _shipped is None:
        _shipped = build_zipapp()
    return _shipped


def install_agent(target: Target, zipapp: Zipapp | None = None) -> Installed:
    """Make sure ``target`` has ``zipapp`` (default: this server's agent); upload it only if absent.

    Raises HostError naming the host when ssh fails, ``python3`` is missing
    or the uploaded agent does not start."""
    zipapp = zipapp or shipped_zipapp()
    size = str(len(zipapp.data))
    found = call(target, ["/bin/sh", "-c", _CHECK, "sh", zipapp.name, size])
    word, _, path = found.stdout.decode(errors="replace").strip().partition(" ")
    if found.status != 0 or word not in ("present", "absent"):
        raise HostError(f"host {target.name}: checking for the agent failed: {_said(found)}")
    if word == "present":
        return Installed(target.name, path, uploaded=False)
    done = call(target, ["/bin/sh", "-c", _UPLOAD, "sh", zipapp.name, size], stdin=zipapp.data,
                timeout=INSTALL_TIMEOUT)
    if done.status != 0:
        raise HostError(f"host {target.name}: installing the agent in ~/{REMOTE_FOLDER} failed: {_said(done)}")
    return Installed(target.name, done.stdout.decode(errors="replace").strip(), uploaded=True)


def _said(result) -> str:
    lines = [line for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {result.status}"


class AgentInstaller:
    """Installs the agent on each host at its first use in this process, and remembers it."""

    def __init__(self, zipapp: Zipapp | None = None):
        self._zipapp = zipapp
        self._installed: dict = {}
        # One check or upload at a time per host (two first uses of a host would both
        # upload), and a lock per host: a host that does not answer holds up no other.
        self._locks: dict = {}
        self._locks_lock = threading.Lock()

    def ensure(self, target: Target) -> Installed:
        """The agent on ``target``, checked (and installed if absent) the first time only."""
        key = target.settings
        if key not in self._installed:
            with self._locks_lock:
                lock = self._locks.setdefault(key, threading.Lock())
            with lock:
                if key not in self._installed:
                    self._installed[key] = install_agent(target, self._zipapp)
        return self._installed[key]

    def forget(self, target: Target):
        """Check ``target`` again at its next use (after it was rebuilt, say)."""
        self._installed.pop(target.settings, None)

"""The ``apsis-lite`` command and the PyInstaller entry point.

With no arguments (a double-click) it runs ``apsis-lite desktop``: the
scheduler for this user, opened in the browser. Only the server commands
need gevent, and they must monkey-patch before anything else imports
socket or threading; client commands skip gevent and start faster. The
agent is dispatched before any of that: it is stdlib-only and forks.

Imports are absolute: PyInstaller runs this file as a script, not as a
module of the package.
"""

import os
import sys

SERVER_COMMANDS = ("serve", "desktop")


def _restore_library_path():
    """Undo the one-file bootloader's ``LD_LIBRARY_PATH``, for the processes we start.

    The bootloader points it at the bundle's unpacked libraries; a job's
    program or the user's browser must get the system's own.
    """
    if not getattr(sys, "frozen", False):
        return
    for name in ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"):
        orig = os.environ.pop(name + "_ORIG", None)
        if orig is not None:
            os.environ[name] = orig
        else:
            os.environ.pop(name, None)


def _system_zones():
    """Point pytz at the system's zone database: the bundle carries none (see build.spec)."""
    if getattr(sys, "frozen", False) and "PYTZ_TZDATADIR" not in os.environ:
        import zoneinfo
        for folder in zoneinfo.TZPATH:
            if os.path.isfile(os.path.join(folder, "UTC")):
                os.environ["PYTZ_TZDATADIR"] = folder
                break


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    _restore_library_path()
    _system_zones()
    if argv[:1] == ["agent"]:
        from apsis_lite.agent import main as agent_main
        sys.exit(agent_main(argv[1:]))
    if not argv:
        argv = ["desktop"]
    if argv[0] in SERVER_COMMANDS:
        from gevent import monkey
        monkey.patch_all()
    from apsis_lite.cli import terminal
    terminal.install()  # job ids, args and messages printed as text, never as terminal commands
    from apsis_lite.cli.main import cli
    cli.main(args=argv, prog_name="apsis-lite")


if __name__ == "__main__":
    main()

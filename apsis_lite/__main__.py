"""The ``apsis-lite`` command and the PyInstaller entry point.

Only ``serve`` needs gevent, and it must monkey-patch before anything else
imports socket or threading; client commands skip gevent and start faster.
The agent is dispatched before any of that: it is stdlib-only and forks.
"""

import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:
        from .agent import main as agent_main
        sys.exit(agent_main(argv[1:]))
    if argv[:1] == ["serve"]:
        from gevent import monkey
        monkey.patch_all()
    from .cli import cli
    cli.main(args=argv, prog_name="apsis-lite")


if __name__ == "__main__":
    main()

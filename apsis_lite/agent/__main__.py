"""``python -m apsis_lite.agent STATE_DIR``: how the server starts its agent
(the one-file executable runs ``apsis-lite agent STATE_DIR`` instead)."""

import sys

from apsis_lite.agent.server import main

if __name__ == "__main__":
    sys.exit(main())

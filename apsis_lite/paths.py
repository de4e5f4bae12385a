"""Where the files that ship beside the code are: ``templates/``, ``static/`` and ``jobs/``.

In the source tree (and an editable install) they are top-level folders of
the repository; an installed wheel carries them in ``apsis_lite/resources/``
(setup.py copies them there); in a PyInstaller one-file bundle they are
unpacked under ``sys._MEIPASS`` (``build.spec`` puts them there).
"""

import os
import sys

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def resource_root() -> str:
    """The folder holding ``templates/``, ``static/`` and ``jobs/``."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return bundle
    installed = os.path.join(_PACKAGE, "resources")
    if os.path.isdir(installed):
        return installed
    return os.path.dirname(_PACKAGE)


def templates_dir() -> str:
    return os.path.join(resource_root(), "templates")


def static_dir() -> str:
    return os.path.join(resource_root(), "static")


def example_jobs_dir() -> str:
    return os.path.join(resource_root(), "jobs")

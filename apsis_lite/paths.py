"""Where the files that ship beside the code are: ``templates/``, ``static/`` and ``jobs/``.

In the source tree (and an editable install) they are top-level folders of
the repository; an installed wheel carries them in the package, as
``apsis_lite/resources/`` (setup.py copies them there), found through
``importlib.resources``; in a PyInstaller one-file bundle they are unpacked
under ``sys._MEIPASS`` (``build.spec`` puts them there).
"""

import os
import sys
from importlib import resources

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def resource_root() -> str:
    """The folder holding ``templates/``, ``static/`` and ``jobs/``."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return bundle
    installed = resources.files("apsis_lite").joinpath("resources")
    # Flask and the jobs loader read real folders: an installed package is one
    # (a package imported from a zip file would not be, and is not supported).
    if isinstance(installed, os.PathLike) and installed.is_dir():
        return os.fspath(installed)
    return os.path.dirname(_PACKAGE)


def templates_dir() -> str:
    return os.path.join(resource_root(), "templates")


def static_dir() -> str:
    return os.path.join(resource_root(), "static")


def example_jobs_dir() -> str:
    """The example jobs that ship with apsis-lite (``jobs/`` of the repository)."""
    return os.path.join(resource_root(), "jobs")

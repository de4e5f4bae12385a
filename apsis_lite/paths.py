"""Where the files that ship beside the code are: ``templates/``, ``static/`` and ``jobs/``.

In the source tree they are top-level folders of the repository; in a
PyInstaller one-file bundle they are unpacked under ``sys._MEIPASS``
(``build.spec`` puts them there under the same names).
"""

import os
import sys


def resource_root() -> str:
    """The folder holding ``templates/``, ``static/`` and ``jobs/``."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return bundle
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def templates_dir() -> str:
    return os.path.join(resource_root(), "templates")


def static_dir() -> str:
    return os.path.join(resource_root(), "static")


def example_jobs_dir() -> str:
    return os.path.join(resource_root(), "jobs")

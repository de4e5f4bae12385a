"""Packaging hook: the wheel carries templates/, static/ and jobs/ inside the package.

They are top-level folders of the repository (the server reads them from
there when run from a checkout or an editable install); an installed wheel
has no repository beside it, so the build copies them to
``apsis_lite/resources/``, where ``apsis_lite.paths`` looks first.
"""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES = ("templates", "static", "jobs")


class BuildWithResources(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout itself
        here = os.path.dirname(os.path.abspath(__file__))
        for name in RESOURCES:
            shutil.copytree(os.path.join(here, name),
                            os.path.join(self.build_lib, "apsis_lite", "resources", name),
                            dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithResources})

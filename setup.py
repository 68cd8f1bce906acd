"""The optional compiled build. Metadata lives in pyproject.toml.

    TIDECAST_COMPILE=1 pip install .     # needs a C compiler and the Python headers (apt: gcc python3-dev)

compiles the modules `tidecast.compiled.MODULES` lists with mypyc; without the variable the package is
pure Python, as it always runs from an editable checkout.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

from setuptools import setup


def _ext_modules() -> list[Any]:
    if not runpy.run_path(os.path.join("buildsys", "tidecast_build.py"))["compile_requested"]():
        return []
    if any(command in sys.argv for command in ("egg_info", "dist_info")):
        return []  # metadata only: the same without the ten seconds mypyc's analysis takes
    from mypyc.build import mypycify

    modules = runpy.run_path(os.path.join("src", "tidecast", "compiled.py"))["MODULES"]
    paths = [os.path.join("src", *name.split(".")) + ".py" for name in modules]
    return mypycify(paths, opt_level="3")


setup(ext_modules=_ext_modules())

"""What `pip install .` ships: every folder of the package, not only the ones an editable install
happens to find. (A subpackage without ``__init__.py`` is left out of the wheel by setuptools'
`find:`, and the installed sidecar then fails on its first import of it.)"""

from __future__ import annotations

from setuptools import find_packages

from tests.paths import ROOT


def test_every_folder_with_python_modules_is_a_packaged_package() -> None:
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "sidecar").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    packaged = set(find_packages(str(ROOT), include=["sidecar", "sidecar.*"]))
    assert folders - packaged == set()

"""The wheel a user installs holds every module of the package, and its data files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "llm_inproc"


def test_the_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    """A package directory that an ignore rule matches (``build/`` once did) is left out of
    the wheel, and ``import llm_inproc.cli`` then fails for users of a normal install only:
    the editable install the tests run from still sees the source tree."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = tmp_path.glob("llm_inproc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "llm_inproc/" + p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert expected - names == set()
    assert {"llm_inproc/CMakePresets.json", "llm_inproc/py.typed"} <= names
    packages = {p.parent for p in PACKAGE.rglob("*.py")}
    assert all((d / "__init__.py").is_file() for d in packages), "a package lacks __init__.py"

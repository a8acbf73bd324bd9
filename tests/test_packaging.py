"""A wheel of the package carries the recipes, and the demo finds them in an installed copy."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_the_recipes_the_demo_reads(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                    str(ROOT)], check=True, capture_output=True, timeout=600)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("recipes/**/*.yaml")}
    assert {f"lightning_gpv/{name}" for name in recipes} <= names
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    code = (
        "import lightning_gpv.demo as d, pathlib;"
        "print(d.__file__);"
        "print(d.tiny_recipe('vistallm_shapes', pathlib.Path('w'), None, pathlib.Path('r.yaml')));"
        "from lightning_gpv.cli import main; main(['fit', '-c', 'r.yaml', '--print_config'])"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}  # ahead of the editable install
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=False, timeout=300).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[:2] == [str(target / "lightning_gpv" / "demo.py"), "r.yaml"], out[-2000:]
    # The installed copy's recipe parses with the CLI (--print_config exits after printing).
    assert "class_path: lightning_gpv.systems.vistallm.VistaLLMModule" in out and "root: w/refcoco" in out

"""The installed layout: one ``driftline`` namespace over the two source folders."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"driftline.streams": ROOT / "streams", "driftline.detectors": ROOT / "detectors"}


def _packages_on_disk() -> set[str]:
    found = set()
    for name, folder in SOURCES.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            found.add(".".join([name, *rel.parts]))
    return found


def test_every_source_package_is_listed_for_the_wheel() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(cfg["packages"]) == _packages_on_disk()
    assert cfg["package-dir"] == {k: v.name for k, v in SOURCES.items()}


def test_no_module_imports_the_bare_folder_names() -> None:
    """``import streams`` would load a second copy of a module beside ``driftline.streams``."""
    bad = []
    for folder in [*SOURCES.values(), ROOT / "tests", ROOT / "bench"]:
        for path in folder.rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                bad += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                        if n.split(".")[0] in ("streams", "detectors")]
    assert bad == []

"""The installed layout: one ``driftline`` namespace over the two source folders, and the
Supabase migrations as its package data."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"driftline.streams": ROOT / "streams", "driftline.detectors": ROOT / "detectors"}
DATA = {"driftline.migrations": ROOT / "supabase" / "migrations"}


def _packages_on_disk() -> set[str]:
    found = set()
    for name, folder in SOURCES.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            found.add(".".join([name, *rel.parts]))
    return found


def test_every_source_package_is_listed_for_the_wheel() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(cfg["packages"]) == _packages_on_disk() | set(DATA)
    assert cfg["package-dir"] == {k: str(v.relative_to(ROOT))
                                  for k, v in {**SOURCES, **DATA}.items()}


def test_the_installed_migrations_are_the_supabase_folder() -> None:
    from driftline.streams.store.migrate import migration_files

    names = [f.name for _, _, f in migration_files()]
    assert names == sorted(p.name for p in DATA["driftline.migrations"].glob("*.sql"))
    assert names  # at least the initial schema


def test_the_wheel_holds_the_namespace_and_the_migrations(tmp_path: Path) -> None:
    """What ``pip install driftline-*.whl`` puts on a machine without the source tree."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True,
                   timeout=300)
    (wheel,) = tmp_path.glob("driftline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("driftline-")}
    assert tops == {"driftline"}  # no top-level streams/ or detectors/ to clash with
    sql = sorted(n for n in names if n.endswith(".sql"))
    assert sql == [f"driftline/migrations/{p.name}"
                   for p in sorted(DATA["driftline.migrations"].glob("*.sql"))]
    assert "driftline/streams/cli.py" in names and "driftline/detectors/monitor.py" in names
    assert "driftline/streams/tooling/kafka_jars.lock" in names


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

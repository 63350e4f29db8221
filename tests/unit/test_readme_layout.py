"""The README's Layout section names every package and module there is, and no other."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def layout() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("## Layout", 1)[1].split("\n## ", 1)[0]


def test_layout_names_every_module_and_package() -> None:
    words = set(re.findall(r"[a-z_]+", layout()))
    missing = []
    for path in (ROOT / "ghapp").rglob("*.py"):
        name = path.parent.name if path.name == "__init__.py" else path.stem
        if name not in words:
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"README Layout does not name: {missing}"


def test_layout_names_no_folder_that_is_gone() -> None:
    block = layout().split("```", 2)[1]
    for folder in re.findall(r"^\s*([a-z_]+)/", block, flags=re.MULTILINE):
        found = (ROOT / folder).is_dir() or any((ROOT / "ghapp").rglob(folder))
        assert found, f"README Layout names {folder}/, which is not there"

"""The package layout: imports point one way (tools → training → inference/evaluation → files →
nets → config), and no module grows past ~300 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import gruunet_cli

PACKAGE = Path(gruunet_cli.__file__).parent
RANK = {"__main__": 6, "tools": 5, "cli": 5, "training": 4, "inference": 3, "evaluation": 3, "files": 2, "nets": 1}  # others: 0


def stage(module: Path) -> str:
    rel = module.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_stages(module: Path) -> set[str]:
    """The stages a module imports from (relative imports, at any depth of the file)."""
    inside = len(module.relative_to(PACKAGE).parts) > 1
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = (node.module or "").split(".")
            if node.level == 1 and inside:
                continue  # the same stage
            names = [parts[0]] if parts[0] else [a.name for a in node.names]
            found.update(names)
    return found


def test_imports_point_one_way() -> None:
    wrong = []
    for module in PACKAGE.rglob("*.py"):
        here = RANK.get(stage(module), 0)
        for other in imported_stages(module):
            if RANK.get(other, 0) > here:
                wrong.append(f"{module.relative_to(PACKAGE)} imports {other}")
    assert not wrong, wrong


def test_modules_stay_small() -> None:
    long = {str(m.relative_to(PACKAGE)): n for m in PACKAGE.rglob("*.py") if (n := len(m.read_text().splitlines())) > 310}
    assert not long, long


def test_readme_diagram_names_every_module() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    diagram = readme[readme.index("## Architecture"):readme.index("## Benchmarks")]
    missing = [str(m.relative_to(PACKAGE)) for m in PACKAGE.rglob("*.py")
               if not m.name.startswith("__") and m.stem not in diagram]
    assert not missing, missing
    for folder in (p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        assert f"{folder}/" in diagram, folder

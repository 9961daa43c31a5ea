"""The layout keeps its promises (docs/architecture.md, "The tree"): dependencies point one way,
`methods/` lists methods, the config reads no heavy module, and the tree in the docs names every
module that exists."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import get_class

from tests.conftest import CONF, REPO, compose


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside a function (absolute imports)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_nothing_in_bench_imports_methods_or_tasks():
    wrong = {}
    for path in sources("bench"):
        found = sorted(m for m in imported_modules(path) if m.split(".")[0] in ("methods", "tasks"))
        if found:
            wrong[str(path.relative_to(REPO))] = found
    assert not wrong


@pytest.mark.parametrize(("package", "other"), [("bench/perf", "bench.run"), ("bench/run.py", "bench.perf")])
def test_perf_and_the_runner_do_not_import_each_other(package, other):
    paths = [REPO / package] if package.endswith(".py") else sources(package)
    found = {str(p.relative_to(REPO)) for p in paths if any(m.startswith(other) for m in imported_modules(p))}
    assert not found


def test_methods_lists_methods_and_base_the_shared_blocks():
    """Every module of methods/ holds a class some conf/method/*.yaml names; the building blocks
    that no method file names live in methods/base/."""
    named = {
        get_class(compose(f"method={p.stem}").method["_target_"]).__module__ for p in (CONF / "method").glob("*.yaml")
    }
    modules = {f"methods.{p.stem}" for p in (REPO / "methods").glob("*.py") if p.stem != "__init__"}
    assert modules == named
    assert not any(m.startswith("methods.base.") for m in named)


def test_the_config_loads_without_torch():
    """bench.config reads bench/models/targets.py: the models package must not pull in torch, so
    --help and --cfg job stay fast."""
    code = "import sys, bench.config, bench.cli_check; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_tree_in_the_docs_names_every_module():
    text = (REPO / "docs" / "architecture.md").read_text()
    tree = text[text.index("## The tree") :]
    missing = []
    for path in sources("bench") + sources("methods/base") + sources("tasks"):
        if path.stem not in ("__init__", "__main__") and f"{path.stem}.py" not in tree:
            missing.append(str(path.relative_to(REPO)))
    assert not missing, f"docs/architecture.md's tree does not name: {missing}"

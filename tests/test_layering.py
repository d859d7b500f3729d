"""The layering rule of DESIGN/issue 10: nothing outside ``sandbox/`` and ``tests/`` imports the sandbox, at
module level or inside a function."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The product's files: not the sandbox, the tests or what is installed (.venv, .venv-checkov, node_modules).
OUTSIDE = [p for top in ROOT.iterdir() if top.name not in ("sandbox", "tests", "node_modules", "build")
           and not top.name.startswith(".") for p in ([top] if top.suffix == ".py" else top.rglob("*.py"))]


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_the_checked_files_include_the_product():
    names = {p.relative_to(ROOT).as_posix() for p in OUTSIDE}
    assert {"function_app.py", "shared/cli.py", "shared/deliver/worker.py", "functions/submit_worker/__init__.py"} <= names


def test_nothing_outside_the_sandbox_and_the_tests_imports_the_sandbox():
    offending = [f"{p.relative_to(ROOT)}:{line} imports {name}" for p in OUTSIDE for line, name in _imports(p)
                 if name == "sandbox" or name.startswith("sandbox.")]
    assert offending == []


def _package_imports(package: str) -> list[tuple[str, int, str]]:
    return [(p.relative_to(ROOT).as_posix(), line, name) for p in sorted((ROOT / "shared" / package).rglob("*.py"))
            for line, name in _imports(p)]


@pytest.mark.parametrize("package, forbidden", [
    ("produce", ("shared.deliver",)),     # producers and the worker meet only in shared/contract/
    ("deliver", ("shared.produce",)),
    ("contract", ("shared.produce", "shared.deliver", "shared.clients", "shared.records")),  # the contract is data
    ("records", ("shared.produce", "shared.deliver", "shared.clients", "shared.store")),   # pure: no I/O
])
def test_the_layers_import_only_downwards(package, forbidden):
    found = _package_imports(package)
    assert found, f"shared/{package} has no imports to check"
    offending = [f"{path}:{line} imports {name}" for path, line, name in found
                 if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert offending == []


def test_the_layer_rule_would_catch_an_import(tmp_path):
    # The checker itself: an import of the worker from a producer is found.
    module = tmp_path / "bad.py"
    module.write_text("from shared.deliver.worker import push_queued\n", encoding="utf-8")
    assert _imports(module) == [(1, "shared.deliver.worker")]


PRODUCT = [p for p in OUTSIDE if p.relative_to(ROOT).parts[0] in ("shared", "functions") or p.name == "function_app.py"]


def test_every_public_function_and_class_of_shared_is_used_by_the_product():
    """Issue 10: no public function stays that only the tests or the sandbox use (it belongs there, or goes)."""
    texts = {p: p.read_text(encoding="utf-8") for p in PRODUCT}
    unused = []
    for path in (p for p in PRODUCT if p.relative_to(ROOT).parts[0] == "shared"):
        for node in ast.parse(texts[path]).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                word = re.compile(rf"\b{re.escape(node.name)}\b")
                if len(word.findall(texts[path])) <= 1 and not any(word.search(t) for q, t in texts.items()
                                                                  if q != path):
                    unused.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert unused == []

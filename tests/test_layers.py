"""The house's rules, checked by the tools configured in pyproject.toml.

``lint-imports`` keeps the layers (only ``ppvae.backends`` imports a framework; the two
backends never import each other), ``ruff check`` keeps the code free of pyflakes
errors and ``ruff format --check`` keeps one layout. They run here so that the README's one test command, which CI runs, checks them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    # The tool installed beside this interpreter (the test extras), not one from elsewhere on PATH.
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; pip install -e '.[test]' brings it")
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    res = _run(_tool("lint-imports"), "--no-cache")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_every_module_outside_backends_is_under_the_framework_contract():
    # The forbidden contract lists its source modules; a new module or package that is not
    # listed would escape it, so the list must name everything in ppvae but the backends.
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    listed = set(next(c for c in contracts if c["type"] == "forbidden")["source_modules"])
    present = {
        f"ppvae.{p.stem if p.is_file() else p.name}"
        for p in (ROOT / "ppvae").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert present - {"ppvae.backends"} == listed


def _import_cycles(package: str) -> list[list[str]]:
    """The strongly connected components of more than one module in the package's import graph."""
    import grimp

    graph = grimp.build_graph(package, cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                cycles.append(sorted([v, *component]))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycle_in_the_package():
    # Imports inside functions count: grimp reads every import statement, wherever it stands.
    assert _import_cycles("ppvae") == []


def test_no_module_imports_another_modules_private_name():
    # A leading underscore says "this module's own": a name another module needs is public.
    import ast

    offenders = []
    for path in sorted((ROOT / "ppvae").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ppvae")):
                offenders += [
                    f"{path.relative_to(ROOT)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert offenders == []


def test_ruff_check_passes():
    res = _run(_tool("ruff"), "check", "--no-cache", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_format_leaves_every_file_as_it_is():
    # One layout for the whole tree (pyproject.toml [tool.ruff.format]); fix with: ruff format .
    res = _run(_tool("ruff"), "format", "--check", "--no-cache", ".")
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_framework_import_outside_backends_breaks_the_contract(tmp_path):
    # The contract must be able to fail: a copy of the package whose atomic-write module imports
    # torch inside a function (imports in functions count) is reported as broken.
    res = _lint_patched_copy(tmp_path, "runs/atomic.py", "import torch  # noqa: F401")
    assert res.returncode != 0
    assert "ppvae.runs is not allowed to import torch" in res.stdout
    assert "ppvae.runs.atomic -> torch" in res.stdout


def test_an_import_from_a_higher_layer_breaks_the_layers_contract(tmp_path):
    # The spec layer reaching up into the API (even inside a function) is reported.
    res = _lint_patched_copy(tmp_path, "spec/config.py", "import ppvae.api  # noqa: F401")
    assert res.returncode != 0
    assert "ppvae.spec is not allowed to import ppvae.api" in res.stdout


def _lint_patched_copy(tmp_path: Path, module: str, statement: str) -> subprocess.CompletedProcess:
    pkg = tmp_path / "ppvae"
    shutil.copytree(ROOT / "ppvae", pkg, ignore=shutil.ignore_patterns("__pycache__", "embedded"))
    with (pkg / module).open("a") as fh:
        fh.write(f"\n\ndef _probe():\n    {statement}\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env
    )


def test_the_top_level_holds_only_the_package_face():
    # The face: __init__, __main__, api (fit), run (load and Run), errors; everything else
    # lives in a package that says which layer it belongs to.
    modules = sorted(p.name for p in (ROOT / "ppvae").glob("*.py"))
    assert len(modules) <= 6, modules
    assert modules == ["__init__.py", "__main__.py", "api.py", "errors.py", "run.py"]


def test_every_package_opens_with_a_docstring():
    import ast

    for init in (ROOT / "ppvae").rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.relative_to(ROOT)} has no docstring saying what lives in it"

"""What `pip install .` must bring for the tracker to run, and how the tracker uses the shared BLAS."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

from tracker.pipeline import one_blas_thread

REPO = Path(__file__).resolve().parent.parent


def _runtime_requirements() -> set[str]:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in project["dependencies"]}


def test_runtime_dependencies_cover_every_import_of_the_tracker():
    # A package the tracker imports but only the test extra installs works in CI and fails for a user who
    # ran the README's `pip install -e .` (SciPy once did: the 3D fit's kernels need it).
    imported = set()
    for path in (REPO / "tracker").glob("*.py"):
        tree = ast.parse(path.read_text())
        # Imports for type checkers only (`if TYPE_CHECKING:`) never run.
        typing_only = {id(n) for block in ast.walk(tree)
                       if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                       for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"tracker", "__future__"}
    # TensorRT and CUDA's Python bindings are optional: the TensorRT backend imports them lazily.
    optional = {"tensorrt", "cuda", "pycuda"}
    distributions = packages_distributions()
    wanted = _runtime_requirements()
    missing = {}
    for module in sorted(third_party - optional):
        names = {d.lower() for d in distributions.get(module, [module])}
        if not names & wanted:
            missing[module] = sorted(names)
    assert not missing, f"imported by tracker/ but not in pyproject's dependencies: {missing}"


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_one_blas_thread_inside_and_restored_after():
    before = _blas_threads()
    assert before, "no BLAS library loaded"
    with one_blas_thread():
        assert _blas_threads() == [1] * len(before)
    assert _blas_threads() == before

"""What `pip install .` must bring for the tracker to run, and how the tracker uses the shared BLAS."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import cv2
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from tracker import pipeline
from tracker.pipeline import FaceTracker, TrackerConfig, one_blas_thread

REPO = Path(__file__).resolve().parent.parent
# TensorRT's Python packages are optional: the TensorRT backend imports them inside a function, lazily.
LAZY_OPTIONAL = {"tensorrt", "pycuda"}


def _runtime_requirements() -> set[str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in project["dependencies"]}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Top-level names of the modules a file imports when it runs: (at module level, inside functions).
    Imports for type checkers only (`if TYPE_CHECKING:`) never run."""
    module_level, in_functions = set(), set()

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, in_function)
            return
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        (in_functions if in_function else module_level).update(n.split(".")[0] for n in names)
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return module_level, in_functions


def test_runtime_dependencies_cover_every_import_of_the_tracker():
    # A package the tracker imports but only the test extra installs works in CI and fails for a user who
    # ran the README's `pip install -e .` (SciPy once did: the 3D fit's kernels need it).
    module_level, in_functions = set(), set()
    for path in (REPO / "tracker").glob("*.py"):
        top, lazy = _imports(ast.parse(path.read_text()))
        module_level |= top
        in_functions |= lazy
    first_party = {"tracker", "__future__"}
    needed = (module_level | (in_functions - LAZY_OPTIONAL)) - set(sys.stdlib_module_names) - first_party
    assert {"numpy", "cv2", "onnxruntime", "numba", "scipy"} <= needed  # the scan sees the tracker's imports
    assert not module_level & LAZY_OPTIONAL, "TensorRT must stay a lazy import"
    distributions = packages_distributions()
    wanted = _runtime_requirements()
    missing = {}
    for module in sorted(needed):
        names = {d.lower() for d in distributions.get(module, [module])}
        if not names & wanted:
            missing[module] = sorted(names)
    assert not missing, f"imported by tracker/ but not in pyproject's dependencies: {missing}"


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_one_blas_thread_inside_and_restored_after():
    # SciPy's BLAS (the fit's kernels) must be among the libraries limited, not only NumPy's.
    assert any("scipy" in lib["filepath"] for lib in pipeline._BLAS_POOLS.info() if lib["user_api"] == "blas")
    with threadpool_limits(limits=2, user_api="blas"):  # more than one thread, whatever the environment set
        before = _blas_threads()
        assert max(before) == 2
        with one_blas_thread():
            assert set(_blas_threads()) == {1}
            with one_blas_thread():  # nested (or another tracker's thread): the limit holds until the last exit
                pass
            assert set(_blas_threads()) == {1}
        assert _blas_threads() == before


def test_a_frame_runs_its_blas_on_one_thread(afw_dir):
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime"))
    mapping = tracker.mapping
    inside = []

    def crop_landmarks(points):  # the 468 -> 68 map: a BLAS product, observed, its result unchanged
        inside.append(set(_blas_threads()))
        return type(mapping).crop_landmarks(mapping, points)

    mapping.crop_landmarks = crop_landmarks
    image = cv2.imread(str(min(afw_dir.glob("*.jpg"))))
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        result = tracker.process(image, still=True)
        assert _blas_threads() == before
    assert result.faces and np.isfinite(result.faces[0].landmarks).all()
    assert inside and all(threads == {1} for threads in inside)

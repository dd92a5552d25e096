"""What `pip install .` must bring for the tracker to run, and how the tracker uses the shared BLAS."""

from __future__ import annotations

import ast
import os
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


def test_engines_are_found_installed_with_the_package_or_in_the_checkout(tmp_path):
    from tracker.engines import default_engines_dir

    package = tmp_path / "site" / "tracker"
    package.mkdir(parents=True)
    assert default_engines_dir(package) == tmp_path / "site" / "engines"  # a checkout: the repository's engines/
    (package / "models").mkdir()
    assert default_engines_dir(package) == package / "models"  # pip install .: installed with the code


def test_a_wheel_holds_the_models_and_their_licences_and_its_install_finds_them(tmp_path):
    """`pip install .` (not editable) must bring the model files and the notices that go with them (the MIT notice
    of ICT-FaceKit's, the Apache notice of MediaPipe's), and the installed tracker must find them."""
    import shutil
    import subprocess
    import zipfile

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__}: the package's licence files need 77 or later")
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    for folder in ("tracker", "engines"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "trt_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p.name for p in (REPO / "engines").iterdir() if p.suffix in (".onnx", ".npz")]
    assert len(shipped) >= 10 and all(f"tracker/models/{name}" in names for name in shipped), sorted(names)
    for notice in ("LICENSE-ICT-FaceKit.txt", "LICENSE-mediapipe.txt"):
        assert f"tracker/models/{notice}" in names  # beside the models derived from them
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "FACE_TRACKER_ENGINES"} | {"PYTHONPATH": str(site)}
    found = subprocess.run([sys.executable, "-c", "from tracker.engines import ENGINES_DIR; print(ENGINES_DIR)"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout.strip()
    assert Path(found) == site / "tracker" / "models" and (Path(found) / "refiner.onnx").is_file()

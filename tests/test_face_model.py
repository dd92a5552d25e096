"""The committed reduced face model, engines/face_model.npz (built by tools/build_face_model.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "engines" / "face_model.npz"
ICT_DIR = REPO.parent / "shared" / "data" / "face_model"
ARRAYS = {"arkit_names", "mean", "id_basis", "exp_basis", "normals", "lm68", "mesh468", "mesh468_tris",
          "contour", "silhouette", "rigid"}
# MediaPipe canonical vertex -> iBUG 68 point with the same meaning.
KNOWN_PAIRS = ((33, 36), (263, 45), (61, 48), (291, 54), (152, 8))
RIGID_68 = (0, 36, 39, 42, 45, 16, 28, 31, 35)


@pytest.fixture(scope="module")
def model() -> dict[str, np.ndarray]:
    with np.load(MODEL) as d:  # no allow_pickle: the file must not need it
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def ict() -> dict[str, np.ndarray]:
    path = ICT_DIR / "ict_face.npz"
    if not path.is_file():
        pytest.skip(f"shared ICT data {path} is absent")
    with np.load(path) as d:
        return {k: d[k] for k in ("mean", "id_basis", "exp_basis", "exp_names", "lm68")}


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_face_model", REPO / "tools" / "build_face_model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_arrays_shapes_dtypes(model: dict[str, np.ndarray]) -> None:
    assert set(model) == ARRAYS
    assert MODEL.stat().st_size < 3_000_000
    p = len(model["mean"])
    assert 300 <= p <= 1200
    for key in ("mean", "normals"):
        assert model[key].shape == (p, 3) and model[key].dtype == np.float32
    assert model["id_basis"].shape == (100, p, 3) and model["id_basis"].dtype == np.float32
    assert model["exp_basis"].shape == (52, p, 3) and model["exp_basis"].dtype == np.float32
    for key, shape in (("lm68", (68,)), ("mesh468", (468,)), ("rigid", (9,))):
        assert model[key].shape == shape and model[key].dtype == np.int32
    for key in ("lm68", "mesh468", "silhouette", "rigid"):
        assert model[key].min() >= 0 and model[key].max() < p
    assert len(np.unique(model["lm68"])) == 68
    for key in ("mean", "id_basis", "exp_basis", "normals"):
        assert np.isfinite(model[key]).all()
    # Points are deduplicated: no two share a position on the neutral face.
    assert len(np.unique(model["mean"].round(5), axis=0)) == p


def test_arkit_names(model: dict[str, np.ndarray]) -> None:
    names = [str(n) for n in model["arkit_names"]]
    assert len(names) == 52 == len(set(names))
    # Apple's documented order: left eye first, tongue last.
    assert names[:2] == ["eyeBlinkLeft", "eyeLookDownLeft"] and names[7] == "eyeBlinkRight"
    assert names[-1] == "tongueOut" and "jawOpen" in names and "browInnerUp" in names
    assert not any(n.endswith(("_L", "_R")) for n in names)


def test_expression_semantics(model: dict[str, np.ndarray]) -> None:
    names = [str(n) for n in model["arkit_names"]]
    exp, mean, lm = model["exp_basis"], model["mean"], model["lm68"]
    assert not exp[names.index("tongueOut")].any()
    # Left is the subject's left, which is model x > 0.
    for name in ("eyeBlinkLeft", "mouthSmileLeft", "browOuterUpLeft"):
        mag = np.linalg.norm(exp[names.index(name)], axis=1)
        assert mag[mean[:, 0] > 0].sum() > 10 * mag[mean[:, 0] < 0].sum(), name
        mirror = np.linalg.norm(exp[names.index(name.replace("Left", "Right"))], axis=1)
        assert mirror[mean[:, 0] < 0].sum() > 10 * mirror[mean[:, 0] > 0].sum(), name
    assert exp[names.index("jawOpen")][lm[8], 1] < -1.0  # the chin drops (cm)
    assert exp[names.index("jawLeft")][lm[8], 0] > 0.3  # towards the subject's left


def test_geometry(model: dict[str, np.ndarray]) -> None:
    mean, lm, normals = model["mean"], model["lm68"], model["normals"]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    assert normals[lm[30], 2] > 0.9  # nose tip faces out of the face (+z)
    assert mean[lm[36], 0] < 0 < mean[lm[45], 0]  # point 36 is the subject's right eye corner
    assert mean[lm[30], 2] > mean[lm[27], 2]  # the nose tip is in front of the nose bridge
    inter_ocular = np.linalg.norm(mean[lm[36]] - mean[lm[45]])
    assert 8.0 < inter_ocular < 10.0  # cm
    np.testing.assert_array_equal(model["rigid"], lm[list(RIGID_68)])


def test_lm68_matches_ict(model: dict[str, np.ndarray], ict: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    lm, vid = model["lm68"], ict["lm68"]
    names = [str(n) for n in model["arkit_names"]]
    ict_names = [str(n) for n in ict["exp_names"]]
    alpha = rng.normal(size=100)
    expr = rng.uniform(0, 1, size=52)
    # The same expression in ICT's terms (eyeBlink_L <- eyeBlinkLeft); a shape that ARKit does
    # not split (browInnerUp, cheekPuff) drives both ICT halves with its one weight.
    ict_expr = np.zeros(len(ict_names))
    for i, n in enumerate(ict_names):
        side = {"_L": "Left", "_R": "Right"}.get(n[-2:])
        arkit = n if side is None else n[:-2] + side
        ict_expr[i] = expr[names.index(arkit if arkit in names else n[:-2])]
    ours = (model["mean"][lm] + np.einsum("k,kpc->pc", alpha, model["id_basis"][:, lm])
            + np.einsum("k,kpc->pc", expr, model["exp_basis"][:, lm]))
    theirs = (ict["mean"][vid] + np.einsum("k,kpc->pc", alpha, ict["id_basis"][:, vid])
              + np.einsum("k,kpc->pc", ict_expr, ict["exp_basis"][:, vid]))
    np.testing.assert_allclose(model["mean"][lm], ict["mean"][vid], atol=1e-4)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_mesh468_correspondence(model: dict[str, np.ndarray]) -> None:
    mean, lm, mesh = model["mean"], model["lm68"], model["mesh468"]
    assert len(np.unique(mesh)) == 468
    for mp, ibug in KNOWN_PAIRS:
        dist = np.linalg.norm(mean[mesh[mp]] - mean[lm[ibug]])
        assert dist < 1.0, (mp, ibug, dist)
    tris = model["mesh468_tris"]
    assert tris.ndim == 2 and tris.shape[1] == 3 and tris.dtype == np.int32
    assert tris.min() == 0 and tris.max() == 467 and len(np.unique(tris)) == 468


def test_contour(model: dict[str, np.ndarray]) -> None:
    contour, lm, mean = model["contour"], model["lm68"], model["mean"]
    assert contour.shape[0] == 17 and contour.dtype == np.int32
    for j, row in enumerate(contour):
        valid = row[row >= 0]
        assert (row[len(valid):] == -1).all(), "padding only at the end"
        assert valid.max() < len(mean) and lm[j] in valid
        assert len(np.unique(valid)) == len(valid)
        if j == 8:
            continue
        assert len(valid) >= 2
        side = -1 if j < 8 else 1  # subject's right jaw is at x < 0
        assert (side * mean[valid, 0] > 0).all()
    np.testing.assert_array_equal(contour[8][contour[8] >= 0], [lm[8]])
    # Upper jaw rows slide far: their candidates span the cheek, front to back.
    for j in (2, 14):
        valid = contour[j][contour[j] >= 0]
        assert np.ptp(mean[valid, 2]) > 3.0


def test_silhouette(model: dict[str, np.ndarray]) -> None:
    ring, mean, lm = model["silhouette"], model["mean"], model["lm68"]
    assert len(ring) >= 30 and len(np.unique(ring)) == len(ring)
    pts = mean[ring]
    assert lm[8] in ring  # the outline passes the chin
    assert pts[:, 1].max() > mean[lm[19], 1] + 2  # and the forehead above the brows
    assert pts[:, 0].min() < mean[lm[0], 0] + 0.5 and pts[:, 0].max() > mean[lm[16], 0] - 0.5
    steps = np.linalg.norm(np.diff(np.vstack([pts, pts[:1]]), axis=0), axis=1)
    assert steps.max() < 2.0  # a connected ring, no jumps


def test_missing_shared_data_exits_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_tool()
    assert tool.main(["--shared", str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 2
    assert "missing" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_committed_file_matches_rebuild(model: dict[str, np.ndarray], tmp_path: Path) -> None:
    if not (ICT_DIR / "ict_face.npz").is_file():
        pytest.skip("shared ICT data is absent")
    out = tmp_path / "face_model.npz"
    assert load_tool().main(["--out", str(out)]) == 0
    with np.load(out) as fresh:
        for key in ARRAYS:
            if model[key].dtype.kind == "f":
                np.testing.assert_allclose(fresh[key], model[key], atol=1e-5, err_msg=key)
            else:
                np.testing.assert_array_equal(fresh[key], model[key], err_msg=key)

"""Cheap checks of the evaluation tools' own logic (no rendering, no tracker run)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def _load(name: str):
    sys.path.insert(0, str(REPO / "tools"))
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def er():
    return _load("evaluate_renders")


@pytest.fixture(scope="module")
def pb():
    return _load("plot_blendshapes")


def test_trajectory_is_broad_and_bounded(er):
    rng = np.random.default_rng(1000)
    pose, shapes = er.held_out_trajectory(rng, 120, 0.0, 60.0)
    assert pose.shape == (120, 3)
    assert np.abs(pose[:, 0]).max() > 50  # the full sweep reaches far yaw
    assert set(shapes) == set(er.KEY_SHAPES)
    for name, x in shapes.items():
        assert x.min() >= 0.0 and x.max() <= 1.0, name
        assert x.max() - x.min() > 0.5, name  # driven strongly, not a token wiggle
    assert np.abs(er.smooth_signal(rng, 50, 0.1, 1.0)).max() == pytest.approx(1.0)


def test_more_held_out_clips_keep_the_first_six_and_the_stills(er):
    def keys(seeds):
        return [s.spawn_key for s in seeds]

    six, stills = er.set_seeds(1000, 6, 150)
    before = np.random.SeedSequence(1000).spawn(156)  # the partition of the six-clip set
    assert keys(six) == keys(before[:6]) and keys(stills) == keys(before[6:])
    clips, stills24 = er.set_seeds(1000, 24, 150)
    assert keys(clips[:6]) == keys(six) and keys(stills24) == keys(stills)
    assert len(set(keys(clips)) | set(keys(stills24))) == 24 + 150
    assert keys(er.set_seeds(7, 0, 5)[1]) == keys(np.random.SeedSequence(7).spawn(5))  # stills alone (dlib_reference)


def test_pose_stats_wraps_angles_and_signs_bias(er):
    a = {"true_pose": np.array([[179.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
         "est_pose": np.array([[-179.0, 2.0, -1.0], [np.nan, np.nan, np.nan]])}
    s = er.pose_stats(a, np.ones(2, bool))
    assert s["found"] == 0.5
    assert s["yaw_mae"] == pytest.approx(2.0) and s["yaw_bias"] == pytest.approx(2.0)
    assert s["pitch_bias"] == pytest.approx(2.0) and s["roll_bias"] == pytest.approx(-1.0)


def test_blink_events_need_rearming(pb):
    x = np.array([0, 0.6, 0.4, 0.7, 0.1, 0.8, np.nan, 0.2])
    assert pb.events(x, 0.5, 0.3) == 2  # 0.4 does not re-arm; 0.1 does


def test_landmark_openings(pb):
    lm = np.zeros((68, 2))
    lm[36], lm[45] = (0.0, 0.0), (10.0, 0.0)
    lm[62], lm[66] = (5.0, 10.0), (5.0, 12.0)
    lm[43], lm[47], lm[44], lm[46] = (7, 0), (7, 1), (8, 0), (8, 1)  # left eye lids 1 apart
    np.testing.assert_allclose(pb.landmark_openings(lm), [0.2, 0.1, 0.0])


def test_plot_draws_with_gaps(pb, tmp_path):
    n = 90
    t = np.arange(n) / 30.0
    w = {k: np.clip(np.sin(t * (i + 1)), 0, 1) for i, k in enumerate(pb.SERIES)}
    w["jawOpen"][10:20] = np.nan  # frames without a face
    track = pb.Track(t, w, np.abs(np.random.default_rng(0).normal(0.1, 0.05, (n, 3))), 30.0, (640, 480))
    img = pb.draw(track, Path("clip.mp4"), 0.5, "onnxruntime")
    assert img.shape == (900, 1600, 3) and img.dtype == np.uint8
    assert (img < 250).any(axis=2).mean() > 0.02  # something was drawn on the white
    ev = pb.evidence(track, 0.5)
    assert ev["found"] == n and set(ev["series"]) == set(pb.SERIES)


def test_dlib_reference_on_two_afw_images():
    """tools/dlib_reference.py's core on 2 afw images: dlib and our tracker both land near the truth."""
    pytest.importorskip("dlib", reason="dlib is tool-time only: pip install dlib-bin face-recognition-models")
    dr = _load("dlib_reference")
    folder = dr.LANDMARKS68 / "afw"
    if not folder.is_dir():
        pytest.skip(f"shared data not found: {folder}")
    try:
        predictor = dr.predictor_path()
    except ImportError:
        predictor = None
    if predictor is None or not predictor.is_file():
        pytest.skip("dlib's 68-point model not found (pip install face-recognition-models)")
    result = dr.run(dr.afw_samples(folder, limit=2), predictor=predictor)
    for name in dr.PIPELINES:
        q = result[name]
        assert q["images"] == 2, name
        assert q["detection_rate"] > 0, name
        for key in ("nme", "nme_jaw", "nme_inner51", "ms_per_image"):
            assert np.isfinite(q[key]), (name, key)
        assert 0 < q["nme"] < 0.10, name
        assert 0 <= q["auc_0.08"] <= 1, name


def test_model_params_fit_recovers_a_projected_face():
    # The truth θ the refiner's 3D branch learns: fitted to the model's own projection of a known θ
    # (plus 0.5 px noise), the projection lands on the points and the camera's yaw comes back (2D points
    # leave some trade between the camera and the shape: jawOpen against pitch, identity against depth).
    tr = _load("train_refiner")
    rng = np.random.default_rng(4)
    n = 40
    yaw = rng.uniform(-0.8, 0.8, n)
    scale = rng.uniform(6.0, 10.0, n)
    rows = np.stack([np.stack([np.cos(yaw), np.zeros(n), np.sin(yaw)], 1), np.tile([0.0, -1.0, 0.0], (n, 1))], 1)
    camera = rows * scale[:, None, None] / tr.PX_PER_CM
    expression = np.where(rng.uniform(size=(n, 52)) < 0.1, rng.uniform(0.2, 0.9, (n, 52)), 0.0)
    theta = np.concatenate([camera.reshape(n, 6), rng.uniform(0.4, 0.6, (n, 2)),
                            rng.normal(0, 0.5, (n, tr.MODEL_IDENTITY)), expression], 1)
    points = tr.project_params(theta) + rng.normal(0, 0.5, (n, 68, 2))
    for known in (np.full((n, 52), np.nan), expression):  # expressions fitted, or given as for renders
        fitted = tr.fit_model_params(points, known)
        residual = np.linalg.norm(tr.project_params(fitted) - points, axis=-1)[:, tr.INNER].mean()
        assert residual < 1.0, residual  # px; the noise alone leaves ~0.6
        yaw_error = np.degrees(np.abs(np.arctan2(fitted[:, 2], fitted[:, 0]) - yaw))
        assert yaw_error.mean() < 1.5 and yaw_error.max() < 4.0, yaw_error


def test_graph_sampler_is_the_training_sampler():
    """The exported graph samples the feature maps with its own formulation (fewer graph ops) while the
    training stages keep theirs: both must be grid_sample (align_corners=False, border) in crop pixels,
    for points inside and outside the crop, on both maps' sizes, each face on its own map (batch 3)."""
    torch = pytest.importorskip("torch", reason="PyTorch is tool-time only: pip install torch==2.13.0")
    import torch.nn.functional as F

    tr = _load("train_refiner")
    _, _, sample = tr.build_model()
    _, _, graph_sample = tr.build_model(graph_sampler=True)
    assert (sample.__name__, graph_sample.__name__) == ("sample", "sample_corner_major")
    gen = torch.Generator().manual_seed(3)
    for n, c, side in ((1, 32, 48), (3, 64, 24)):
        maps = torch.randn(n, c, side, side, generator=gen)
        points = torch.rand(n, 85, 2, generator=gen) * (tr.CROP + 40) - 20  # some beyond every edge
        grid = (points + 0.5) / (tr.CROP / 2) - 1
        want = F.grid_sample(maps, grid.unsqueeze(2), align_corners=False, padding_mode="border")[..., 0]
        want = want.transpose(1, 2)  # N, P, C
        got = graph_sample(maps, points)
        assert got.shape == (n, 85, c)
        assert float((got - want).abs().max()) < 1e-5
        assert float((got - sample(maps, points)).abs().max()) < 1e-5


def test_torch_executor_of_the_refiner_graph_matches_onnx_runtime():
    """tools/bench_batch.py runs engines/refiner.onnx op by op in PyTorch (the CUDA stand-in for TensorRT):
    its outputs must be ONNX Runtime's, and an op it does not implement must be refused, not skipped."""
    pytest.importorskip("torch", reason="PyTorch is tool-time only: pip install torch==2.13.0")
    bb = _load("bench_batch")
    from tracker.backends import create_session, model_path

    session = create_session(bb.REFINER_FILE, "onnxruntime")
    graph = bb.TorchGraph(model_path(bb.REFINER_FILE), "cpu")
    assert bb.parity(graph, session, batch=2) < bb.PARITY_TOLERANCE
    # A changed input must change the outputs the same way in both (the executor really reads its inputs).
    feeds = {k: np.repeat(v[:1], 2, axis=0) for k, v in bb.make_inputs(2, seed=5).items()}
    feeds["landmarks"][1] += 3.0  # the same face, its starting shape moved by 3 px
    ours = session.run(feeds)
    theirs = dict(zip(graph.outputs, graph(feeds)))
    assert np.abs(ours["refined"][1] - ours["refined"][0]).max() > 1.0
    np.testing.assert_allclose(theirs["refined"].numpy(), ours["refined"], atol=bb.PARITY_TOLERANCE)
    graph.nodes[0].op_type = "NotAnOnnxOp"
    with pytest.raises(SystemExit, match="NotAnOnnxOp"):
        graph(feeds)


def test_a_section_names_the_command_that_wrote_it_with_its_options(monkeypatch):
    """The "Command:" line of a tool's BENCHMARKS.md section is the run's own: its options, not --no-write."""
    report = _load("report")
    monkeypatch.setattr(sys, "argv", [str(REPO / "tools" / "bench_fit.py"), "--frames", "20", "--no-write"])
    assert report.invocation() == "python tools/bench_fit.py --frames 20"
    monkeypatch.setattr(sys, "argv", [str(REPO / "tools" / "evaluate.py"), "--images", "/data/my faces"])
    assert report.invocation() == "python tools/evaluate.py --images '/data/my faces'"
    assert report.positive_int("3") == 3
    for bad in ("0", "-2", "x"):
        with pytest.raises(Exception, match="expected"):
            report.positive_int(bad)


def _refused(*command: str, env: dict | None = None) -> str:
    """Run a tool that must refuse its input: quickly, with exit status 1 or 2 and one error line (after
    argparse's usage, if any), never a traceback. Returns that line."""
    done = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env=env, check=False)
    assert done.returncode in (1, 2), (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0]), done.stderr
    return errors[0]


@pytest.mark.parametrize(("command", "expected"), [
    (("tools/calibrate_landmarks.py", "--seed", "-5"), "--seed: expected a non-negative integer"),
    (("tools/evaluate_renders.py", "--clips", "-1"), "--clips: expected a non-negative integer"),
    (("tools/train_refiner.py", "train", "--epochs", "0"), "--epochs: expected a positive integer"),
    (("tools/calibrate_crop_offsets.py", "--out", "/nonexistent/o.npz"), "no folder '/nonexistent'"),
    (("tools/render_ict.py", "--out", "README.md"), "'README.md' is a file, not a folder"),
    (("tools/evaluate.py", "--no-write", "--worst", "README.md"), "'README.md' is a file, not a folder"),
    (("tools/evaluate.py", "--no-write", "--plots", "README.md/ced"), "cannot make the folder 'README.md/ced'"),
    (("tools/evaluate_hard_cases.py", "--faces", "5"), "the group photo needs at least 30 faces"),
    (("tools/evaluate_hard_cases.py", "--no-face-pictures", "0"), "--no-face-pictures: expected a positive integer"),
    (("tools/train_refiner.py", "evaluate", "--images", "/nonexistent"), "--images: /nonexistent not found"),
    (("tools/tune_fit_weights.py", "depth", "--values", "0.1", "-1"), "--values: expected a non-negative number"),
    (("tools/convert_tflite.py", "--out", "README.md"), "'README.md' is a file, not a folder"),
    (("tools/calibrate_pose_error.py", "--held-out-stills", "3"), "--held-out-stills must be at least 4"),
    (("tools/calibrate_blendshape_error.py", "--held-out-stills", "3"), "--held-out-stills must be at least 4"),
])
def test_tools_refuse_bad_arguments_before_any_work(command, expected):
    assert expected in _refused(*command)


def test_tools_without_a_tool_time_dependency_say_so_in_one_line(tmp_path):
    # A module that cannot be imported, as where mediapipe or torch is not installed.
    for name in ("mediapipe", "torch"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('not installed (a stand-in)')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for command in (("tools/bench.py", "--no-write", "--clip", "README.md"),
                    ("tools/jitter.py", "--no-write", "--clips", "README.md"),
                    ("tools/evaluate_hard_cases.py", "--no-write", "--images", "README.md"),
                    ("tools/convert_tflite.py", "--out", str(tmp_path / "engines"))):
        line = _refused(*command, env=env)
        assert "mediapipe" in line and "tool-time dependency: pip install -e '.[test]'" in line
    assert not (tmp_path / "engines").exists()
    assert "the train stage needs PyTorch" in _refused("tools/train_refiner.py", "train", env=env)


def test_argument_types_refuse_negative_counts_and_files_as_folders(tmp_path):
    report = _load("report")
    assert report.non_negative_int("0") == 0 and report.non_negative_int("7") == 7
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(Exception, match="expected a non-negative integer"):
            report.non_negative_int(bad)
    (tmp_path / "file").write_text("")
    assert report.folder_to_write(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # made by the tool when it writes: a refused run leaves nothing
    with pytest.raises(Exception, match="is a file, not a folder"):
        report.folder_to_write(str(tmp_path / "file"))
    with pytest.raises(Exception, match="cannot make the folder .*is a file"):
        report.folder_to_write(str(tmp_path / "file" / "below"))


def test_evaluate_names_a_run_by_its_folder_detector_and_backend(monkeypatch, tmp_path):
    """The default run keeps its section, plots and command; `--images .` is named after the folder itself,
    and another backend gets a section and plots of its own and says so in its command."""
    ev = _load("evaluate")
    assert ev.run_names(ev.LANDMARKS68 / "afw", "short", "onnxruntime") == (
        "afw", "landmarks-afw-short", "afw", "python tools/evaluate.py")
    monkeypatch.chdir(tmp_path)
    folder, section, plot, command = ev.run_names(Path("."), "full", "opencv")
    assert folder == tmp_path.name and plot == f"{tmp_path.name}-full-opencv"
    assert section == f"landmarks-{tmp_path.name}-full-opencv"
    assert command == "python tools/evaluate.py --images . --detector full --backend opencv"


def test_tools_without_the_shared_data_say_where_it_was_expected(monkeypatch, tmp_path, capsys):
    missing = tmp_path / "shared" / "data" / "face_model" / "ict_face.npz"
    ce = _load("calibrate_expression")
    monkeypatch.setattr(ce, "ICT_PATH", missing)
    assert ce.main(["--no-write"]) == 2
    tf = _load("tune_fit_weights")
    monkeypatch.setattr(tf, "ICT_PATH", missing)
    monkeypatch.setattr(sys, "argv", ["tune_fit_weights.py", "depth"])
    assert tf.main() == 2
    jt = _load("jitter")
    monkeypatch.setattr(jt, "DEFAULT_CLIPS", [])
    monkeypatch.setattr(sys, "argv", ["jitter.py", "--no-write"])
    assert jt.main() == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3, errors
    assert all(line.startswith(f"error: ICT face model not found at {missing}") for line in errors[:2])
    assert errors[2] == ("error: the shared clips were not found "
                         f"(expected talking_*.mp4 in {jt.SHARED_DATA / 'video'})")


def test_refiner_stages_name_the_stage_their_data_comes_from(monkeypatch, tmp_path):
    tr = _load("train_refiner")
    monkeypatch.setattr(tr, "CACHE", tmp_path)  # an empty cache
    with pytest.raises(SystemExit, match=r"meta.npz: run `python tools/train_refiner.py data` first"):
        tr.model_params()
    torch = pytest.importorskip("torch", reason="PyTorch is tool-time only: pip install torch==2.13.0")
    for setting in ("set_num_threads", "manual_seed"):  # the stage's process-wide settings, not this one's
        monkeypatch.setattr(torch, setting, lambda _: None)
    with pytest.raises(SystemExit, match=r"params.npz: run `python tools/train_refiner.py model-params`"):
        tr.train(1, 0, 8, 1e-3, dual=True)


def test_the_turn_from_the_line_of_sight_is_what_a_moved_picture_centre_leaves_alone():
    """evaluate_hard_cases compares cut faces by their turn from their line of sight: a head turned by a known
    amount from the line to it reads that turn wherever it sits in the frame, and a head seen from the side of
    the frame, facing along the camera's axis, reads the angle of its line of sight."""
    from tracker.pose import _rx, _ry, euler_to_matrix, matrix_to_quaternion
    from tracker.types import Pose

    turn = _load("evaluate_hard_cases").line_of_sight_turn
    rng = np.random.default_rng(0)
    for _ in range(20):
        yaw, pitch, roll = rng.uniform(-40, 40), rng.uniform(-25, 25), rng.uniform(-20, 20)
        head = euler_to_matrix(yaw, pitch, roll)
        side = rng.uniform(-30, 30)
        for look, at in ((_ry(np.radians(side)), [np.sin(np.radians(side)), 0.0, np.cos(np.radians(side))]),
                         (_rx(np.radians(side)), [0.0, -np.sin(np.radians(side)), np.cos(np.radians(side))])):
            rotation = look @ head  # the camera turned away from the head: the head's turn from its sight is kept
            pose = Pose(0.0, 0.0, 0.0, matrix_to_quaternion(rotation), 700.0 * np.array(at), rotation)
            np.testing.assert_allclose(turn(pose), (yaw, pitch), atol=1e-6)
    ahead = Pose(0.0, 0.0, 0.0, np.array([1.0, 0, 0, 0]), np.array([300.0, 0.0, 300.0]), np.eye(3))
    np.testing.assert_allclose(turn(ahead), (45.0, 0.0), atol=1e-9)


def test_the_pose_error_calibration_recovers_a_known_monotone_map_and_rotation_angles(er):
    """tools/calibrate_pose_error.py (tools/rating_calibration.py): the isotonic knots follow a known rising
    error-of-residual curve through noise; tools/evaluate_renders.py's rotation_error_deg reads the angle of a known
    turn applied to a head of any pose."""
    from tracker.pose import euler_to_matrix, matrix_to_euler
    from tracker.reliability import PoseErrorCalibration

    tool = _load("rating_calibration")
    rng = np.random.default_rng(3)
    residual = rng.uniform(0.01, 0.09, 4000)
    error = 20.0 + 1500.0 * (residual - 0.01) ** 1.5 + rng.normal(0.0, 1.0, residual.size)
    still = tool.fit_map(residual, error)
    tracked = tool.fit_map(residual, 2 * error)
    calibration = PoseErrorCalibration(table={"signal_still": still[0], "error_deg_still": still[1],
                                              "signal_tracked": tracked[0], "error_deg_tracked": tracked[1]})
    for r in (0.02, 0.05, 0.08):
        truth = 20.0 + 1500.0 * (r - 0.01) ** 1.5
        assert calibration.expected_deg(r, tracked=False) == pytest.approx(truth, abs=1.0)
        assert calibration.expected_deg(r, tracked=True) == pytest.approx(2 * truth, abs=2.0)
    for _ in range(20):
        head = rng.uniform([-60, -25, -20], [60, 25, 20])
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = rng.uniform(0.5, 20.0)
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        turn = np.eye(3) + np.sin(np.radians(angle)) * k + (1 - np.cos(np.radians(angle))) * k @ k
        turned = np.array(matrix_to_euler(turn @ euler_to_matrix(*head)))
        assert er.rotation_error_deg(head, turned) == pytest.approx(angle, abs=1e-6)
    assert er.rotation_error_deg(np.array([10.0, 5.0, -3.0]), np.array([10.0, 5.0, -3.0])) == pytest.approx(0.0,
                                                                                                           abs=1e-5)


def test_the_held_out_tables_give_the_faces_from_the_cut_renders_a_row_of_their_own():
    """tools/rating_calibration.py: each set's row, then one for its faces from the renders cut by the frame (their
    own ρ, expected and true error), and none for a set without such faces."""
    tool = _load("rating_calibration")
    rng = np.random.default_rng(9)
    fit, held = {}, {}
    for kind, n, cut in (("still", 40, 8), ("tracked", 60, 0)):
        for store in (fit, held):
            store[f"{kind}_signal"] = rng.uniform(0.01, 0.1, n)
            store[f"{kind}_error"] = 100 * store[f"{kind}_signal"] + rng.normal(0, 0.5, n)
            store[f"{kind}_cut"] = np.arange(n) >= n - cut
            store[f"{kind}_frames"], store[f"{kind}_cut_frames"] = n + 2, cut + 1
    rows, quarters = tool.held_out_tables(lambda x, tracked: 100 * x, fit, held, 2, 1, "°")
    cells = [row.split(" | ") for row in rows]
    assert [c[0] for c in cells] == ["| stills", "| stills, of them from the cut renders", "| clip frames"]
    assert cells[1][1:3] == ["8 of 9", "8 of 9"] and cells[0][1:3] == ["40 of 42", "40 of 42"]
    chosen = held["still_cut"]
    assert cells[1][4] == f"{100 * held['still_signal'][chosen].mean():.2f}°"
    assert cells[1][5] == f"{held['still_error'][chosen].mean():.2f}°"
    assert float(cells[0][3]) > 0.9 and len(quarters) == 8


def test_the_blendshape_error_tool_scores_the_rated_shapes_and_its_quarters_split_by_the_expected_error(er):
    """tools/calibrate_blendshape_error.py: the renders' key shapes are the ones the tracker rates, in its order;
    evaluate_renders.shape_errors is the mean absolute error over them per row; and a quarter table
    (tools/rating_calibration.py) ranks rows by the expected error and reports the true error of each quarter."""
    from tracker.reliability import RATED_SHAPES

    tool = _load("rating_calibration")
    assert tuple(er.KEY_SHAPES) == RATED_SHAPES
    rng = np.random.default_rng(4)
    true = rng.uniform(0, 1, (50, len(RATED_SHAPES)))
    off = rng.uniform(-0.2, 0.2, true.shape)
    rows = {"est_shapes": true + off, "true_shapes": true}
    mask = np.arange(50) % 3 != 0
    np.testing.assert_allclose(er.shape_errors(rows, mask), np.abs(off[mask]).mean(axis=1))
    # The faces the calibration pairs: a signal (the fit held) and weights (a face found), nothing else.
    signal = rng.uniform(0.05, 0.3, 50)
    signal[::4] = np.nan
    rows["est_shapes"][1::5] = np.nan
    paired = np.isfinite(signal) & np.isfinite(rows["est_shapes"][:, 0])
    x, y = _load("calibrate_blendshape_error").rated_blendshapes({**rows, "est_shape_signal": signal})
    np.testing.assert_array_equal(x, signal[paired])
    np.testing.assert_allclose(y, np.abs(off[paired]).mean(axis=1))
    stats = er.rating_stats(y ** 2, y)  # a rating that ranks as the truth does, at another size
    assert stats["rho"] == pytest.approx(1.0) and stats["frames"] == paired.sum()
    assert stats["expected_mean"] == pytest.approx(np.mean(y ** 2)) and stats["true_mean"] == pytest.approx(y.mean())
    expected = np.arange(8, dtype=float)
    error = np.array([1.0, 1, 2, 2, 3, 3, 4, 4])[::-1]  # given in the reverse order: sorted by expected below
    cells = [row.split(" | ") for row in tool.quarter_rows("clips", expected[::-1], error, digits=3)]
    assert [c[1] for c in cells] == ["1", "2", "3", "4"]
    assert [c[4] for c in cells] == ["1.000", "2.000", "3.000", "4.000"]
    assert cells[0][2] == "0.000-1.000" and cells[3][2] == "6.000-7.000"
    assert [row.split(" | ")[1] for row in tool.quarter_rows("stills", np.array([2.0, 1.0]), np.array([1.0, 2.0]))] == [
        "1", "2"]  # two faces: two quarters, the empty ones left out


def _pts_text(points: np.ndarray, brace: str = "{") -> str:
    """An iBUG .pts file of 0-based ``points`` (written 1-based)."""
    rows = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in points)
    return f"version: 1\nn_points: {len(points)}\n{brace}\n{rows}\n}}\n"


def _face_points(seed: int = 0) -> np.ndarray:
    points = np.round(np.random.default_rng(seed).uniform(20, 80, (68, 2)), 3)  # as _pts_text writes them
    points[36], points[45] = (30.0, 40.0), (70.0, 40.0)  # the outer eye corners apart
    return points


def test_read_pts_takes_loose_layouts_and_names_what_is_wrong_with_a_file_that_is_no_annotation(tmp_path):
    ld = _load("landmark_data")
    points = _face_points()
    good = tmp_path / "good.pts"
    good.write_text(_pts_text(points))
    np.testing.assert_allclose(ld.read_pts(good), points, atol=1e-9)
    # Spaces round the braces, a blank line among the points, Windows line ends: the same points.
    loose = _pts_text(points, brace="  { ").replace("\n", "\r\n").replace(f"{points[3, 1] + 1:.3f}\r\n",
                                                                         f"{points[3, 1] + 1:.3f}\r\n\r\n")
    (tmp_path / "loose.pts").write_text(loose)
    np.testing.assert_allclose(ld.read_pts(tmp_path / "loose.pts"), points, atol=1e-9)
    same_corners = points.copy()
    same_corners[45] = same_corners[36]
    with_nan = points.copy()
    with_nan[10, 0] = np.nan
    cases = {
        _pts_text(points[:49]): "holds 49 points, not iBUG's 68",
        _pts_text(with_nan): "not finite",
        _pts_text(same_corners): "on one spot",
        _pts_text(points).replace("{", ""): "no '{' ... '}' block",
        _pts_text(points).replace(f"{points[5, 0] + 1:.3f}", "abc"): "not a number",
        _pts_text(points).replace(f"{points[5, 0] + 1:.3f} ", f"{points[5, 0] + 1:.3f} 7 "): "not two numbers",
        "": "no '{' ... '}' block",
    }
    for k, (text, words) in enumerate(cases.items()):
        (tmp_path / f"bad{k}.pts").write_text(text)
        with pytest.raises(ld.PtsError, match=f"bad{k}.pts: ") as caught:  # the message names the file
            ld.read_pts(tmp_path / f"bad{k}.pts")
        assert words in caught.value.reason
    (tmp_path / "folder.pts").mkdir()
    with pytest.raises(ld.PtsError, match="cannot be read"):
        ld.read_pts(tmp_path / "folder.pts")


def test_load_folder_takes_what_it_can_and_says_what_it_leaves_out(tmp_path, capsys):
    import cv2

    ld = _load("landmark_data")
    picture = cv2.imencode(".png", np.full((100, 100, 3), 90, np.uint8))[1].tobytes()
    (tmp_path / "sub").mkdir()
    layout = {"a.jpg": picture, "a.pts": _pts_text(_face_points(1)),          # a picture of any kind under .jpg
              "sub/b.PNG": picture, "sub/b.PTS": _pts_text(_face_points(2)),  # a subfolder, upper case
              "c.png": picture, "c.bmp": picture, "c.pts": _pts_text(_face_points(3)),  # two pictures, one .pts
              "d.jpg": picture,                                               # no .pts
              "e.pts": _pts_text(_face_points(4)),                            # no picture
              "f.jpg": b"not a picture", "f.pts": _pts_text(_face_points(5)),  # not a picture
              "g.jpg": picture, "g.pts": _pts_text(_face_points(6)[:49])}     # not 68 points
    for name, content in layout.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    items = ld.load_folder(tmp_path, subfolders=True)
    assert [i.image_path.relative_to(tmp_path).as_posix() for i in items] == ["a.jpg", "c.png", "sub/b.PNG"]
    np.testing.assert_allclose(items[2].points, _face_points(2), atol=1e-9)
    said = capsys.readouterr().err
    for words in ("each an image with no .pts of its name beside it: d.jpg",
                  "each a .pts with no image of its name beside it: e.pts",
                  "each an image in a format OpenCV cannot read: f.jpg",
                  "each a .pts that holds 49 points, not iBUG's 68: g.pts",
                  "each an image sharing its .pts with another, taken first (.jpg .png .jpeg .bmp"):
        assert words in said, said
    assert len(said.strip().splitlines()) == 5
    assert [i.image_path.name for i in ld.load_folder(tmp_path)] == ["a.jpg", "c.png"]  # subfolders only if asked
    capsys.readouterr()
    # Names that differ only in case: which is meant cannot be told, so neither is taken; a link to nothing.
    (tmp_path / "a.JPG").write_bytes(picture)
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert [i.image_path.name for i in ld.load_folder(tmp_path)] == ["c.png"]
    said = capsys.readouterr().err
    assert "left out 2 files, each named as another but for case, and left out with it: a.jpg, a.JPG" in said, said
    assert "left out 1 file, each not a file (a link to nothing, say): gone.jpg" in said, said


def test_evaluate_on_a_folder_with_no_face_found_writes_its_figures_as_json(tmp_path, monkeypatch, capsys):
    """A folder whose faces are all missed has no mean NME: the table says —, the JSON holds null (strict JSON), and an
    annotation wholly off its picture is left out, not counted as a face missed."""
    import json

    import cv2

    ev = _load("evaluate")
    for name, shift in (("blank", 0.0), ("elsewhere", 5000.0)):
        cv2.imwrite(str(tmp_path / f"{name}.png"), np.full((120, 120, 3), 128, np.uint8))
        (tmp_path / f"{name}.pts").write_text(_pts_text(_face_points() + shift))
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--images", str(tmp_path), "--no-write", "--worst", str(out),
                                      "--json", str(out / "r.json")])
    assert ev.main() == 0
    said = capsys.readouterr()
    assert "| 0.0% | — | — | — | 100.0% | 100.0% | 0.000 |" in said.out
    assert said.err.count("left out 1 file, each an image annotated wholly off the picture: elsewhere.png") == 1, said.err
    report = json.loads((out / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    first = next(iter(report.values()))
    assert first["images"] == 1 and first["nme"] is None and first["per_face"][0]["found"] is False
    assert any(out.glob("worst_*.png")) and any(out.glob("ced_*.png"))  # with --no-write the plot goes beside the sheet

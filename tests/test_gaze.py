"""Gaze from the irises (tracker/gaze.py): the geometry recovers known eye turns, the weights keep ARKit's
sides, and on real frames eyes rolled to one side read that side, and the mirror image the other."""

import cv2
import numpy as np
import pytest

from tests.conftest import shared_path
from tracker.fitting import FaceModel, FitState, camera_for, identity_shape
from tracker.gaze import (
    EYE_RANGE_DEG,
    IRIS_DISTANCE_CM,
    LOOK_NAMES,
    GazeEstimator,
    eye_centres,
    eye_readings,
    eye_weights,
    iris_points,
    look_weights,
)
from tracker.mesh import MESH_INPUT, MeshResult
from tracker.pipeline import FaceTracker, TrackerConfig
from tracker.pose import MODEL_TO_CAMERA, euler_to_matrix
from tracker.roi import Roi
from tracker.types import Gaze


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return FaceModel.load()


def head_direction(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Unit directions in model axes (x the subject's left, y up, z out of the face)."""
    return np.stack([np.cos(pitch) * np.sin(yaw), np.sin(pitch), np.cos(pitch) * np.cos(yaw)], -1)


def random_state(rng: np.random.Generator, model: FaceModel) -> FitState:
    rotation = euler_to_matrix(*rng.uniform([-40, -25, -20], [40, 25, 20]))
    return FitState(rotation=rotation, translation=np.array([*rng.uniform(-8, 8, 2), rng.uniform(40, 90)]),
                    expression=np.zeros(len(model.names)), identity=rng.normal(0, 1, model.identity.shape[0]))


def project(points: np.ndarray, camera: np.ndarray) -> np.ndarray:
    return camera[0] * points[:, :2] / points[:, 2:] + camera[1:]


def test_eye_readings_recover_known_eye_turns(model):
    rng = np.random.default_rng(3)
    camera = np.array([640.0, 319.5, 239.5])
    for _ in range(50):
        state = random_state(rng, model)
        centres = eye_centres(model, state.identity, rng.uniform(-0.5, 0.5, 3))
        to_camera = state.rotation @ MODEL_TO_CAMERA
        centres_cam = centres @ to_camera.T + state.translation
        # Turns the camera can see: the iris on the sphere's near side.
        while True:
            angles = np.radians(rng.uniform([-35, -25], [35, 25], (2, 2)))
            iris_cam = centres_cam + IRIS_DISTANCE_CM * head_direction(*angles.T) @ to_camera.T
            outward = iris_cam - centres_cam
            if np.all((outward * iris_cam).sum(1) < -0.2 * np.linalg.norm(iris_cam, axis=1) * IRIS_DISTANCE_CM):
                break
        found = eye_readings(project(iris_cam, camera), centres, state.rotation, state.translation, camera)[:, :2]
        np.testing.assert_allclose(found, angles, atol=1e-9)


def test_the_eye_centres_of_a_held_identity_are_those_of_its_coefficients(model):
    rng = np.random.default_rng(4)
    alpha = rng.normal(0, 1, model.identity.shape[0])
    offset = np.array([0.2, 0.3, -0.1])
    held = FitState(rotation=np.eye(3), translation=np.zeros(3), expression=np.zeros(52), identity=alpha,
                    neutral=identity_shape(model.mean, model.identity_by_point, alpha))
    estimator = GazeEstimator(model, offset)
    np.testing.assert_allclose(estimator.eye_centres(held), eye_centres(model, alpha, offset), atol=1e-12)
    # The right eye's centre sits outward (towards -x, the subject's right) of its corners' midpoint.
    corners = held.neutral[model.landmarks[[36, 39]]].mean(0)
    np.testing.assert_allclose(estimator.eye_centres(held)[0] - corners, [-0.2, 0.3, -0.1], atol=1e-12)


def test_an_iris_off_the_sphere_reads_the_nearest_turn_not_nan(model):
    state = FitState(rotation=np.eye(3), translation=np.array([0.0, 0.0, 60.0]), expression=np.zeros(52),
                     identity=np.zeros(model.identity.shape[0]))
    camera = np.array([640.0, 319.5, 239.5])
    centres = eye_centres(model, state.identity, np.zeros(3))
    iris = project(centres @ MODEL_TO_CAMERA.T + state.translation, camera) + np.array([[-200.0, 0.0], [200.0, 0.0]])
    angles = eye_readings(iris, centres, state.rotation, state.translation, camera)[:, :2]
    # 200 px sideways at 60 cm is ~19 cm: far off the 1 cm sphere. Each eye reads the sphere's rim as the
    # camera sees it (the turn at right angles to the ray through the iris point), on the iris's side:
    # image left is the subject's right (yaw < 0).
    assert np.all(np.isfinite(angles)) and angles[0, 0] < -np.radians(45) and angles[1, 0] > np.radians(45)
    rays = np.column_stack([(iris - camera[1:]) / camera[0], np.ones(2)])
    turned = head_direction(*angles.T) @ MODEL_TO_CAMERA.T
    np.testing.assert_allclose((turned * rays).sum(1), 0.0, atol=1e-9)


def test_look_weights_keep_arkit_sides_and_scale():
    zero = look_weights(None)
    assert set(zero) == set(LOOK_NAMES) and not any(zero.values())
    left = look_weights(Gaze(yaw=15.0, pitch=10.0))  # toward the subject's left, up
    assert left["eyeLookOutLeft"] == pytest.approx(0.5) and left["eyeLookInRight"] == pytest.approx(0.5)
    assert left["eyeLookInLeft"] == 0.0 and left["eyeLookOutRight"] == 0.0
    assert left["eyeLookUpLeft"] == pytest.approx(0.4) and left["eyeLookUpRight"] == pytest.approx(0.4)
    assert left["eyeLookDownLeft"] == 0.0
    far = look_weights(Gaze(yaw=-80.0, pitch=-80.0))
    assert far["eyeLookOutRight"] == 1.0 and far["eyeLookDownLeft"] == 1.0
    # The mirror image of a gaze swaps the sides' names.
    rng = np.random.default_rng(0)
    for yaw, pitch in rng.uniform(-40, 40, (20, 2)):
        a, b = look_weights(Gaze(yaw, pitch)), look_weights(Gaze(-yaw, pitch))
        swapped = {n.replace("Left", "_").replace("Right", "Left").replace("_", "Right"): v for n, v in b.items()}
        assert a == pytest.approx(swapped)


def mesh_with_irises(iris: np.ndarray, mirror: np.ndarray | None) -> MeshResult:
    points = np.zeros((468, 3))
    return MeshResult(roi=Roi(320.0, 240.0, float(MESH_INPUT), 0.0), crop_points=points, points=points,
                      presence=1.0, iris_crop_points=iris, mirror_iris_crop_points=mirror)


def test_the_mirror_crop_irises_map_back_onto_the_direct_ones():
    rng = np.random.default_rng(1)
    iris = rng.uniform(40, 150, (2, 5, 2))
    mirrored = iris[::-1].copy()
    mirrored[..., 0] = (MESH_INPUT - 1) - mirrored[..., 0]
    alone = iris_points(mesh_with_irises(iris, None))
    np.testing.assert_allclose(iris_points(mesh_with_irises(iris, mirrored)), alone, atol=1e-9)
    # A mirror pass that sees both irises 2 px further right in its crop puts them 1 px further left.
    mirrored[..., 0] += 2.0
    np.testing.assert_allclose(iris_points(mesh_with_irises(iris, mirrored)), alone - [1.0, 0.0], atol=1e-9)


def eye_landmarks(open_right: float, open_left: float) -> np.ndarray:
    """68 points whose eyes are 30 px wide with lid gaps of the given fractions of that."""
    lm = np.zeros((68, 2))
    for (outer, inner), (upper, lower), x0, gap in (((36, 39), ((37, 38), (41, 40)), 100.0, open_right),
                                                    ((45, 42), ((43, 44), (47, 46)), 200.0, open_left)):
        lm[outer], lm[inner] = (x0, 100.0), (x0 + 30.0 if outer == 36 else x0 - 30.0, 100.0)
        for u, lo, dx in zip(upper, lower, (10.0, 20.0)):
            x = x0 + dx if outer == 36 else x0 - dx
            lm[u], lm[lo] = (x, 100.0 - 15.0 * gap), (x, 100.0 + 15.0 * gap)
    return lm


def test_a_shut_or_turned_away_eye_tells_no_gaze(model):
    np.testing.assert_allclose(eye_weights(eye_landmarks(0.3, 0.3)), [1.0, 1.0])
    np.testing.assert_allclose(eye_weights(eye_landmarks(0.3, 0.05)), [1.0, 0.0])
    facing = np.ones(68, bool)
    facing[42:48] = False
    np.testing.assert_allclose(eye_weights(eye_landmarks(0.3, 0.3), facing), [1.0, 0.0])
    estimator = GazeEstimator(model, np.zeros(3))
    state = FitState(rotation=np.eye(3), translation=np.array([0.0, 0.0, 60.0]), expression=np.zeros(52),
                     identity=np.zeros(model.identity.shape[0]))
    camera = np.array([640.0, 319.5, 239.5])
    centres = eye_centres(model, state.identity, np.zeros(3)) @ MODEL_TO_CAMERA.T + state.translation
    iris = project(centres, camera)  # both eyes on the camera
    assert estimator.estimate(iris, eye_landmarks(0.05, 0.05), state, camera) is None
    turned = iris + np.array([[0.0, 0.0], [4.0, 0.0]])  # the left eye turned ~20° to the subject's left
    gaze = estimator.estimate(turned, eye_landmarks(0.3, 0.05), state, camera)  # ...but shut: not counted
    toward = -centres.mean(0) @ MODEL_TO_CAMERA  # from between the eyes to the camera, in model axes
    assert gaze.yaw == pytest.approx(np.degrees(np.arctan2(toward[0], toward[2])), abs=1e-9)
    assert gaze.pitch == pytest.approx(np.degrees(np.arctan2(toward[1], np.hypot(toward[0], toward[2]))), abs=1e-9)
    assert estimator.estimate(turned, eye_landmarks(0.3, 0.3), state, camera).yaw > gaze.yaw + 5.0
    # An iris off the ball (25 px is over 2 cm at 60 cm) is at the rim as the camera sees it: it counts for
    # nothing, open or not.
    wild = iris + np.array([[0.0, 0.0], [25.0, 0.0]])
    model_centres = eye_centres(model, state.identity, np.zeros(3))
    readings = eye_readings(wild, model_centres, state.rotation, state.translation, camera)
    assert readings[1, 2] == pytest.approx(0.0, abs=1e-6) and readings[0, 2] > 0.99
    assert estimator.estimate(wild, eye_landmarks(0.3, 0.3), state, camera).yaw == pytest.approx(gaze.yaw)
    # An eye barely open (a blink starting or ending) moves no gaze on its own.
    assert estimator.estimate(iris, eye_landmarks(0.09, 0.05), state, camera) is None


def read_frame(index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(shared_path("video", "talking_d10.mp4")))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    assert ok, f"talking_d10.mp4 has no frame {index}"
    return frame


def test_each_iris_sits_in_its_eye_and_the_eyes_converge_on_the_camera():
    """talking_d10 frame 20: the speaker looks into her phone, about 37 cm away. Each iris output lies between
    its own eye's corners, and read one by one the two eyes turn towards each other (the subject's right eye
    to her left, the left eye to her right), as eyes on a near camera do: a wrong side for the eyeballs'
    offset, or the two irises swapped, reads them diverging."""
    image = read_frame(20)
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime"))
    face = tracker.process(image, still=True).faces[0]
    crop_iris = face.mesh.iris_crop_points[:, 0, 0]
    corners = face.mesh.crop_points[[33, 133, 362, 263], 0]
    assert corners[0] < crop_iris[0] < corners[1] and corners[2] < crop_iris[1] < corners[3]
    state = tracker.tracks.tracks[0].state.fit
    camera = camera_for((image.shape[1], image.shape[0]))  # as the pipeline's, focal unset
    readings = eye_readings(iris_points(face.mesh), tracker.gaze.eye_centres(state), state.rotation,
                            state.translation, camera)
    assert np.degrees(readings[0, 0] - readings[1, 0]) > 10.0  # right eye's yaw (to her left) above the left's
    assert np.all(readings[:, 2] > 0.8)


@pytest.mark.parametrize("frame, side", [(245, "Right"), (265, "Left")])
def test_eyes_rolled_to_one_side_read_that_side_and_the_mirror_image_the_other(frame, side):
    """In talking_d10 the speaker rolls her eyes to her right (frame 245) and to her left (265), head still."""
    image = read_frame(frame)
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime"))
    other = "Left" if side == "Right" else "Right"
    for picture, looks in ((image, side), (np.ascontiguousarray(image[:, ::-1]), other)):
        away = "Left" if looks == "Right" else "Right"
        weights = tracker.process(picture, still=True).faces[0].blendshapes
        assert weights[f"eyeLookOut{looks}"] > 0.6 and weights[f"eyeLookIn{away}"] > 0.6
        assert weights[f"eyeLookIn{looks}"] == 0.0 and weights[f"eyeLookOut{away}"] == 0.0


def test_gaze_off_leaves_the_fits_own_eye_weights():
    image = read_frame(265)
    on = FaceTracker(TrackerConfig(backend="onnxruntime")).process(image, still=True).faces[0].blendshapes
    off = FaceTracker(TrackerConfig(backend="onnxruntime", gaze=False)).process(image, still=True).faces[0].blendshapes
    assert off["eyeLookOutLeft"] < 0.3 < on["eyeLookOutLeft"]
    assert {k: v for k, v in on.items() if not k.startswith("eyeLook")} == pytest.approx(
        {k: v for k, v in off.items() if not k.startswith("eyeLook")})


def test_a_track_holds_its_last_gaze_while_the_eyes_are_shut():
    """talking_d14: open eyes at frame 107, shut at 108 (a blink). Unsmoothed, frame 108 keeps 107's gaze,
    where a still of 108 alone has none to give."""
    cap = cv2.VideoCapture(str(shared_path("video", "talking_d14.mp4")))
    frames = [cap.read()[1] for _ in range(109)][100:]
    cap.release()
    tracker = FaceTracker(TrackerConfig(backend="onnxruntime", smooth=False))
    looks = []
    for i, frame in enumerate(frames):
        weights = tracker.process(frame, frame=100 + i, time_s=(100 + i) / 25).faces[0].blendshapes
        looks.append({k: v for k, v in weights.items() if k.startswith("eyeLook")})
    assert any(looks[7].values())  # frame 107 shows a gaze
    assert looks[8] == looks[7]
    alone = FaceTracker(TrackerConfig(backend="onnxruntime")).process(frames[8], still=True).faces[0].blendshapes
    assert not any(v for k, v in alone.items() if k.startswith("eyeLook"))


def test_the_gaze_field_is_smoothed_and_the_eyelook_weights_are_made_from_it():
    """Tracked and smoothed (talking_d14, whose eyes dart both ways), the eyeLook weights are exactly those of
    the output's smoothed gaze, and the JSON record carries it; a still of shut eyes has none."""
    cap = cv2.VideoCapture(str(shared_path("video", "talking_d14.mp4")))
    frames = [cap.read()[1] for _ in range(109)]
    cap.release()
    smoothed = FaceTracker(TrackerConfig(backend="onnxruntime"))
    raw = FaceTracker(TrackerConfig(backend="onnxruntime", smooth=False))
    sides, differs = set(), 0
    for i, frame in enumerate(frames[40:100], start=40):
        face = smoothed.process(frame, frame=i, time_s=i / 25).faces[0]
        yaw, pitch = face.gaze.yaw, face.gaze.pitch
        assert face.to_record()["gaze"] == {"yaw": round(yaw, 2), "pitch": round(pitch, 2)}
        expected = look_weights(Gaze(yaw=yaw, pitch=pitch))
        assert {k: v for k, v in face.blendshapes.items() if k.startswith("eyeLook")} == pytest.approx(expected)
        sides.add(np.sign(yaw))
        differs += abs(raw.process(frame, frame=i, time_s=i / 25).faces[0].gaze.yaw - yaw) > 0.5
    assert sides == {-1.0, 1.0} and differs > 5  # both ways, and the smoothing did something
    face = FaceTracker(TrackerConfig(backend="onnxruntime")).process(frames[108], still=True).faces[0]
    assert face.gaze is None and "gaze" not in face.to_record()  # eyes shut (see the hold test above)


def test_one_eye_reads_the_gaze_of_two_on_a_target_at_the_cameras_distance(model):
    """Eyes converging on a point as far away as the camera (the camera itself, or a spot on a screen beside
    it) read the direction from between the eyes to that point, with both eyes, the right alone or the left
    alone; eyes looking in parallel at a far target read its direction with both. Averaging the two eyes'
    angles, one eye alone read its own inward lean (a few degrees at webcam distance). An eye turned further
    than an eye turns (EYE_RANGE_DEG) is a misreading: it counts for nothing, and alone it gives no gaze."""
    rng = np.random.default_rng(7)
    camera = np.array([640.0, 319.5, 239.5])
    estimator = GazeEstimator(model, np.array([0.2, 0.3, -0.1]))
    open_eyes = eye_landmarks(0.3, 0.3)
    only = {"right": np.ones(68, bool), "left": np.ones(68, bool)}
    only["right"][42:48] = False  # the left eye's points turned away: it counts for nothing
    only["left"][36:42] = False
    beyond = within = 0
    for _ in range(30):
        state = random_state(rng, model)
        to_camera = state.rotation @ MODEL_TO_CAMERA
        centres = estimator.eye_centres(state)
        camera_at = -to_camera.T @ state.translation  # model axes
        middle = centres.mean(0)
        # A target at the camera's distance from between the eyes: the camera, or off to one side of it.
        target = camera_at + (rng.uniform(-12, 12, 3) if rng.random() < 0.7 else 0.0)
        target = middle + (target - middle) * np.linalg.norm(camera_at - middle) / np.linalg.norm(target - middle)
        sight = (target - centres) / np.linalg.norm(target - centres, axis=1, keepdims=True)
        iris = project((centres + IRIS_DISTANCE_CM * sight) @ to_camera.T + state.translation, camera)
        want = target - middle
        want_yaw, want_pitch = np.degrees([np.arctan2(want[0], want[2]), np.arctan2(want[1], np.hypot(want[0], want[2]))])
        turned = np.degrees(np.arccos(sight[:, 2])) > EYE_RANGE_DEG  # model z points out of the face
        for facing, eyes in ((None, [0, 1]), (only["right"], [0]), (only["left"], [1])):
            gaze = estimator.estimate(iris, open_eyes, state, camera, facing=facing)
            if turned[eyes].all():
                assert gaze is None
                beyond += 1
                continue
            assert gaze.yaw == pytest.approx(want_yaw, abs=1e-6) and gaze.pitch == pytest.approx(want_pitch, abs=1e-6)
            within += 1
        # Parallel lines of sight (a target far away): both eyes read their common direction, to within about the
        # lean of one eye (half the eyes' distance over the camera's) times how unequally the two count (each
        # by how squarely it faces the camera).
        to_lens = camera_at - middle  # a far target within 20° of the camera's direction: irises it can read
        angles = (np.array([np.arctan2(to_lens[0], to_lens[2]), np.arctan2(to_lens[1], np.hypot(to_lens[0], to_lens[2]))])
                  + np.radians(rng.uniform([-20, -12], [20, 12])))
        far = head_direction(*angles)
        iris = project((centres + IRIS_DISTANCE_CM * far) @ to_camera.T + state.translation, camera)
        sure = eye_readings(iris, centres, state.rotation, state.translation, camera)[:, 2]
        lean = np.degrees(np.arctan(np.linalg.norm(centres[0] - middle) / np.linalg.norm(camera_at - middle)))
        gaze = estimator.estimate(iris, open_eyes, state, camera)
        if np.degrees(np.arccos(far[2])) > EYE_RANGE_DEG:
            assert gaze is None
            continue
        off = np.degrees(np.arccos(min(gaze.direction() @ far, 1.0)))
        assert off <= 1.05 * lean * abs(sure[0] - sure[1]) / sure.sum() + 1e-6  # (first order; 5% for the rest)
    assert beyond and within > 2 * beyond  # both kinds were tried

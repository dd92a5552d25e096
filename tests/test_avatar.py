"""VMC and UDP JSON senders: content, order, axis conversion, splitting, robustness (loopback only)."""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
from pythonosc.osc_bundle import OscBundle

from tracker.avatar import (
    ARKIT_BLENDSHAPES,
    AddressError,
    UdpJsonSender,
    VmcSender,
    camera_to_unity_quaternion,
    eye_rotation,
    parse_host_port,
)
from tracker.pose import euler_to_matrix, matrix_to_quaternion, quaternion_to_matrix
from tracker.types import Gaze


# Local stand-ins with the attributes the senders read (duck typing; no dependency on tracker.types).
@dataclass
class FakePose:
    yaw: float
    pitch: float
    roll: float
    quaternion: np.ndarray
    translation_mm: np.ndarray


@dataclass
class FakeFace:
    id: int
    pose: FakePose | None = None
    blendshapes: dict[str, float] | None = None
    landmarks: list = field(default_factory=list)
    gaze: Gaze | None = None

    def to_record(self) -> dict:
        rec: dict = {"id": self.id, "landmarks": self.landmarks}
        if self.pose is not None:
            rec["pose"] = {"yaw": self.pose.yaw, "pitch": self.pose.pitch, "roll": self.pose.roll,
                           "quaternion": [round(float(v), 6) for v in self.pose.quaternion],
                           "translation_mm": [float(v) for v in self.pose.translation_mm]}
        if self.blendshapes is not None:
            rec["blendshapes"] = dict(self.blendshapes)
        return rec


@dataclass
class FakeFrame:
    frame: int
    time_s: float
    source: str
    faces: list[FakeFace] = field(default_factory=list)

    def to_record(self) -> dict:
        return {"frame": self.frame, "time_s": self.time_s, "source": self.source,
                "faces": [f.to_record() for f in self.faces]}


def make_pose(yaw: float, pitch: float, roll: float) -> FakePose:
    q = matrix_to_quaternion(euler_to_matrix(yaw, pitch, roll))
    return FakePose(yaw, pitch, roll, q, np.array([10.0, -20.0, 600.0]))


def make_shapes() -> dict[str, float]:
    return {name: round((i + 1) / 64.0, 6) for i, name in enumerate(ARKIT_BLENDSHAPES)}


@pytest.fixture
def receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    yield sock
    sock.close()


def closed_port() -> int:
    """A loopback UDP port with nobody listening (bound, read, then released)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def unity_euler(q_xyzw: tuple[float, float, float, float]) -> tuple[float, float, float]:
    """Unity's eulerAngles (x, y, z) in degrees, signed: Unity composes R = Ry(y)·Rx(x)·Rz(z).

    Unity's quaternion→matrix is the same algebra as ours (only the handedness of the
    space differs), so quaternion_to_matrix gives the matrix Unity applies to its vectors.
    """
    qx, qy, qz, qw = q_xyzw
    m = quaternion_to_matrix(np.array([qw, qx, qy, qz]))
    x = math.asin(max(-1.0, min(1.0, -m[1, 2])))
    y = math.atan2(m[0, 2], m[2, 2])
    z = math.atan2(m[1, 0], m[1, 1])
    return math.degrees(x), math.degrees(y), math.degrees(z)


# ----------------------------------------------------------------------------- axis conversion


def test_arkit_names_are_the_52_unique():
    assert len(ARKIT_BLENDSHAPES) == 52 and len(set(ARKIT_BLENDSHAPES)) == 52
    assert {"jawOpen", "eyeBlinkLeft", "mouthSmileRight", "tongueOut", "cheekPuff"} <= set(ARKIT_BLENDSHAPES)


def test_frontal_is_unity_identity():
    assert camera_to_unity_quaternion([1, 0, 0, 0]) == pytest.approx((0, 0, 0, 1))


@pytest.mark.parametrize("angle", [5.0, 20.0, 60.0])
def test_yaw_to_own_left_is_negative_unity_y(angle):
    qu = camera_to_unity_quaternion(make_pose(angle, 0, 0).quaternion)
    ex, ey, ez = unity_euler(qu)
    assert ey == pytest.approx(-angle, abs=1e-6) and ex == pytest.approx(0, abs=1e-6) and ez == pytest.approx(0, abs=1e-6)
    # The avatar's face (rest forward +z in Unity) swings towards -x: the avatar's own left.
    fwd = quaternion_to_matrix(np.array([qu[3], qu[0], qu[1], qu[2]])) @ [0.0, 0.0, 1.0]
    assert fwd[0] == pytest.approx(-math.sin(math.radians(angle)))


@pytest.mark.parametrize("angle", [5.0, 25.0])
def test_pitch_up_is_negative_unity_x(angle):
    qu = camera_to_unity_quaternion(make_pose(0, angle, 0).quaternion)
    ex, ey, ez = unity_euler(qu)
    assert ex == pytest.approx(-angle, abs=1e-6) and ey == pytest.approx(0, abs=1e-6) and ez == pytest.approx(0, abs=1e-6)
    fwd = quaternion_to_matrix(np.array([qu[3], qu[0], qu[1], qu[2]])) @ [0.0, 0.0, 1.0]
    assert fwd[1] == pytest.approx(math.sin(math.radians(angle)))  # nose goes up (+y in Unity)


@pytest.mark.parametrize("angle", [5.0, 30.0])
def test_roll_to_left_shoulder_is_positive_unity_z(angle):
    qu = camera_to_unity_quaternion(make_pose(0, 0, angle).quaternion)
    ex, ey, ez = unity_euler(qu)
    assert ez == pytest.approx(angle, abs=1e-6) and ex == pytest.approx(0, abs=1e-6) and ey == pytest.approx(0, abs=1e-6)
    up = quaternion_to_matrix(np.array([qu[3], qu[0], qu[1], qu[2]])) @ [0.0, 1.0, 0.0]
    assert up[0] == pytest.approx(-math.sin(math.radians(angle)))  # crown goes to -x: the avatar's left


def test_conversion_keeps_body_directions_for_any_pose():
    """For a compound pose, every body direction of the subject and of the avatar agrees.

    Body axes (own right, up, out of the face): camera (-x, -y, -z); Unity avatar (+x, +y, +z).
    """
    cam_body = -np.eye(3)  # columns: own right, up, out of the face, in camera axes
    unity_body = np.eye(3)
    for yaw, pitch, roll in [(30, -15, 10), (-50, 20, -25), (10, 40, 5)]:
        qc = make_pose(yaw, pitch, roll).quaternion
        qu = camera_to_unity_quaternion(qc)
        turned_cam = quaternion_to_matrix(qc) @ cam_body
        turned_unity = quaternion_to_matrix(np.array([qu[3], qu[0], qu[1], qu[2]])) @ unity_body
        # Express each turned body axis in body terms (dot products with the rest axes): must match.
        np.testing.assert_allclose(cam_body.T @ turned_cam, unity_body.T @ turned_unity, atol=1e-9)
        # (Unity's Euler order, Z then X then Y, differs from ours, so for compound poses its
        # individual angles are not just sign-flipped copies of ours; single-axis tests check those.)


def test_mirror_flips_yaw_and_roll_not_pitch():
    ex, ey, ez = unity_euler(camera_to_unity_quaternion(make_pose(20, 10, 15).quaternion, mirror=True))
    ref = unity_euler(camera_to_unity_quaternion(make_pose(-20, 10, -15).quaternion))
    assert (ex, ey, ez) == pytest.approx(ref, abs=1e-6)
    assert ey > 0 and ex < 0 and ez < 0


def test_unnormalised_and_degenerate_quaternions():
    q = camera_to_unity_quaternion([2.0, 0.0, 0.0, 0.0])
    assert q == pytest.approx((0, 0, 0, 1))
    assert camera_to_unity_quaternion([0.0, 0.0, 0.0, 0.0]) == (0.0, 0.0, 0.0, 1.0)
    assert camera_to_unity_quaternion([math.nan, 0.0, 0.0, 0.0]) == (0.0, 0.0, 0.0, 1.0)


# ----------------------------------------------------------------------------- VMC bundles


def receive_bundle(sock: socket.socket) -> list[tuple[str, list]]:
    data, _ = sock.recvfrom(65536)
    assert OscBundle.dgram_is_bundle(data)
    return [(m.address, list(m.params)) for m in OscBundle(data)]


def test_vmc_bundle_content_and_order(receiver):
    pose = make_pose(20.0, 10.0, -5.0)
    shapes = make_shapes()
    frame = FakeFrame(7, 1.25, "cam0", [FakeFace(1, pose, shapes)])
    with VmcSender("127.0.0.1", receiver.getsockname()[1]) as sender:
        sender.send(frame)
        msgs = receive_bundle(receiver)
        assert sender.sent == 1 and sender.errors == 0
    assert len(msgs) == 52 + 4
    blends = msgs[:52]
    assert [a for a, _ in blends] == ["/VMC/Ext/Blend/Val"] * 52
    assert [p[0] for _, p in blends] == list(ARKIT_BLENDSHAPES)
    for (_, (name, value)) in blends:
        assert value == pytest.approx(shapes[name], abs=1e-6)  # float32 on the wire
    assert msgs[52] == ("/VMC/Ext/Blend/Apply", [])
    address, bone = msgs[53]
    assert address == "/VMC/Ext/Bone/Pos" and bone[0] == "Head" and len(bone) == 8
    assert bone[1:4] == [0.0, 0.0, 0.0]
    qx, qy, qz, qw = bone[4:]
    assert math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw) == pytest.approx(1.0, abs=1e-5)
    # Components carry over from [w, x, y, z] camera to (x, y, z, w) Unity (see the derivation).
    w, x, y, z = pose.quaternion
    assert (qx, qy, qz, qw) == pytest.approx((x, y, z, w), abs=1e-6)
    ex, ey, _ = unity_euler((qx, qy, qz, qw))
    assert ey < 0 and ex < 0  # turned to own left and looking up
    assert msgs[54] == ("/VMC/Ext/OK", [1, 3, 0, 1])  # loaded, calibrated, normal mode, tracking
    assert msgs[55][0] == "/VMC/Ext/T" and msgs[55][1][0] == pytest.approx(1.25)


def test_eye_rotation_turns_the_line_of_sight_onto_the_gaze():
    """The eye's rotation carries its line of sight at rest (out of the face: -z in camera axes) onto the
    gaze's direction, diagonal gazes included (pitch within the yaw, as the gaze's angles are measured)."""
    rng = np.random.default_rng(5)
    for yaw, pitch in rng.uniform([-40, -30], [40, 30], (20, 2)):
        sight = quaternion_to_matrix(eye_rotation(Gaze(yaw, pitch))) @ np.array([0.0, 0.0, -1.0])
        y, p = math.radians(yaw), math.radians(pitch)
        gaze = np.diag([1.0, -1.0, -1.0]) @ [math.cos(p) * math.sin(y), math.sin(p), math.cos(p) * math.cos(y)]
        np.testing.assert_allclose(sight, gaze, atol=1e-12)
    assert eye_rotation(None) == pytest.approx([1, 0, 0, 0]) and eye_rotation(Gaze(math.nan, 0.0))[0] == 1.0


def test_vmc_eye_bones_turn_with_the_gaze_like_the_head(receiver):
    """A gaze 15° to the subject's left: with eye_bones both eye bones turn as a head would at yaw 15 (Unity
    Y negative), and mirrored the other way; 10° up stays up (Unity X negative) either way."""
    frame = FakeFrame(1, 0.0, "cam0", [FakeFace(1, make_pose(0, 0, 0), make_shapes(), gaze=Gaze(15.0, 0.0))])
    up = FakeFrame(1, 0.0, "cam0", [FakeFace(1, make_pose(0, 0, 0), make_shapes(), gaze=Gaze(0.0, 10.0))])
    bones = {}
    for mirror in (False, True):
        for name, f in (("side", frame), ("up", up)):
            with VmcSender("127.0.0.1", receiver.getsockname()[1], mirror=mirror, eye_bones=True) as sender:
                sender.send(f)
                msgs = receive_bundle(receiver)
            receive_bundle(receiver)  # the one its close sends
            bones[mirror, name] = {p[0]: tuple(p[4:]) for a, p in msgs if a == "/VMC/Ext/Bone/Pos"}
    assert list(bones[False, "side"]) == ["Head", "LeftEye", "RightEye"]
    assert bones[False, "side"]["LeftEye"] == bones[False, "side"]["RightEye"]
    head = unity_euler(camera_to_unity_quaternion(make_pose(15.0, 0.0, 0.0).quaternion))
    assert unity_euler(bones[False, "side"]["LeftEye"]) == pytest.approx(head, abs=1e-3)
    assert unity_euler(bones[False, "side"]["LeftEye"])[1] == pytest.approx(-15.0, abs=1e-3)
    assert unity_euler(bones[True, "side"]["LeftEye"])[1] == pytest.approx(15.0, abs=1e-3)
    for mirror in (False, True):
        assert unity_euler(bones[mirror, "up"]["RightEye"])[0] == pytest.approx(-10.0, abs=1e-3)
    # Without the option nothing new; with it but no gaze read yet, the rest pose.
    with VmcSender("127.0.0.1", receiver.getsockname()[1]) as sender:
        sender.send(frame)
        assert [p[0] for a, p in receive_bundle(receiver) if a == "/VMC/Ext/Bone/Pos"] == ["Head"]
    receive_bundle(receiver)
    with VmcSender("127.0.0.1", receiver.getsockname()[1], eye_bones=True) as sender:
        sender.send(FakeFrame(2, 0.0, "cam0", [FakeFace(1, make_pose(0, 0, 0), make_shapes())]))
        rest = {p[0]: tuple(p[4:]) for a, p in receive_bundle(receiver) if a == "/VMC/Ext/Bone/Pos"}
    assert rest["LeftEye"] == pytest.approx((0.0, 0.0, 0.0, 1.0))


def test_vmc_no_face_sends_tracking_lost_and_time(receiver):
    """No face yet: the model is still loaded (a receiver shows no "waiting for a model"), tracking is lost."""
    with VmcSender("127.0.0.1", receiver.getsockname()[1]) as sender:
        sender.send(FakeFrame(3, 0.5, "cam0", []))
        msgs = receive_bundle(receiver)
        # A requested id that is not in the frame counts as no face too.
        sender.send(FakeFrame(4, 0.6, "cam0", [FakeFace(1, make_pose(0, 0, 0), make_shapes())]), face_id=9)
        msgs2 = receive_bundle(receiver)
    assert msgs[0] == ("/VMC/Ext/OK", [1, 3, 0, 0]) and msgs[1][0] == "/VMC/Ext/T" and len(msgs) == 2
    assert msgs2[0] == ("/VMC/Ext/OK", [1, 3, 0, 0]) and len(msgs2) == 2


def test_vmc_time_carries_on_where_the_media_clock_restarts(receiver):
    """/VMC/Ext/T is each frame's media time until that clock goes back (the run's next source) or stands still
    (stills at 0): from there it carries on a frame at 30 fps after the time last sent, never back; the closing
    bundle sends the last time sent."""
    face = FakeFace(1, make_pose(0, 0, 0), make_shapes())
    times = (0.0, 0.04, 0.08, 0.0, 0.04, 0.04, 1.0)  # a clip, the next clip from 0, a repeated time, a jump
    with VmcSender("127.0.0.1", receiver.getsockname()[1]) as sender:
        sent = []
        for k, t in enumerate(times):
            sender.send(FakeFrame(k, t, "clip", [face]))
            sent.append(next(p[0] for a, p in receive_bundle(receiver) if a == "/VMC/Ext/T"))
    closing = next(p[0] for a, p in receive_bundle(receiver) if a == "/VMC/Ext/T")
    step = 1 / 30
    expected = [0.0, 0.04, 0.08, 0.08 + step, 0.12 + step, 0.12 + 2 * step, 1.08 + 2 * step]
    assert sent == pytest.approx(expected, abs=1e-6)  # float32 on the wire
    assert closing == pytest.approx(expected[-1], abs=1e-6)


def test_vmc_a_lost_face_fades_its_blendshapes_to_rest_and_holds_its_head(receiver):
    """Lost at t = 1.0 s: the last weights go out scaled by 1, 0.6, 0.2, then 0 (0.5 s fade), then no more
    Blend messages; no Head message while lost (the receiver holds the last rotation); found again, all as
    before, and a second loss fades from the new weights."""
    shapes = make_shapes()
    seen = FakeFrame(1, 0.9, "cam0", [FakeFace(1, make_pose(10, 0, 0), shapes)])
    with VmcSender("127.0.0.1", receiver.getsockname()[1]) as sender:
        sender.send(seen)
        receive_bundle(receiver)
        faded = []
        for t in (1.0, 1.2, 1.4, 1.6, 1.8):
            sender.send(FakeFrame(2, t, "cam0", []))
            msgs = receive_bundle(receiver)
            assert not any(a == "/VMC/Ext/Bone/Pos" for a, _ in msgs)
            assert ("/VMC/Ext/OK", [1, 3, 0, 0]) in msgs
            faded.append({p[0]: p[1] for a, p in msgs if a == "/VMC/Ext/Blend/Val"})
        for scale, values in zip((1.0, 0.6, 0.2, 0.0), faded):
            assert values.keys() == shapes.keys()
            for name, value in values.items():
                assert value == pytest.approx(shapes[name] * scale, abs=1e-6)
        assert faded[4] == {}
        sender.send(seen)
        again = receive_bundle(receiver)
        assert ("/VMC/Ext/OK", [1, 3, 0, 1]) in again and any(p[0] == "Head" for a, p in again
                                                               if a == "/VMC/Ext/Bone/Pos")
        sender.send(FakeFrame(3, 0.95, "cam0", []))
        assert {p[0] for a, p in receive_bundle(receiver) if a == "/VMC/Ext/Blend/Val"} == shapes.keys()


def test_vmc_closing_puts_the_weights_at_rest_and_says_tracking_is_lost(receiver):
    """The run's end: a receiver keeps what it got last, so the sender's close sends each weight it sent at 0
    and tracking lost, at the last frame's time; the head keeps its rotation. A sender that sent nothing says
    nothing."""
    shapes = make_shapes()
    sender = VmcSender("127.0.0.1", receiver.getsockname()[1])
    sender.send(FakeFrame(1, 2.5, "cam0", [FakeFace(1, make_pose(10, 0, 0), shapes)]))
    receive_bundle(receiver)
    sender.close()
    last = receive_bundle(receiver)
    assert {p[0]: p[1] for a, p in last if a == "/VMC/Ext/Blend/Val"} == dict.fromkeys(shapes, 0.0)
    assert [a for a, _ in last][-3:] == ["/VMC/Ext/Blend/Apply", "/VMC/Ext/OK", "/VMC/Ext/T"]
    assert ("/VMC/Ext/OK", [1, 3, 0, 0]) in last and last[-1][1] == [pytest.approx(2.5)]
    assert not any(a == "/VMC/Ext/Bone/Pos" for a, _ in last)
    VmcSender("127.0.0.1", receiver.getsockname()[1]).close()
    receiver.settimeout(0.2)
    with pytest.raises(TimeoutError):
        receiver.recvfrom(65536)


def test_vmc_the_fade_never_stalls_or_goes_back_up_when_the_clock_does(receiver):
    """Time that stands still (stills, the library's default time_s) counts each frame as 1/30 s; time that
    jumps back (a restarted source) neither restarts nor undoes the fade."""
    shapes = {"jawOpen": 0.5}
    levels = []
    with VmcSender("127.0.0.1", receiver.getsockname()[1]) as sender:
        sender.send(FakeFrame(0, 5.0, "cam0", [FakeFace(1, None, shapes)]))
        receive_bundle(receiver)
        for t in (5.1, 5.2, 1.0, 1.0, 1.0):
            sender.send(FakeFrame(1, t, "cam0", []))
            values = [p[1] for a, p in receive_bundle(receiver) if a == "/VMC/Ext/Blend/Val"]
            levels.append(values[0] if values else None)
    assert levels[0] == pytest.approx(0.5) and levels[1] == pytest.approx(0.4)
    assert levels[2] == pytest.approx(0.5 * (0.8 - 1 / 15), abs=1e-6)  # back in time: one frame's worth
    assert levels[2] > levels[3] > levels[4]


def test_vmc_presets_follow_the_arkit_weights_and_the_mirror(receiver):
    shapes = {name: 0.0 for name in ARKIT_BLENDSHAPES}
    shapes.update(eyeBlinkLeft=0.9, eyeBlinkRight=0.1, jawOpen=0.4, eyeLookOutLeft=0.6, eyeLookInRight=0.4,
                  eyeLookUpLeft=0.2, eyeLookUpRight=0.4)
    frame = FakeFrame(1, 0.0, "cam0", [FakeFace(1, make_pose(0, 0, 0), shapes)])
    sent = {}
    for mirror in (False, True):
        with VmcSender("127.0.0.1", receiver.getsockname()[1], mirror=mirror, presets=True) as sender:
            sender.send(frame)
            sent[mirror] = {p[0]: p[1] for a, p in receive_bundle(receiver) if a == "/VMC/Ext/Blend/Val"}
        receive_bundle(receiver)  # the one its close sends
    assert sent[False]["Blink_L"] == pytest.approx(0.9) and sent[False]["Blink_R"] == pytest.approx(0.1)
    assert sent[False]["A"] == pytest.approx(0.4) and sent[False]["LookUp"] == pytest.approx(0.3)
    assert sent[False]["LookLeft"] == pytest.approx(0.5) and sent[False]["LookRight"] == pytest.approx(0.0)
    assert sent[True]["Blink_L"] == pytest.approx(0.1) and sent[True]["LookRight"] == pytest.approx(0.5)
    with VmcSender("127.0.0.1", receiver.getsockname()[1]) as sender:  # without the option: ARKit names only
        sender.send(frame)
        assert {p[0] for a, p in receive_bundle(receiver) if a == "/VMC/Ext/Blend/Val"} == set(ARKIT_BLENDSHAPES)


def test_vmc_pascal_case_spells_the_arkit_names_as_vrm_clips_do(receiver):
    frame = FakeFrame(1, 0.0, "cam0", [FakeFace(1, None, {"eyeBlinkLeft": 0.7, "jawOpen": 0.2, "custom": 0.1})])
    with VmcSender("127.0.0.1", receiver.getsockname()[1], mirror=True, presets=True, pascal_case=True) as sender:
        sender.send(frame)
        sent = {p[0]: p[1] for a, p in receive_bundle(receiver) if a == "/VMC/Ext/Blend/Val"}
    # Mirrored first (the subject's left eye is the avatar's right), presets and other names as they are.
    assert sent == pytest.approx({"EyeBlinkRight": 0.7, "JawOpen": 0.2, "custom": 0.1, "Blink_R": 0.7, "A": 0.2})


def test_vmc_a_rotation_that_is_not_finite_is_left_out_not_sent_as_the_rest_pose(receiver):
    bad = make_pose(0, 0, 0)
    bad.quaternion = np.array([math.nan, 0.0, 0.0, 0.0])
    with VmcSender("127.0.0.1", receiver.getsockname()[1]) as sender:
        sender.send(FakeFrame(1, 0.0, "cam0", [FakeFace(1, bad, make_shapes())]))
        msgs = receive_bundle(receiver)
    assert not any(a == "/VMC/Ext/Bone/Pos" for a, _ in msgs) and ("/VMC/Ext/OK", [1, 3, 0, 1]) in msgs


def test_vmc_partial_face_and_face_id(receiver):
    frame = FakeFrame(1, 0.0, "cam0", [
        FakeFace(1, None, {"jawOpen": 0.25}),
        FakeFace(2, make_pose(-30, 0, 0), None),
    ])
    with VmcSender("127.0.0.1", receiver.getsockname()[1]) as sender:
        sender.send(frame)  # first face: blendshapes only
        first = receive_bundle(receiver)
        sender.send(frame, face_id=2)  # pose only
        second = receive_bundle(receiver)
    assert [a for a, _ in first] == ["/VMC/Ext/Blend/Val", "/VMC/Ext/Blend/Apply", "/VMC/Ext/OK", "/VMC/Ext/T"]
    assert first[0][1] == ["jawOpen", 0.25]
    assert [a for a, _ in second] == ["/VMC/Ext/Bone/Pos", "/VMC/Ext/OK", "/VMC/Ext/T"]
    assert unity_euler(tuple(second[0][1][4:]))[1] == pytest.approx(30.0, abs=1e-4)  # yaw -30 → Unity Y +30


def test_vmc_clips_values_skips_nan_and_mirrors_names(receiver):
    shapes = {"eyeBlinkLeft": 1.5, "eyeBlinkRight": -0.2, "jawOpen": math.nan, "mouthLeft": 0.5}
    frame = FakeFrame(1, 0.0, "cam0", [FakeFace(1, None, shapes)])
    with VmcSender("127.0.0.1", receiver.getsockname()[1], mirror=True) as sender:
        sender.send(frame)
        msgs = receive_bundle(receiver)
    vals = {p[0]: p[1] for a, p in msgs if a == "/VMC/Ext/Blend/Val"}
    assert vals == {"eyeBlinkRight": 1.0, "eyeBlinkLeft": 0.0, "mouthRight": 0.5}


# ----------------------------------------------------------------------------- UDP JSON


def test_udp_json_whole_frame(receiver):
    frame = FakeFrame(12, 0.48, "clip.mp4", [FakeFace(1, make_pose(10, 5, 0), make_shapes(),
                                                      [[1.5, 2.5]] * 68)])
    with UdpJsonSender("127.0.0.1", receiver.getsockname()[1]) as sender:
        sender.send(frame)
        data, _ = receiver.recvfrom(65536)
        assert (sender.sent, sender.split, sender.dropped, sender.errors) == (1, 0, 0, 0)
    assert b" " not in data  # compact separators
    assert json.loads(data) == frame.to_record()


def test_udp_json_splits_per_face(receiver):
    faces = [FakeFace(i, None, None, [[float(i), float(k)] for k in range(68)]) for i in range(6)]
    frame = FakeFrame(5, 0.2, "cam0", faces)
    whole = len(json.dumps(frame.to_record(), separators=(",", ":")))
    with UdpJsonSender("127.0.0.1", receiver.getsockname()[1], max_bytes=whole // 3) as sender:
        sender.send(frame)
        parts = [json.loads(receiver.recvfrom(65536)[0]) for _ in range(6)]
        assert (sender.sent, sender.split, sender.dropped, sender.errors) == (6, 1, 0, 0)
    assert [p["part"] for p in parts] == list(range(6)) and all(p["parts"] == 6 for p in parts)
    for i, p in enumerate(parts):
        assert p["frame"] == 5 and p["source"] == "cam0" and p["time_s"] == 0.2
        assert p["faces"] == [faces[i].to_record()]
        assert "dropped_faces" not in p


def test_udp_json_drops_oversized_face(receiver):
    small = FakeFace(1, None, None, [[0.0, 0.0]] * 3)
    huge = FakeFace(2, None, None, [[123.456, 789.012]] * 500)
    frame = FakeFrame(9, 1.0, "cam0", [small, huge])
    with UdpJsonSender("127.0.0.1", receiver.getsockname()[1], max_bytes=1000) as sender:
        sender.send(frame)
        part = json.loads(receiver.recvfrom(65536)[0])
        assert (sender.sent, sender.split, sender.dropped) == (1, 1, 1)
        # Only the oversized face: the frame still arrives, with no faces.
        sender.send(FakeFrame(10, 1.1, "cam0", [huge]))
        bare = json.loads(receiver.recvfrom(65536)[0])
        assert (sender.sent, sender.dropped) == (2, 2)
    assert part["faces"] == [small.to_record()] and (part["part"], part["parts"]) == (0, 1)
    assert part["dropped_faces"] == 1
    assert bare["frame"] == 10 and bare["faces"] == [] and bare["dropped_faces"] == 1


def test_udp_json_handles_numpy_values(receiver):
    class NumpyFrame(FakeFrame):
        def to_record(self) -> dict:
            return {"frame": np.int64(1), "time_s": np.float32(0.5), "source": "x",
                    "faces": [{"bbox": np.array([1.0, 2.0])}]}

    with UdpJsonSender("127.0.0.1", receiver.getsockname()[1]) as sender:
        sender.send(NumpyFrame(1, 0.5, "x"))
        assert json.loads(receiver.recvfrom(65536)[0]) == {"frame": 1, "time_s": 0.5, "source": "x",
                                                           "faces": [{"bbox": [1.0, 2.0]}]}


def test_a_value_that_is_not_finite_goes_out_as_null_never_as_invalid_json(receiver, tmp_path):
    """JSON has no NaN or infinity: strict readers refuse a line holding them. Both JSON outputs write null."""
    from tracker.outputs import JsonlWriter
    from tracker.types import record_json

    class BrokenFrame(FakeFrame):
        def to_record(self) -> dict:
            return {"frame": 3, "time_s": 0.1, "source": "x", "faces": [
                {"bbox": [0.0, 1.0, math.nan, 2.0], "pose": {"yaw": math.inf, "quaternion": np.array([1.0, -math.inf])},
                 "blendshapes": {"jawOpen": np.float32("nan"), "eyeBlinkLeft": 0.5}}]}

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a JSON output"))

    expected = {"frame": 3, "time_s": 0.1, "source": "x", "faces": [
        {"bbox": [0.0, 1.0, None, 2.0], "pose": {"yaw": None, "quaternion": [1.0, None]},
         "blendshapes": {"jawOpen": None, "eyeBlinkLeft": 0.5}}]}
    assert strict(record_json(BrokenFrame(3, 0.1, "x").to_record())) == expected
    with UdpJsonSender("127.0.0.1", receiver.getsockname()[1]) as sender:
        sender.send(BrokenFrame(3, 0.1, "x"))
        assert strict(receiver.recvfrom(65536)[0]) == expected
    writer = JsonlWriter(str(tmp_path / "out.jsonl"))
    writer.write(BrokenFrame(3, 0.1, "x"))
    writer.close()
    assert strict((tmp_path / "out.jsonl").read_text()) == expected
    finite = FakeFrame(12, 0.48, "clip.mp4", [FakeFace(1, make_pose(10, 5, 0), make_shapes(), [[1.5, 2.5]] * 68)])
    assert record_json(finite.to_record()) == json.dumps(finite.to_record(), separators=(",", ":"))


# ----------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("kind", ["vmc", "json"])
def test_receiver_down_never_raises_or_blocks(kind, caplog):
    port = closed_port()
    frame = FakeFrame(0, 0.0, "cam0", [FakeFace(1, make_pose(10, 0, 0), make_shapes())])
    sender = VmcSender("127.0.0.1", port) if kind == "vmc" else UdpJsonSender("127.0.0.1", port)
    caplog.set_level(logging.WARNING, logger="tracker.avatar")
    slowest = 0.0
    for i in range(200):
        frame.frame, frame.time_s = i, i / 30
        t0 = time.perf_counter()
        sender.send(frame)
        slowest = max(slowest, time.perf_counter() - t0)
    sender.close()
    # No send waits on the receiver (a blocking one would take seconds; each took about 1 ms here). The bound
    # is loose so that a slow, shared machine does not fail it.
    assert slowest < 0.5
    # Linux reports the ICMP "port unreachable" of each datagram as ECONNREFUSED on the next send.
    assert sender.errors >= 50
    assert sender.sent + sender.errors == 200
    warnings = [r for r in caplog.records if r.name == "tracker.avatar"]
    assert len(warnings) == 1  # rate-limited: one line per 5 s
    sender.send(frame)  # after close: silently nothing
    assert sender.sent + sender.errors == 200


def test_unreachable_network_is_counted_and_retried(receiver, monkeypatch, caplog):
    """No route at construction (network down): no exception; once the route is back, frames flow."""
    real_connect = socket.socket.connect

    def no_route(self, address):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", no_route)
    caplog.set_level(logging.WARNING, logger="tracker.avatar")
    sender = UdpJsonSender("127.0.0.1", receiver.getsockname()[1])
    frame = FakeFrame(1, 0.0, "cam0", [])
    for _ in range(10):
        sender.send(frame)
    assert (sender.sent, sender.errors) == (0, 11)  # construction + 10 sends
    assert "Network is unreachable" in caplog.text
    monkeypatch.setattr(socket.socket, "connect", real_connect)
    sender.send(frame)
    assert sender.sent == 1 and json.loads(receiver.recvfrom(65536)[0])["frame"] == 1
    sender.close()


def test_unresolvable_host_is_one_clear_address_error():
    with pytest.raises(AddressError, match="cannot resolve VMC host 'no-such-host.invalid'"):
        VmcSender("no-such-host.invalid", 39539)
    with pytest.raises(AddressError, match="cannot resolve UDP JSON host"):
        UdpJsonSender("no-such-host.invalid", 40000)


def test_a_broadcast_address_may_be_sent_to():
    """Without SO_BROADCAST the kernel refuses every datagram to 255.255.255.255 (EACCES), frame after frame."""
    with VmcSender("255.255.255.255", closed_port()) as sender:
        assert sender._link._sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1


def test_sender_opens_no_listening_socket():
    with VmcSender("127.0.0.1", closed_port()) as sender:
        sock = sender._link._sock
        assert sock is not None
        # Connected to the receiver: a datagram from anyone else is never accepted.
        assert sock.getpeername() == ("127.0.0.1", sender.address[1])
        assert sock.type == socket.SOCK_DGRAM and sock.getblocking() is False


def test_localhost_prefers_ipv4():
    with VmcSender("localhost") as sender:
        assert sender.address[0] == "127.0.0.1" and sender.address[1] == 39539


# ----------------------------------------------------------------------------- parse_host_port


@pytest.mark.parametrize("text, expected", [
    ("192.168.1.5:39540", ("192.168.1.5", 39540)),
    ("studio-pc", ("studio-pc", 39539)),
    ("studio-pc:1", ("studio-pc", 1)),
    (":40000", ("127.0.0.1", 40000)),
    ("[::1]:39540", ("::1", 39540)),
    ("[fe80::1]", ("fe80::1", 39539)),
    ("::1", ("::1", 39539)),
    ("  localhost:65535 ", ("localhost", 65535)),
])
def test_parse_host_port_ok(text, expected):
    assert parse_host_port(text, 39539) == expected


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("host:abc", "not a number"),
    ("host:", "not a number"),
    ("host:\u00b9\u00b2", "not a number"),  # superscript digits, which str.isdigit accepts
    ("host:\u0663\u0663", "not a number"),  # Arabic-Indic digits, which int() reads as 33
    ("host:0", "outside 1-65535"),
    ("host:70000", "outside 1-65535"),
    ("[::1", "missing ']'"),
    ("[::1]x", "expected ':port'"),
    ("[nope]:1", "not an IPv6 address"),
    ("1:2:3", "IPv6"),
    ("my host:1", "spaces"),
])
def test_parse_host_port_errors(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_host_port(text, 39539)

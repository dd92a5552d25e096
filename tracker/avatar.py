"""Avatar outputs: VMC protocol (OSC over UDP) and one-datagram-per-frame JSON over UDP.

Both senders are fire-and-forget: a receiver that is down, a network that is
unreachable or a full socket buffer never blocks or crashes tracking. Errors
are counted (``.errors``) and logged at most once per 5 s on the
``tracker.avatar`` logger. The host name is resolved once, at construction
(an unresolvable name raises ``AddressError``, a ``ValueError``), so no DNS look-up ever happens on
the per-frame path. The sockets are UDP, non-blocking and *connected* to the
receiver: they own only the ephemeral source port the kernel gives them, listen
on nothing, and the kernel discards any datagram not coming from the receiver.

Axis conversion (camera → Unity/VMC), see :func:`camera_to_unity_quaternion`.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pythonosc import osc_bundle_builder, osc_message_builder

from tracker.pose import euler_to_matrix, matrix_to_quaternion
from tracker.types import ARKIT_BLENDSHAPES, Gaze, mirror_blendshape_name, record_json

if TYPE_CHECKING:  # typing.Self is 3.11+, the project supports 3.10
    from typing_extensions import Self

log = logging.getLogger("tracker.avatar")

VMC_DEFAULT_PORT = 39539
LOG_INTERVAL_S = 5.0
# A face lost from view: its last blendshape weights fade to 0 over this long (media seconds), so that the
# avatar does not freeze mid-blink or with its mouth open; its head holds the last rotation.
LOST_FACE_FADE_S = 0.5
# VMC's /VMC/Ext/OK: loaded 1 (there is always a "model"), calibration state 3 (calibrated), calibration mode 0
# (normal), then the tracking status of the protocol's version 2.7: 1 while the face is tracked, 0 when lost.
_VMC_LOADED, _VMC_CALIBRATED, _VMC_NORMAL_MODE = 1, 3, 0
# VRM 0.x preset expressions for avatars without the 52 "perfect sync" clips: each the mean of these ARKit
# weights (names as sent, so --vmc-mirror swaps them with the rest). An avatar's own left is its "_L"/"Left".
VRM_PRESETS = {
    "Blink_L": ("eyeBlinkLeft",),
    "Blink_R": ("eyeBlinkRight",),
    "A": ("jawOpen",),
    "LookUp": ("eyeLookUpLeft", "eyeLookUpRight"),
    "LookDown": ("eyeLookDownLeft", "eyeLookDownRight"),
    "LookLeft": ("eyeLookOutLeft", "eyeLookInRight"),
    "LookRight": ("eyeLookOutRight", "eyeLookInLeft"),
}

# The 52 ARKit blendshape names, in Apple's documentation order (eyes, jaw, mouth,
# brows, cheeks, nose, tongue). VMC "perfect sync" receivers look them up by name.
_ARKIT_SET = frozenset(ARKIT_BLENDSHAPES)


class _Face(Protocol):  # what the senders read from a FaceResult (duck-typed)
    id: int
    pose: Any  # Pose | None: .quaternion [w, x, y, z] camera axes, .translation_mm
    blendshapes: Mapping[str, float] | None


class _Frame(Protocol):  # what the senders read from a FrameResult
    time_s: float
    faces: list

    def to_record(self) -> dict: ...


# --------------------------------------------------------------------------- addresses


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """Parse ``host:port``, ``host``, ``:port``, ``[v6]:port``, ``[v6]`` or a bare IPv6 address.

    An empty host (``:port``) means this machine, ``127.0.0.1``.
    Raises ``ValueError`` with a readable message on anything else.
    """
    s = text.strip()
    if not s:
        raise ValueError("empty address: expected host, host:port or :port")
    if s.startswith("["):  # bracketed IPv6, the only way to give an IPv6 address a port
        end = s.find("]")
        if end < 0:
            raise ValueError(f"bad address {text!r}: missing ']' after the IPv6 address")
        host, rest = s[1:end], s[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad address {text!r}: {host!r} is not an IPv6 address") from None
        if not rest:
            return host, _check_port(default_port, text)
        if not rest.startswith(":"):
            raise ValueError(f"bad address {text!r}: expected ':port' after ']'")
        return host, _parse_port(rest[1:], text)
    if s.count(":") > 1:  # bare IPv6 address: it cannot carry a port without brackets
        try:
            ipaddress.IPv6Address(s)
        except ValueError:
            raise ValueError(f"bad address {text!r}: write an IPv6 address with a port as [addr]:port") from None
        return s, _check_port(default_port, text)
    host, sep, port_text = s.partition(":")
    if any(c.isspace() for c in host):
        raise ValueError(f"bad address {text!r}: the host name contains spaces")
    port = _parse_port(port_text, text) if sep else _check_port(default_port, text)
    return host or "127.0.0.1", port


def _parse_port(port_text: str, text: str) -> int:
    if not (port_text.isascii() and port_text.isdigit()):  # isdigit alone takes '¹²' and other scripts' digits
        raise ValueError(f"bad address {text!r}: port {port_text!r} is not a number")
    return _check_port(int(port_text), text)


def _check_port(port: int, text: str) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"bad address {text!r}: port {port} is outside 1-65535")
    return port


# --------------------------------------------------------------------------- transport


class AddressError(ValueError):
    """A receiver's address that cannot be used (a name that resolves to no host, or another sender's address): the
    command line's usage error, like an address it cannot parse."""


def shown_address(address: tuple) -> str:
    """host:port of a socket address, an IPv6 host in brackets ([::1]:39539)."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _UdpLink:
    """A non-blocking, connected UDP socket that counts errors instead of raising them."""

    def __init__(self, host: str, port: int, what: str) -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError) as e:
            raise AddressError(f"cannot resolve {what} host {host!r}: {e}") from None
        if not infos:
            raise AddressError(f"cannot resolve {what} host {host!r}")
        # Prefer IPv4: "localhost" often resolves to ::1 first, while VMC receivers
        # (VSeeFace, Warudo, VNyan) listen on IPv4 only.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        family, _, _, _, self.address = infos[0]
        self.what = what
        self.errors = 0
        try:
            self._sock: socket.socket | None = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as e:  # e.g. an IPv6 address on a machine with IPv6 disabled
            raise ValueError(f"cannot open a UDP socket to {what} host {host!r}: {e}") from None
        self._sock.setblocking(False)  # a full send buffer must drop the frame, not stall tracking
        if family == socket.AF_INET:  # a broadcast address (255.255.255.255, a subnet's .255) is refused without it
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self._connected = False
        self._last_log = -math.inf
        self._unlogged = 0
        self._try_connect()

    def _try_connect(self) -> bool:
        # connect() on UDP sends nothing; it fixes the peer, so the kernel reports
        # "port unreachable" (ECONNREFUSED on the next send) and drops foreign datagrams.
        # It fails at once (no route) when the network is down; we retry on later sends.
        assert self._sock is not None
        try:
            self._sock.connect(self.address)
        except OSError as e:
            self._error(e)
            return False
        self._connected = True
        return True

    def send(self, data: bytes, report: bool = True) -> bool:
        """Send one datagram; a failure is counted, and with ``report`` logged (at most once per 5 s)."""
        if self._sock is None:
            return False
        if not self._connected and not self._try_connect():
            return False
        try:
            self._sock.send(data)
        except OSError as e:  # ConnectionRefusedError, BlockingIOError, EMSGSIZE, ENETUNREACH, ...
            if report:
                self._error(e)
            else:
                self.errors += 1
            return False
        return True

    def _error(self, exc: OSError) -> None:
        self.errors += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_INTERVAL_S:  # one line per 5 s, however fast frames fail
            log.warning(
                "%s to %s: %s (%d send error(s) since the last report, %d in all)",
                self.what, shown_address(self.address), exc, self._unlogged, self.errors,
            )
            self._last_log = now
            self._unlogged = 0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# --------------------------------------------------------------------------- VMC


def camera_to_unity_quaternion(q_wxyz: Iterable[float], mirror: bool = False) -> tuple[float, float, float, float]:
    """Head rotation in our camera axes → the VMC ``Head`` bone rotation, as Unity's (x, y, z, w).

    Our quaternion [w, x, y, z] is the rotation R of the head from the frontal pose,
    in camera axes (right-handed: x image-right, y down, z forward, away from the camera).

    The VMC bone rotation is the rotation from the avatar's rest pose, in Unity's
    left-handed axes (x right, y up, z forward), where an avatar at rest faces +z,
    so that its own right is +x, its up +y; the receiver's camera (the viewer)
    looks at it from the front. VSeeFace, VNyan, Warudo and the ARKit "perfect
    sync" convention drive the avatar *anatomically*: the subject's own left eye
    blinks the avatar's own left eye (``eyeBlinkLeft``), so a head turning to the
    subject's own left must turn the avatar to *its* own left as well; anything
    else would contradict the Left/Right blendshapes.

    Matching body directions. The frontal subject, seen by the camera, has
        own right = -x_cam (image left),  up = -y_cam,  out of the face = -z_cam;
    the avatar at rest has
        own right = +x_u,                 up = +y_u,    out of the face = +z_u.
    So the map from camera to Unity coordinates that keeps every body direction is
    M = diag(-1, -1, -1) = -I (determinant -1, as it must be between a right- and a
    left-handed frame). The same head rotation in Unity axes is R_u = M R M⁻¹ = R:
    a point reflection commutes with every rotation. The quaternion→matrix formula
    is the same algebra in Unity, so the components carry over unchanged:
        (qx, qy, qz, qw)_Unity = (x, y, z, w)_camera.
    Checks (tests/test_avatar.py): yaw > 0 (turn to own left) is a negative Unity
    Y angle (Unity +Y turns +z towards +x, the avatar's right); pitch > 0 (look up)
    a negative Unity X angle (+X tips the nose down); roll > 0 (tilt to own left
    shoulder) a positive Unity Z angle (+Z moves +y towards -x, the avatar's left).

    The tempting S = diag(1, -1, 1) (flip y only; R_u = S R S, i.e. [w, -x, y, -z])
    maps camera space onto a Unity scene in which the head *faces -z*, towards a
    Unity camera at the origin. Applied to an avatar that rests facing +z it would
    invert pitch and roll (S·M⁻¹ = diag(-1, 1, -1) is a half turn about y).

    ``mirror=True`` gives the mirror-image motion instead (the avatar behaves like the
    user's reflection): reflect the avatar's x, P = diag(-1, 1, 1); a quaternion's
    axis is a pseudovector, so it maps to det(P)·P·(x, y, z) = (x, -y, -z), while
    the caller swaps the Left/Right blendshape names.
    """
    w, x, y, z = (float(v) for v in q_wxyz)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if not math.isfinite(n) or n < 1e-9:  # no usable rotation: send the rest pose
        return 0.0, 0.0, 0.0, 1.0
    w, x, y, z = w / n, x / n, y / n, z / n
    if mirror:
        y, z = -y, -z
    return x, y, z, w


def eye_rotation(gaze: Gaze | None) -> np.ndarray:
    """The eyes' turn in the head for a face's ``gaze``, as a quaternion [w, x, y, z] in the head pose's
    convention: the eye's line of sight is turned up by the pitch, then sideways by the yaw, as the gaze's
    angles are measured. The rest pose without a gaze."""
    if gaze is None or not math.isfinite(gaze.yaw + gaze.pitch):
        return np.array([1.0, 0.0, 0.0, 0.0])
    return matrix_to_quaternion(euler_to_matrix(gaze.yaw, 0.0, 0.0) @ euler_to_matrix(0.0, gaze.pitch, 0.0))


def _is_rotation(q: Iterable[float]) -> bool:
    """Whether a quaternion can be sent as a rotation (finite, not zero): else the bone's message is left out,
    and the receiver holds the last rotation rather than snapping to the rest pose."""
    n = math.sqrt(sum(float(v) * float(v) for v in q))
    return math.isfinite(n) and n >= 1e-9


def _bone(name: str, q_xyzw: tuple[float, float, float, float]) -> Any:
    """A VMC bone message with no position offset (receivers read face-tracking bones' rotations only)."""
    qx, qy, qz, qw = q_xyzw
    return _message("/VMC/Ext/Bone/Pos", (name, "s"), (0.0, "f"), (0.0, "f"), (0.0, "f"),
                    (qx, "f"), (qy, "f"), (qz, "f"), (qw, "f"))


def _message(address: str, *args: tuple[Any, str]) -> Any:
    builder = osc_message_builder.OscMessageBuilder(address=address)
    for value, kind in args:
        builder.add_arg(value, kind)  # explicit OSC types: numpy floats must not become strings
    return builder.build()


class _Sender:
    """What both senders share: one UDP link, closed by ``close`` or by leaving a ``with`` block."""

    _link: _UdpLink

    @property
    def errors(self) -> int:
        return self._link.errors

    @property
    def address(self) -> tuple:
        return self._link.address

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VmcSender(_Sender):
    """Send one VMC (Virtual Motion Capture protocol) OSC bundle per frame over UDP.

    Bundle for a frame with the tracked face, in order:
      ``/VMC/Ext/Blend/Val`` (name, value) for each ARKit blendshape ("perfect sync"; with ``pascal_case``
      spelled "EyeBlinkLeft", for receivers that match names case by case), and with ``presets`` the VRM 0.x
      presets made from them (:data:`VRM_PRESETS`),
      ``/VMC/Ext/Blend/Apply``,
      ``/VMC/Ext/Bone/Pos`` ("Head", 0, 0, 0, qx, qy, qz, qw) — Unity axes, see
      :func:`camera_to_unity_quaternion`,
      with ``eye_bones``, ``/VMC/Ext/Bone/Pos`` "LeftEye" and "RightEye" the same way: the face's gaze,
      relative to the head (:func:`eye_rotation`),
      ``/VMC/Ext/OK`` (1, 3, 0, 1): loaded, calibrated, normal mode, tracking; ``/VMC/Ext/T`` time_s (carried
      on, a frame at 30 fps later, where the media clock restarts or stands still: it never goes back).
    A frame without that face sends ``/VMC/Ext/OK`` (1, 3, 0, 0), tracking lost, and ``/VMC/Ext/T``; for
    the first :data:`LOST_FACE_FADE_S` seconds it also sends the last blendshape weights fading to 0 (a
    receiver keeps the last weights it got), while the head keeps its last rotation. A face without pose
    (or blendshapes) skips the Bone (or Blend) messages, and so does a rotation that is not finite. ``close``
    sends a last bundle: the weights last sent at 0, and tracking lost (the run is over; a receiver would otherwise
    keep the last expression, reported as tracked).

    The Head position is (0, 0, 0): a VMC bone position is the bone's *local* offset
    from its parent (Neck) in the avatar's rig, which the camera-frame translation is
    not; receivers that drive a face-tracked avatar (VSeeFace, VNyan, Warudo) read the
    Head rotation only. The translation stays available in the JSON outputs.
    """

    def __init__(self, host: str, port: int = VMC_DEFAULT_PORT, *, mirror: bool = False,
                 eye_bones: bool = False, presets: bool = False, pascal_case: bool = False) -> None:
        self._link = _UdpLink(host, port, "VMC")
        self.mirror = mirror
        self.eye_bones = eye_bones
        self.presets = presets
        self.pascal_case = pascal_case
        self.sent = 0  # bundles handed to the kernel
        self._last_blends: list[tuple[str, float]] = []  # the weights last sent for a tracked face
        self._fade_left = 1.0  # how much of them a lost face still sends (1 down to 0)
        self._lost = False  # the frame before had no face
        self._last_time: float | None = None  # time_s of the frame before
        # /VMC/Ext/T never goes back: a clock that restarts (the next source of a run, stills at 0) is carried on
        # from the time last sent, a frame at 30 fps later. Otherwise it is the media time plus this offset.
        self._clock_offset = 0.0

    def build(self, result: _Frame, face_id: int | None = None) -> bytes:
        """The OSC bundle for one frame (what :meth:`send` sends)."""
        face = _pick_face(result, face_id)
        bundle = osc_bundle_builder.OscBundleBuilder(osc_bundle_builder.IMMEDIATELY)
        blends = None
        time_s = float(result.time_s)
        step = time_s - self._last_time if self._last_time is not None else 0.0
        if self._last_time is not None and step <= 0.0:
            self._clock_offset += 1 / 30 - step
        self._last_time = time_s
        if face is not None:
            self._fade_left, self._lost = 1.0, False
            shapes = getattr(face, "blendshapes", None)
            if shapes is not None:
                blends = self._last_blends = self._blend_values(shapes)
            pose = getattr(face, "pose", None)
            head = getattr(pose, "quaternion", None) if pose is not None else None
            bones = []
            if head is not None and _is_rotation(head):
                bones.append(("Head", camera_to_unity_quaternion(head, self.mirror)))
            if self.eye_bones and pose is not None:
                eyes = camera_to_unity_quaternion(eye_rotation(getattr(face, "gaze", None)), self.mirror)
                bones += [("LeftEye", eyes), ("RightEye", eyes)]  # both eyes turn together
        else:
            blends, bones = self._fading(step), []
        if blends is not None:
            for name, value in blends:
                bundle.add_content(_message("/VMC/Ext/Blend/Val", (name, "s"), (value, "f")))
            bundle.add_content(_message("/VMC/Ext/Blend/Apply"))
        for name, rotation in bones:
            bundle.add_content(_bone(name, rotation))
        tracking = 1 if face is not None else 0
        bundle.add_content(_message("/VMC/Ext/OK", (_VMC_LOADED, "i"), (_VMC_CALIBRATED, "i"), (_VMC_NORMAL_MODE, "i"),
                                    (tracking, "i")))
        bundle.add_content(_message("/VMC/Ext/T", (time_s + self._clock_offset, "f")))
        return bundle.build().dgram

    def _fading(self, step: float) -> list[tuple[str, float]] | None:
        """The lost face's last weights, faded by the time since it was lost; None once they reached 0. ``step``
        is the time since the frame before: the first frame without the face sends them whole, and a clock that
        does not move forward (stills, a restarted source) counts a frame at 30 fps, so the fade never stalls
        and never goes back up."""
        if not self._last_blends:
            return None
        if self._lost:  # not the first frame without the face
            self._fade_left = max(0.0, self._fade_left - (step if step > 0 else 1 / 30) / LOST_FACE_FADE_S)
        self._lost = True
        faded = [(name, value * self._fade_left) for name, value in self._last_blends]
        if self._fade_left == 0.0:
            self._last_blends = []  # sent at 0 once; the receiver keeps them there
        return faded

    def _blend_values(self, shapes: Mapping[str, float]) -> list[tuple[str, float]]:
        # The 52 ARKit names first, in their fixed order; any other names after them,
        # as given (receivers ignore names their avatar lacks); then the VRM presets, if asked for.
        names = [n for n in ARKIT_BLENDSHAPES if n in shapes]
        names += [n for n in shapes if n not in _ARKIT_SET]
        out = []
        for name in names:
            value = float(shapes[name])
            if not math.isfinite(value):
                continue  # a NaN would freeze or explode the avatar's face
            out.append((mirror_blendshape_name(name) if self.mirror else name, min(max(value, 0.0), 1.0)))
        if self.presets:
            sent = dict(out)
            for preset, sources in VRM_PRESETS.items():
                values = [sent[n] for n in sources if n in sent]
                if values:
                    out.append((preset, sum(values) / len(values)))
        if self.pascal_case:  # "EyeBlinkLeft": how VRM perfect-sync avatars name their clips
            out = [(name[:1].upper() + name[1:] if name in _ARKIT_SET else name, value) for name, value in out]
        return out

    def send(self, result: _Frame, face_id: int | None = None) -> None:
        """Send one frame: the first face, or the face with id ``face_id``. Never raises on network errors."""
        if self._link.send(self.build(result, face_id)):
            self.sent += 1

    def closing_bundle(self) -> bytes:
        """The bundle :meth:`close` sends: every weight sent since the face was last at rest back to 0, and
        tracking lost, at the last frame's time."""
        bundle = osc_bundle_builder.OscBundleBuilder(osc_bundle_builder.IMMEDIATELY)
        if self._last_blends:
            for name, _ in self._last_blends:
                bundle.add_content(_message("/VMC/Ext/Blend/Val", (name, "s"), (0.0, "f")))
            bundle.add_content(_message("/VMC/Ext/Blend/Apply"))
        bundle.add_content(_message("/VMC/Ext/OK", (_VMC_LOADED, "i"), (_VMC_CALIBRATED, "i"), (_VMC_NORMAL_MODE, "i"),
                                    (0, "i")))
        bundle.add_content(_message("/VMC/Ext/T", ((self._last_time or 0.0) + self._clock_offset, "f")))
        return bundle.build().dgram

    def close(self) -> None:
        if self.sent:  # a receiver that got frames: the avatar is not left mid-expression, reported as tracked
            self._link.send(self.closing_bundle(), report=False)  # a receiver gone by now is no news at exit
            self._last_blends = []
        super().close()


def _pick_face(result: _Frame, face_id: int | None) -> _Face | None:
    faces = result.faces
    if face_id is None:
        return faces[0] if faces else None
    return next((f for f in faces if f.id == face_id), None)


# --------------------------------------------------------------------------- JSON over UDP


def _dumps(record: dict) -> bytes:
    return record_json(record).encode("utf-8")


class UdpJsonSender(_Sender):
    """Send each frame's JSON Lines record (``result.to_record()``, compact) as one UDP datagram.

    A record longer than ``max_bytes`` is split into one datagram per face, each a
    full frame record holding that single face plus ``"part"`` (0-based) and
    ``"parts"``; a face that alone exceeds ``max_bytes`` is dropped (counted in
    ``dropped``, and the parts carry ``"dropped_faces"``). If every face is dropped
    the frame still goes out with ``"faces": []`` so receivers see the frame.
    60000 bytes stays below the IPv4 UDP limit (65507). A face's record is about 4 KB,
    so every datagram beyond a network's MTU (about 1,472
    bytes of payload on Ethernet) travels IP-fragmented; a ``max_bytes`` under a face's
    size drops every face.

    Counters: ``sent`` datagrams sent, ``split`` frames that were split,
    ``dropped`` faces (or whole frames) dropped for size, ``errors`` send errors.
    """

    def __init__(self, host: str, port: int, max_bytes: int = 60000) -> None:
        if max_bytes < 64:
            raise ValueError(f"max_bytes {max_bytes} is too small for a frame record")
        self._link = _UdpLink(host, port, "UDP JSON")
        self.max_bytes = max_bytes
        self.sent = 0
        self.split = 0
        self.dropped = 0

    def datagrams(self, result: _Frame) -> list[bytes]:
        """The datagrams for one frame (what :meth:`send` sends); updates ``split``/``dropped``."""
        record = result.to_record()
        whole = _dumps(record)
        if len(whole) <= self.max_bytes:
            return [whole]
        faces = record.get("faces") or []
        head = {k: v for k, v in record.items() if k != "faces"}
        fitting: list[dict] = []
        dropped = 0
        for face in faces:
            # Measure with the largest part fields it could carry, so adding them cannot overflow.
            probe = _dumps({**head, "faces": [face], "part": len(faces), "parts": len(faces),
                            "dropped_faces": len(faces)})
            if len(probe) <= self.max_bytes:
                fitting.append(face)
            else:
                dropped += 1
        self.dropped += dropped
        if not fitting:  # nothing fits: still tell the receiver that the frame happened
            empty = _dumps({**head, "faces": [], "part": 0, "parts": 1, "dropped_faces": dropped})
            if len(empty) > self.max_bytes:
                self.dropped += 1  # not even the bare frame fits (an absurdly long source name)
                return []
            return [empty]
        self.split += 1
        extra = {"dropped_faces": dropped} if dropped else {}
        n = len(fitting)
        return [_dumps({**head, "faces": [face], "part": i, "parts": n, **extra}) for i, face in enumerate(fitting)]

    def send(self, result: _Frame) -> None:
        """Send one frame. Never raises on network errors or oversized records."""
        for datagram in self.datagrams(result):
            if self._link.send(datagram):
                self.sent += 1


#!/usr/bin/env python3
"""Build the product's reduced 3D face model, engines/face_model.npz, from ICT-FaceKit.

The tracker's Numba fitter needs only a few hundred model points, not ICT's
9409-vertex face, so this tool keeps exactly those: the 68 iBUG landmark
vertices, the points matching MediaPipe's 468-vertex canonical mesh, the
sliding jaw-contour candidates and a ring along the face's outer boundary.
A point is an ICT vertex or a barycentric point on an ICT triangle; because
the model is linear, a barycentric point's mean and bases are the same
barycentric combination of its triangle's vertices.

Inputs (read-only): ../shared/data/face_model/ (ict_face.npz, ict_landmarks.json,
mediapipe_canonical_face_model.obj, LICENSE-ICT-FaceKit.txt).
Outputs: engines/face_model.npz, engines/LICENSE-ICT-FaceKit.txt.
Deterministic: the same inputs give a byte-identical file.

    python tools/build_face_model.py
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tracker.types import ARKIT_BLENDSHAPES as ARKIT_NAMES

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared/data/face_model"
ENGINES = REPO / "engines"
REQUIRED = ("ict_face.npz", "ict_landmarks.json", "mediapipe_canonical_face_model.obj", "LICENSE-ICT-FaceKit.txt")

# Apple's documented order of the 52 ARKit blendshapes (ARFaceAnchor.BlendShapeLocation topics:
# left eye, right eye, mouth and jaw, eyebrows, cheeks, nose, tongue). Left/Right are the subject's.
# ARKit shapes that ICT splits into a left and a right half: ARKit's shape is their sum.
SPLIT_IN_ICT = ("browInnerUp", "cheekPuff")

# MediaPipe canonical vertex -> iBUG 68 index, for the initial similarity alignment.
MP_TO_IBUG: tuple[tuple[int, int], ...] = (
    (33, 36),  # right eye outer corner (subject's right, x < 0)
    (133, 39),  # right eye inner corner
    (362, 42),  # left eye inner corner
    (263, 45),  # left eye outer corner
    (4, 30),  # nose tip: MediaPipe 4 is the most forward canonical vertex (1 sits 0.7 cm lower)
    (61, 48),  # mouth corner, subject's right
    (291, 54),  # mouth corner, subject's left
    (152, 8),  # chin
)
ICP_ITERATIONS = 10
ICP_KEEP = 0.9  # fraction of closest pairs kept by ICP's outlier trimming
CONTOUR_STEP_CM = 0.35  # spacing of the sliding-contour candidates
# The front part of a contour line stops where the surface faces within this angle of straight
# ahead (in the horizontal plane): such a point is the silhouette only beyond ~70° of yaw.
CONTOUR_MIN_SIDE_ANGLE_DEG = 20.0
NARROW_FACE_VERTICES = 6706  # ICT "narrow face area" = vertices [0, 6705] (ICT-FaceKit README)
SILHOUETTE_STEP = 2  # keep every 2nd vertex of the narrow face area's outer boundary loop


class BuildError(RuntimeError):
    pass


@dataclass
class Ict:
    mean: np.ndarray  # N×3 float64, cm
    id_basis: np.ndarray  # 100×N×3 float32
    exp_basis: np.ndarray  # 53×N×3 float32
    exp_names: list[str]
    tris: np.ndarray  # T×3 int64
    lm68: np.ndarray  # 68 int64 vertex ids
    landmarks: dict  # ict_landmarks.json


def load_ict(folder: Path) -> Ict:
    d = np.load(folder / "ict_face.npz")
    landmarks = json.loads((folder / "ict_landmarks.json").read_text())
    ict = Ict(
        mean=d["mean"].astype(np.float64),
        id_basis=d["id_basis"],
        exp_basis=d["exp_basis"],
        exp_names=[str(n) for n in d["exp_names"]],
        tris=d["tris"].astype(np.int64),
        lm68=d["lm68"].astype(np.int64),
        landmarks=landmarks,
    )
    if not np.array_equal(ict.lm68, landmarks["multipie68"]):
        raise BuildError("ict_face.npz lm68 differs from ict_landmarks.json multipie68")
    return ict


def load_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles (0-based) of a Wavefront obj; `f a/t b/t c/t` keeps the vertex ids."""
    verts, faces = [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "v":
            verts.append([float(p) for p in parts[1:4]])
        elif parts and parts[0] == "f":
            faces.append([int(p.split("/")[0]) - 1 for p in parts[1:]])
    tris = np.array(faces, dtype=np.int64)
    if tris.ndim != 2 or tris.shape[1] != 3:
        raise BuildError(f"{path.name}: expected triangles only")
    return np.array(verts, dtype=np.float64), tris


# ---------------------------------------------------------------- expressions


def arkit_expression_basis(ict: Ict) -> np.ndarray:
    """52×N×3 deltas in ARKit order: `_L`/`_R` -> Left/Right, split shapes summed, tongueOut zero."""
    index = {n: i for i, n in enumerate(ict.exp_names)}
    out = np.zeros((len(ARKIT_NAMES), *ict.exp_basis.shape[1:]), dtype=np.float64)
    used: set[str] = set()
    for k, name in enumerate(ARKIT_NAMES):
        if name == "tongueOut":
            continue  # ICT has no tongue shape
        if name in SPLIT_IN_ICT:
            parts = [f"{name}_L", f"{name}_R"]
        elif name in index:
            parts = [name]  # unsided, or a direction such as jawLeft / mouthRight (same name in ICT)
        elif name.endswith("Left"):
            parts = [name[: -len("Left")] + "_L"]
        elif name.endswith("Right"):
            parts = [name[: -len("Right")] + "_R"]
        else:
            parts = [name]
        for part in parts:
            if part not in index:
                raise BuildError(f"ICT has no expression {part!r} for ARKit {name!r}")
            out[k] += ict.exp_basis[index[part]]
            used.add(part)
    unused = set(ict.exp_names) - used
    if unused:
        raise BuildError(f"ICT expressions left unmapped: {sorted(unused)}")
    return out


def left_right_check(ict: Ict) -> list[tuple[str, float, float]]:
    """Per ICT `_L` shape: summed displacement on x > 0 and on x < 0 (both should favour x > 0)."""
    rows = []
    for i, name in enumerate(ict.exp_names):
        if not name.endswith("_L"):
            continue
        mag = np.linalg.norm(ict.exp_basis[i], axis=1)
        rows.append((name, float(mag[ict.mean[:, 0] > 0].sum()), float(mag[ict.mean[:, 0] < 0].sum())))
    return rows


# ---------------------------------------------------------------- geometry


def vertex_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (the unnormalised face cross product is twice the area)."""
    face = np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]])
    normals = np.zeros_like(verts)
    for k in range(3):
        np.add.at(normals, tris[:, k], face)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def _closest_on_segments(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-18), 0, 1)
    return a + t[:, None] * ab, t


def closest_on_triangles(p: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest point to each p[i] on triangle tri[i] (3×3), and its barycentric weights.

    Either the plane projection when it falls inside, or the closest point on one of the edges.
    """
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    n = np.cross(b - a, c - a)
    nn = np.maximum(np.einsum("ij,ij->i", n, n), 1e-18)
    q = p - (np.einsum("ij,ij->i", p - a, n) / nn)[:, None] * n
    # Barycentrics of the projection: signed sub-triangle areas over the full area.
    wa = np.einsum("ij,ij->i", np.cross(c - b, q - b), n) / nn
    wb = np.einsum("ij,ij->i", np.cross(a - c, q - c), n) / nn
    wc = 1.0 - wa - wb
    bary = np.stack([wa, wb, wc], axis=1)
    inside = (bary >= 0).all(axis=1)
    best, best_bary = q.copy(), bary.copy()
    best_d = np.where(inside, np.linalg.norm(p - q, axis=1), np.inf)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        pt, t = _closest_on_segments(p, tri[:, i], tri[:, j])
        d = np.linalg.norm(p - pt, axis=1)
        better = (d < best_d) & ~inside
        w = np.zeros_like(bary)
        w[:, i], w[:, j] = 1 - t, t
        best[better], best_bary[better], best_d[better] = pt[better], w[better], d[better]
    return best, best_bary


class Surface:
    """Nearest-surface-point queries on a triangle mesh."""

    def __init__(self, verts: np.ndarray, tris: np.ndarray, k: int = 48) -> None:
        self.verts, self.tris, self.k = verts, tris, k
        self.tree = cKDTree(verts[tris].mean(axis=1))

    def closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(triangle index, barycentric weights, point, distance) per query point."""
        # The k nearest triangle centroids contain the closest triangle for points near a fine mesh.
        _, cand = self.tree.query(points, k=self.k)
        m, k = cand.shape
        rep = np.repeat(points, k, axis=0)
        pts, bary = closest_on_triangles(rep, self.verts[self.tris[cand.ravel()]])
        dist = np.linalg.norm(rep - pts, axis=1).reshape(m, k)
        pick = dist.argmin(axis=1)
        flat = np.arange(m) * k + pick
        return cand[np.arange(m), pick], bary[flat], pts[flat], dist[np.arange(m), pick]


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
            ) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising Σ w ‖s R src + t − dst‖² (Umeyama 1991)."""
    w = np.ones(len(src)) if weights is None else weights
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(3)
    fix[2, 2] = np.sign(np.linalg.det(u) * np.linalg.det(vt))  # a rotation, never a reflection
    r = u @ fix @ vt
    s = float(np.trace(np.diag(sig) @ fix) / (w @ (xs**2).sum(axis=1)))
    return s, r, mu_d - s * r @ mu_s


# ---------------------------------------------------------------- points


class PointSet:
    """Model points as sparse vertex combinations, deduplicated (an identical combination is reused)."""

    def __init__(self) -> None:
        self.combos: list[dict[int, float]] = []
        self._index: dict[tuple, int] = {}

    def add(self, combo: dict[int, float]) -> int:
        # Drop negligible weights and renormalise, so a point that is really a vertex becomes that vertex.
        clean = {int(v): float(w) for v, w in combo.items() if w > 1e-6}
        total = sum(clean.values())
        clean = {v: w / total for v, w in clean.items()}
        key = tuple(sorted((v, round(w, 6)) for v, w in clean.items()))
        if key not in self._index:
            self._index[key] = len(self.combos)
            self.combos.append(clean)
        return self._index[key]

    def add_vertex(self, v: int) -> int:
        return self.add({int(v): 1.0})

    def add_bary(self, tri: np.ndarray, bary: np.ndarray) -> int:
        combo: dict[int, float] = defaultdict(float)
        for v, w in zip(tri, bary):
            combo[int(v)] += float(w)
        return self.add(combo)

    def matrix(self, n_vertices: int) -> np.ndarray:
        """P×N weight matrix (dense is fine: P ~ 1000, N ~ 9400)."""
        w = np.zeros((len(self.combos), n_vertices))
        for i, combo in enumerate(self.combos):
            for v, x in combo.items():
                w[i, v] = x
        return w


# ---------------------------------------------------------------- MediaPipe correspondence


@dataclass
class Alignment:
    mesh468: list[int]
    landmark_dist: dict[tuple[int, int], float]  # known pair -> distance (cm) after alignment
    residual: np.ndarray  # 468 distances (cm) from the aligned MediaPipe vertices to the ICT surface
    scale: float
    fit_rms_initial: float  # RMS (cm) of the 8 known pairs after the initial similarity


def align_mediapipe(mp: np.ndarray, ict: Ict, surface: Surface, points: PointSet) -> Alignment:
    src_idx = np.array([m for m, _ in MP_TO_IBUG])
    dst = ict.mean[ict.lm68[[i for _, i in MP_TO_IBUG]]]
    if not (mp[33, 0] < 0 < mp[263, 0] and mp[4, 2] > mp[33, 2] and mp[10, 1] > mp[152, 1]):
        # Same axes as ICT are assumed (x subject's left, y up, z out of the face).
        raise BuildError("MediaPipe canonical mesh axes are not as expected (33 must be at x < 0)")
    s, r, t = umeyama(mp[src_idx], dst)
    rms0 = float(np.sqrt(((s * mp[src_idx] @ r.T + t - dst) ** 2).sum(axis=1).mean()))
    for _ in range(ICP_ITERATIONS):
        moved = s * mp @ r.T + t
        _, _, target, dist = surface.closest(moved)
        keep = dist <= np.quantile(dist, ICP_KEEP)  # trim outliers (mesh-boundary and lip/eye gaps)
        s, r, t = umeyama(mp[keep], target[keep])
    moved = s * mp @ r.T + t
    tri, bary, _, dist = surface.closest(moved)
    mesh468 = [points.add_bary(ict.tris[ti], b) for ti, b in zip(tri, bary)]
    w = points.matrix(len(ict.mean))
    pos = w[mesh468] @ ict.mean
    landmark_dist = {(m, i): float(np.linalg.norm(pos[m] - ict.mean[ict.lm68[i]])) for m, i in MP_TO_IBUG}
    return Alignment(mesh468, landmark_dist, dist, s, rms0)


# ---------------------------------------------------------------- sliding jaw contour

Node = tuple[int, int, float]  # a point on mesh edge (u, v): weight w on u, 1 - w on v
EdgeKey = tuple[int, int]


def horizontal_slice(verts: np.ndarray, tris: np.ndarray, y0: float
                     ) -> tuple[dict[EdgeKey, Node], dict[EdgeKey, list[EdgeKey]]]:
    """The mesh's intersection with the plane y = y0, as a graph of edge crossings.

    Nodes are the mesh edges that cross the plane; each crossed triangle links its two crossed
    edges. A vertex exactly on the plane counts as above it, so a slice through a vertex yields
    crossings at that vertex (weight 1) on its edges to the vertices below.
    """
    f = verts[:, 1] - y0
    above = f >= 0
    a = above[tris]
    nodes: dict[EdgeKey, Node] = {}
    links: dict[EdgeKey, list[EdgeKey]] = defaultdict(list)
    for ti in np.where(a.any(axis=1) & ~a.all(axis=1))[0]:
        ends = []
        for i, j in ((0, 1), (1, 2), (2, 0)):
            u, v = int(tris[ti, i]), int(tris[ti, j])
            if above[u] != above[v]:
                key = (min(u, v), max(u, v))
                nodes[key] = (u, v, float(f[v] / (f[v] - f[u])))
                ends.append(key)
        links[ends[0]].append(ends[1])
        links[ends[1]].append(ends[0])
    return nodes, links


def _walk(links: dict[EdgeKey, list[EdgeKey]], start: EdgeKey, first: EdgeKey) -> list[EdgeKey]:
    path, prev = [start, first], start
    while True:
        nxt = [n for n in links[path[-1]] if n != prev]
        if not nxt or nxt[0] == start:
            return path
        prev = path[-1]
        path.append(nxt[0])


def _node_value(node: Node, values: np.ndarray) -> np.ndarray:
    u, v, w = node
    return w * values[u] + (1 - w) * values[v]


def slice_through_landmark(ict: Ict, j: int) -> tuple[list[Node], list[Node]]:
    """The horizontal slice through jaw landmark j, as two paths starting at it: (front, back).

    Front heads towards the midline (|x| falls), back towards the ear.
    """
    v0 = int(ict.lm68[j])
    p0 = ict.mean[v0]
    nodes, links = horizontal_slice(ict.mean, ict.tris, float(p0[1]))
    # The landmark lies on the plane, so the crossings on its own edges sit exactly at it.
    start = next(k for k in sorted(nodes) if v0 in k and np.allclose(_node_value(nodes[k], ict.mean), p0))
    front: list[Node] = []
    back: list[Node] = []
    for first in links[start]:
        path = [nodes[k] for k in _walk(links, start, first)]
        pos = np.array([_node_value(n, ict.mean) for n in path])
        moved = np.linalg.norm(pos - p0, axis=1) > 1e-6
        if not moved.any():
            continue
        if abs(pos[np.argmax(moved), 0]) < abs(p0[0]):
            front = path
        else:
            back = path
    return front, back


def resample(path: list[Node], ict: Ict, length: float, points: PointSet, include_end: bool) -> list[int]:
    """Points every CONTOUR_STEP_CM along a slice path (after its start, up to `length`).

    Consecutive crossings lie on one triangle, so an interpolated point is a barycentric point.
    """
    pos = np.array([_node_value(n, ict.mean) for n in path])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pos, axis=0), axis=1))])
    stops = list(np.arange(CONTOUR_STEP_CM, length + 1e-9, CONTOUR_STEP_CM))
    if include_end and length > 1e-3 and (not stops or length - stops[-1] > 0.3 * CONTOUR_STEP_CM):
        stops.append(length)
    out = []
    for d in stops:
        i = min(int(np.searchsorted(arc, d, side="right")) - 1, len(path) - 2)
        tau = float(np.clip((d - arc[i]) / max(arc[i + 1] - arc[i], 1e-12), 0.0, 1.0))
        combo: dict[int, float] = defaultdict(float)
        for (u, v, w), wt in ((path[i], 1 - tau), (path[i + 1], tau)):
            combo[u] += wt * w
            combo[v] += wt * (1 - w)
        out.append(points.add(combo))
    return out


def _front_length(path: list[Node], ict: Ict, normals: np.ndarray) -> float:
    """How far the front part runs: until the surface faces nearly straight ahead, or the midline."""
    pos = np.array([_node_value(n, ict.mean) for n in path])
    side = np.sign(pos[0, 0])
    nrm = np.array([_node_value(n, normals) for n in path])
    angle = np.degrees(np.arctan2(side * nrm[:, 0], nrm[:, 2]))  # 90° = facing sideways
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pos, axis=0), axis=1))])
    for i in range(1, len(path)):
        if angle[i] < CONTOUR_MIN_SIDE_ANGLE_DEG or side * pos[i, 0] <= 0:
            return float(arc[i - 1])
    return float(arc[-1])


def _jaw_edge_length(path: list[Node], ict: Ict, jawline: list[int]) -> float:
    """Arc length along the back path to where it meets ICT's extended jawline (the jaw edge)."""
    pos = np.array([_node_value(n, ict.mean) for n in path])
    jaw = ict.mean[jawline]
    y0 = pos[0, 1]
    # The extended jawline is monotone in y (ear at the top, chin at the bottom): interpolate at y0.
    order = np.argsort(jaw[:, 1])
    target = np.array([np.interp(y0, jaw[order, 1], jaw[order, c]) for c in range(3)])
    seg_pts, _ = _closest_on_segments(np.repeat(target[None], len(pos) - 1, axis=0), pos[:-1], pos[1:])
    i = int(np.argmin(np.linalg.norm(seg_pts - target, axis=1)))
    return float(np.sum(np.linalg.norm(np.diff(pos[: i + 1], axis=0), axis=1))
                 + np.linalg.norm(seg_pts[i] - pos[i]))


def build_contour(ict: Ict, normals: np.ndarray, points: PointSet, lm_points: list[int]) -> list[list[int]]:
    """Per jaw landmark, its sliding candidates: a horizontal line on the neutral face through it.

    At a pure yaw the outline at the landmark's height is the extreme point of that horizontal
    slice, so the slice is the line the landmark slides along. Front: towards the face centre
    (the far side's outline moves onto the cheek), until the surface faces within
    CONTOUR_MIN_SIDE_ANGLE_DEG of straight ahead. Back: towards the ear (the near side's outline
    moves back), ending at ICT's extended jawline, the jaw edge, because behind it lie the ear
    and the neck, which annotators never mark as jaw. Rows run front -> landmark -> back.
    """
    rows: list[list[int]] = []
    for j in range(17):
        if j == 8:
            rows.append([lm_points[8]])  # the chin stays put: it is on the outline at any yaw
            continue
        jawline = ict.landmarks["right_extended_jawline" if j < 8 else "left_extended_jawline"]
        front, back = slice_through_landmark(ict, j)
        ahead = resample(front, ict, _front_length(front, ict, normals), points, False) if front else []
        behind = resample(back, ict, _jaw_edge_length(back, ict, jawline), points, True) if back else []
        rows.append(list(dict.fromkeys([*ahead[::-1], lm_points[j], *behind])))
    return rows


# ---------------------------------------------------------------- silhouette


def boundary_loops(tris: np.ndarray) -> list[list[int]]:
    edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    uniq, count = np.unique(edges, axis=0, return_counts=True)
    adj: dict[int, list[int]] = defaultdict(list)
    for a, b in uniq[count == 1]:
        adj[int(a)].append(int(b))
        adj[int(b)].append(int(a))
    seen: set[int] = set()
    loops = []
    for s in sorted(adj):
        if s in seen:
            continue
        loop, prev, cur = [s], -1, s
        seen.add(s)
        while True:
            nxt = [v for v in adj[cur] if v != prev and v not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            seen.add(cur)
            loop.append(cur)
        loops.append(loop)
    return loops


def silhouette_loop(ict: Ict) -> list[int]:
    """A closed ring of ICT vertices along the face outline, as the face's visible boundary.

    Upper part: the outer boundary of ICT's narrow face area (hairline, and down the sides in front
    of the ears), every SILHOUETTE_STEP-th vertex. Lower part: ICT's extended jawline (the jaw edge)
    through the chin. The narrow area's own boundary would instead dip 2.7 cm under the chin, and
    the full face region's boundary runs round the neck and behind the ears, neither of which is
    the face's outline. The ring starts at the top of the forehead and runs towards the subject's
    right (counter-clockwise seen from the front).
    """
    narrow = ict.tris[(ict.tris < NARROW_FACE_VERTICES).all(axis=1)]
    outer = max(boundary_loops(narrow), key=len)
    right_jaw = [int(v) for v in ict.landmarks["right_extended_jawline"]]  # ear -> chin
    left_jaw = [int(v) for v in ict.landmarks["left_extended_jawline"]]  # chin -> ear
    # The jawline's upper vertices run along the boundary; the last shared ones are the joints.
    right_joint = [v for v in right_jaw if v in outer][-1]
    left_joint = next(v for v in left_jaw if v in outer)
    n = len(outer)
    a, b = outer.index(left_joint), outer.index(right_joint)
    arc1 = [outer[(a + k) % n] for k in range((b - a) % n + 1)]  # left joint -> right joint
    arc2 = [outer[(a - k) % n] for k in range((a - b) % n + 1)]
    # Of the two boundary arcs between the joints, the upper one goes over the forehead.
    arc = max(arc1, arc2, key=lambda loop: ict.mean[loop, 1].max())
    top = int(np.argmax(ict.mean[arc, 1] - 10 * np.abs(ict.mean[arc, 0])))
    if ict.mean[arc[0], 0] < 0:
        arc = arc[::-1]  # now left joint (x > 0) -> top -> right joint (x < 0)
        top = len(arc) - 1 - top
    keep = sorted({*range(top, len(arc), SILHOUETTE_STEP), *range(top, -1, -SILHOUETTE_STEP), len(arc) - 1, 0})
    arc, top = [arc[k] for k in keep], keep.index(top)
    lower = right_jaw[right_jaw.index(right_joint) + 1:] + [int(ict.lm68[8])] + left_jaw[: left_jaw.index(left_joint)]
    ring = arc[top:] + lower + arc[:top]
    if len(set(ring)) != len(ring):
        raise BuildError("silhouette ring repeats a vertex")
    return ring


# ---------------------------------------------------------------- output


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed's format, but with fixed zip timestamps so a rebuild is byte-identical."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    tmp.replace(path)


def build(shared: Path, out: Path) -> dict[str, np.ndarray]:
    ict = load_ict(shared)
    mp_verts, mp_tris = load_obj(shared / "mediapipe_canonical_face_model.obj")
    if len(mp_verts) != 468:
        raise BuildError(f"expected 468 MediaPipe canonical vertices, got {len(mp_verts)}")
    if len(set(ARKIT_NAMES)) != 52:
        raise BuildError("ARKIT_NAMES must hold 52 distinct names")

    lr = left_right_check(ict)
    wrong = [name for name, left, right in lr if left <= 2 * right]
    if wrong:
        # ICT's _L would then be the image's left; the mapping below would have to swap L and R.
        raise BuildError(f"ICT _L shapes that do not move the subject's left (x > 0): {wrong}")
    exp_full = arkit_expression_basis(ict)
    normals_full = vertex_normals(ict.mean, ict.tris)
    if normals_full[ict.lm68[30], 2] <= 0:
        normals_full = -normals_full  # ICT winding is outward already; kept for safety
    surface = Surface(ict.mean, ict.tris)

    points = PointSet()
    lm_points = [points.add_vertex(v) for v in ict.lm68]  # points 0..67 are the 68 landmarks
    rigid = [lm_points[i] for i in ict.landmarks["rigid_landmark_indices_into_68"]]
    align = align_mediapipe(mp_verts, ict, surface, points)
    contour_rows = build_contour(ict, normals_full, points, lm_points)
    silhouette = [points.add_vertex(v) for v in silhouette_loop(ict)]

    w = points.matrix(len(ict.mean))
    n_points = w.shape[0]
    mean = w @ ict.mean
    id_basis = np.einsum("pn,knc->kpc", w, ict.id_basis, optimize=True)
    exp_basis = np.einsum("pn,knc->kpc", w, exp_full, optimize=True)
    normals = w @ normals_full
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    width = max(len(r) for r in contour_rows)
    contour = -np.ones((17, width), dtype=np.int32)
    for j, row in enumerate(contour_rows):
        contour[j, : len(row)] = row

    arrays = {
        "arkit_names": np.array(ARKIT_NAMES),
        "mean": mean.astype(np.float32),
        "id_basis": id_basis.astype(np.float32),
        "exp_basis": exp_basis.astype(np.float32),
        "normals": normals.astype(np.float32),
        "lm68": np.array(lm_points, dtype=np.int32),
        "mesh468": np.array(align.mesh468, dtype=np.int32),
        "mesh468_tris": mp_tris.astype(np.int32),
        "contour": contour,
        "silhouette": np.array(silhouette, dtype=np.int32),
        "rigid": np.array(rigid, dtype=np.int32),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_npz(out, arrays)
    shutil.copyfile(shared / "LICENSE-ICT-FaceKit.txt", out.parent / "LICENSE-ICT-FaceKit.txt")

    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), P = {n_points} points")
    for name, arr in arrays.items():
        print(f"  {name:13s} {arr.shape!s:18s} {arr.dtype}")
    ratios = {name: left / max(right, 1e-9) for name, left, right in lr}
    weakest = min(ratios, key=ratios.__getitem__)
    print(f"L/R check: all {len(ratios)} ICT _L shapes move x > 0 (subject's left) most; summed |delta| "
          f"x>0 : x<0 = {ratios['eyeBlink_L']:.0f}:1 for eyeBlink_L, weakest {weakest} {ratios[weakest]:.1f}:1")
    res = align.residual
    print(f"MediaPipe -> ICT: scale {align.scale:.3f}, initial 8-pair RMS {align.fit_rms_initial:.2f} cm; "
          f"surface residual median {np.median(res):.2f} cm, 95th pct {np.quantile(res, 0.95):.2f} cm, "
          f"max {res.max():.2f} cm")
    print("  known pairs (MediaPipe -> iBUG: cm): "
          + ", ".join(f"{m}->{i}: {d:.2f}" for (m, i), d in align.landmark_dist.items()))
    print("contour candidates per jaw landmark: " + " ".join(str(len(r)) for r in contour_rows))
    print(f"silhouette: {len(silhouette)} points; rigid: {len(rigid)}; mesh468 distinct points: "
          f"{len(set(align.mesh468))}")
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="folder with the ICT and MediaPipe inputs")
    parser.add_argument("--out", type=Path, default=ENGINES / "face_model.npz")
    args = parser.parse_args(argv)
    missing = [name for name in REQUIRED if not (args.shared / name).is_file()]
    if missing:
        print(f"error: shared face-model data missing in {args.shared}: {', '.join(missing)}\n"
              "       (expected ../shared/data/face_model beside the repository)", file=sys.stderr)
        return 2
    try:
        build(args.shared, args.out)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

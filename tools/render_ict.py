#!/usr/bin/env python3
"""Synthetic ground truth: shaded renders of the ICT-FaceKit face with known pose, expression, landmarks.

Random identity, expression, head pose, lighting, skin and background; every image or
clip frame comes with the exact pose (our convention, tracker/pose.py), the 52 ARKit
blendshape weights that drove the mesh, and the 68 projected landmarks with a
self-occlusion flag from the z-buffer. The tracker's outputs can be scored against it.

    python tools/render_ict.py --out /tmp/synth --images 200 --clips 4 --frames 150 --size 512 --seed 0

writes DIR/images/000000.png ... + DIR/images/truth.jsonl (one line per image, "file" names it)
and DIR/clips/clip_000.mp4 + DIR/clips/clip_000.jsonl (one line per frame, 25 fps).

The rasteriser is our own (Numba): z-buffer, Gouraud-interpolated Lambert + ambient +
Blinn-Phong, 2x supersampling reduced with INTER_AREA. The ICT face region has holes for
eyes and mouth; they are capped with an eyeball (sclera, iris, pupil) and a dark mouth
cavity, and back faces (the inside of the head) are drawn dark.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numba import njit

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "tools"):  # imported by the tests and other tools as well as run
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
from report import folder_to_write, non_negative_int, positive_int

from tracker.pose import MODEL_TO_CAMERA, euler_to_matrix, matrix_to_quaternion
from tracker.types import ARKIT_BLENDSHAPES as ARKIT_NAMES

if TYPE_CHECKING:
    from tqdm import tqdm

ICT_PATH = REPO.parent / "shared" / "data" / "face_model" / "ict_face.npz"
SUPERSAMPLE = 2
FPS = 25.0
# A landmark is hidden when the z-buffer holds a surface this much (cm) nearer than it; the slack
# absorbs depth interpolation across grazing triangles next to the landmark's own vertex.
OCCLUSION_TOL_CM = 0.4
IDENTITY_COMPONENTS = 30
IDENTITY_SIGMA = 0.7

# The six shapes that clips animate (and that images turn on with probability 0.5 each).
KEY_SHAPES = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight", "browInnerUp")

# Surface kinds in the rasteriser.
SKIN, EYE, MOUTH = 0, 1, 2


def ict_to_arkit_name(name: str) -> str:
    """ICT shape name -> ARKit name (browInnerUp_L/_R and cheekPuff_L/_R both map to the unsided name)."""
    if name.endswith("_L"):
        base, side = name[:-2], "Left"
    elif name.endswith("_R"):
        base, side = name[:-2], "Right"
    else:
        return name
    return base if base in ("browInnerUp", "cheekPuff") else base + side


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IctModel:
    """The ICT face region plus what rendering needs: hole loops and per-vertex feature masks."""

    mean: np.ndarray  # (V, 3) float32, cm, ICT axes (x subject's left, y up, z out of the face)
    id_basis: np.ndarray  # (100, V, 3) float32
    exp_basis: np.ndarray  # (53, V, 3) float32 deltas
    exp_names: tuple[str, ...]  # ICT names
    tris: np.ndarray  # (T, 3) int32
    lm68: np.ndarray  # (68,) int64 vertex ids, iBUG order
    eye_loops: tuple[np.ndarray, np.ndarray]  # ordered boundary vertex ids: (subject's left, right)
    mouth_loop: np.ndarray
    features: np.ndarray  # (V, 4) float32 in [0, 1]: lips, brows, lashes, nostrils


def _boundary_loops(tris: np.ndarray) -> list[np.ndarray]:
    """Ordered vertex loops along edges used by one triangle only."""
    edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    uniq, count = np.unique(edges, axis=0, return_counts=True)
    adjacent: dict[int, list[int]] = {}
    for a, b in uniq[count == 1].tolist():
        adjacent.setdefault(a, []).append(b)
        adjacent.setdefault(b, []).append(a)
    seen: set[int] = set()
    loops = []
    for start in sorted(adjacent):
        if start in seen:
            continue
        loop, prev, cur = [start], -1, start
        seen.add(start)
        while True:
            nxt = [v for v in adjacent[cur] if v != prev and v not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            seen.add(cur)
            loop.append(cur)
        loops.append(np.array(loop, dtype=np.int64))
    return loops


def _segment_distance(points: np.ndarray, poly: np.ndarray, closed: bool) -> np.ndarray:
    """Distance of each 2D point to a polyline."""
    a = poly if closed else poly[:-1]
    b = np.roll(poly, -1, axis=0) if closed else poly[1:]
    ab = b - a
    ap = points[:, None, :] - a[None]
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(ap - t[..., None] * ab, axis=-1).min(axis=1)


def _inside(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised."""
    x, y = points[:, :1], points[:, 1:]
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / np.where(y1 == y0, 1e-12, y1 - y0) + x0)
    return crosses.sum(axis=1) % 2 == 1


def _feature_masks(mean: np.ndarray, tris: np.ndarray, lm68: np.ndarray,
                   eye_loops: tuple[np.ndarray, np.ndarray], normals: np.ndarray) -> np.ndarray:
    """Soft per-vertex masks, found once on the mean face (vertex ids carry over to every identity)."""
    xy = mean[:, :2].astype(np.float64)
    lm = mean[lm68].astype(np.float64)
    front = mean[:, 2] > 5.0  # the face's front, not the sides/back that share its x, y
    # Lips: inside the outer lip contour, soft over ~1.5 mm.
    lips_poly = lm[48:60, :2]
    d = _segment_distance(xy, lips_poly, closed=True)
    signed = np.where(_inside(xy, lips_poly), d, -d)
    lips = np.clip(0.5 + signed / 0.15, 0.0, 1.0) * front
    # Brows: a band just under the iBUG brow points, thinning towards the temples.
    brows = np.zeros(len(mean))
    for ids in (range(17, 22), range(22, 27)):
        poly = lm[list(ids), :2] - [0.0, 0.15]
        d = _segment_distance(xy, poly, closed=False)
        inner = lm[21 if ids[0] == 17 else 22, 0]
        taper = 1.0 - 0.45 * np.clip(np.abs(xy[:, 0] - inner) / np.abs(lm[ids[0], 0] - lm[ids[-1], 0]), 0, 1)
        brows = np.maximum(brows, np.clip((0.42 * taper - d) / 0.12, 0.0, 1.0))
    brows *= front
    # Lashes: by edge rings from the hole's rim. The rim sits inside the lid; rings 0-1 line the lid's
    # inside, 2-4 are the upper lid margin (facing down, then forward), 5 its front edge. Coloured
    # by distance in space instead, the whole upper lid went dark and a closed eye read as an open one.
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    lashes = np.zeros(len(mean))
    for loop in eye_loops:
        ring = np.full(len(mean), -1)
        ring[loop] = 0
        for k in range(1, 6):
            reached = np.zeros(len(mean), bool)
            reached[edges[ring[edges[:, 0]] == k - 1, 1]] = True
            ring[reached & (ring < 0)] = k
        upper = xy[:, 1] > mean[loop, 1].mean()
        weight = np.where(upper, np.array([1, 1, 1, 1, 1, 0.4, 0])[ring],
                          np.array([0.8, 0.8, 0.8, 0.35, 0, 0, 0])[ring])
        lashes = np.maximum(lashes, np.where(ring >= 0, weight, 0.0))
    # Nostrils: the mesh models the cavities; darken their inner walls (normals turned back into the nose).
    box = ((np.abs(xy[:, 0]) > 0.25) & (np.abs(xy[:, 0]) < lm[35, 0]) & (xy[:, 1] > lm[33, 1] - 0.1)
           & (xy[:, 1] < lm[30, 1] + 0.2) & (mean[:, 2] > 10.0) & (normals[:, 1] < 0.0))
    nostrils = box * np.clip((0.3 - normals[:, 2]) / 0.5, 0.0, 1.0)
    return np.stack([lips, brows, lashes, nostrils], axis=1).astype(np.float32)


def load_ict_for_tool(path: Path | str = ICT_PATH) -> IctModel | None:
    """load_ict for a tool's main(): None where the model cannot be loaded, its reason printed as one error line
    (the tool then exits 2, as for any missing input)."""
    try:
        return load_ict(path)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def load_ict(path: Path | str = ICT_PATH) -> IctModel:
    """Load ict_face.npz and derive the hole loops and feature masks the renderer needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ICT face model not found at {path}: render_ict.py needs the shared ict_face.npz "
            "(../shared/data/face_model/ beside the repository)")
    with np.load(path) as data:
        mean = data["mean"].astype(np.float32)
        tris = data["tris"].astype(np.int32)
        lm68 = data["lm68"].astype(np.int64)
        id_basis = data["id_basis"].astype(np.float32)
        exp_basis = data["exp_basis"].astype(np.float32)
        exp_names = tuple(str(n) for n in data["exp_names"])
    loops = sorted(_boundary_loops(tris), key=len)
    if len(loops) != 4:
        raise ValueError(f"{path}: expected 4 boundary loops (2 eyes, mouth, outline), found {len(loops)}")
    holes = loops[:3]  # the outline is the longest
    mouth = min(holes, key=lambda lp: mean[lp, 1].mean())
    eyes = sorted((lp for lp in holes if lp is not mouth), key=lambda lp: -mean[lp, 0].mean())
    normals = _vertex_normals(mean, tris)
    features = _feature_masks(mean, tris, lm68, (eyes[0], eyes[1]), normals)
    return IctModel(mean, id_basis, exp_basis, exp_names, tris, lm68, (eyes[0], eyes[1]), mouth, features)


# --------------------------------------------------------------------------------------------
# Numba kernels
# --------------------------------------------------------------------------------------------


@njit(cache=True, fastmath=True)
def _vertex_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (float32 is plenty for shading)."""
    out = np.zeros(verts.shape, dtype=np.float32)
    for k in range(tris.shape[0]):
        a, b, c = tris[k, 0], tris[k, 1], tris[k, 2]
        ux = verts[b, 0] - verts[a, 0]
        uy = verts[b, 1] - verts[a, 1]
        uz = verts[b, 2] - verts[a, 2]
        vx = verts[c, 0] - verts[a, 0]
        vy = verts[c, 1] - verts[a, 1]
        vz = verts[c, 2] - verts[a, 2]
        nx = uy * vz - uz * vy
        ny = uz * vx - ux * vz
        nz = ux * vy - uy * vx
        for v in (a, b, c):
            out[v, 0] += nx
            out[v, 1] += ny
            out[v, 2] += nz
    for v in range(out.shape[0]):
        n = np.sqrt(out[v, 0] ** 2 + out[v, 1] ** 2 + out[v, 2] ** 2)
        if n > 0:
            out[v, 0] /= n
            out[v, 1] /= n
            out[v, 2] /= n
    return out


@njit(cache=True, fastmath=True)
def _rasterize(sx: np.ndarray, sy: np.ndarray, inv_z: np.ndarray, tris: np.ndarray, kind: np.ndarray,
               back: np.ndarray, albedo: np.ndarray, shade: np.ndarray, spec: np.ndarray,
               attr: np.ndarray, palette: np.ndarray, colour: np.ndarray, depth: np.ndarray) -> None:
    """Z-buffered, Gouraud-shaded triangles into ``colour`` (H, W, 3) RGB and ``depth`` (1/z, 0 = empty).

    Screen positions are float64: edge functions of neighbouring triangles must agree exactly at
    shared edges (no cracks) and 2x supersampled 1280 px frames need more than float32's 24 bits
    of headroom in the products. Colours and buffers are float32.
    palette rows: 0 inner (back faces), 1 sclera, 2 iris, 3 pupil, 4 mouth rim, 5 mouth deep.
    """
    h, w = depth.shape
    for k in range(tris.shape[0]):
        a, b, c = tris[k, 0], tris[k, 1], tris[k, 2]
        if inv_z[a] <= 0 or inv_z[b] <= 0 or inv_z[c] <= 0:
            continue  # behind the camera
        x0, y0, x1, y1, x2, y2 = sx[a], sy[a], sx[b], sy[b], sx[c], sy[c]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if abs(area) < 1e-12:
            continue
        inv_area = 1.0 / area
        xmin = max(int(np.ceil(min(x0, x1, x2))), 0)
        xmax = min(int(np.floor(max(x0, x1, x2))), w - 1)
        ymin = max(int(np.ceil(min(y0, y1, y2))), 0)
        ymax = min(int(np.floor(max(y0, y1, y2))), h - 1)
        kd = kind[k]
        for py in range(ymin, ymax + 1):
            for px in range(xmin, xmax + 1):
                w0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) * inv_area
                w1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) * inv_area
                w2 = 1.0 - w0 - w1
                if w0 < 0.0 or w1 < 0.0 or w2 < 0.0:
                    continue
                iz = np.float32(w0 * inv_z[a] + w1 * inv_z[b] + w2 * inv_z[c])
                if iz <= depth[py, px]:
                    continue
                depth[py, px] = iz
                sh = np.float32(w0 * shade[a] + w1 * shade[b] + w2 * shade[c])
                sp = np.float32(w0 * spec[a] + w1 * spec[b] + w2 * spec[c])
                if kd == SKIN:
                    if back[k]:
                        for ch in range(3):
                            colour[py, px, ch] = palette[0, ch]
                        continue
                    for ch in range(3):
                        al = w0 * albedo[a, ch] + w1 * albedo[b, ch] + w2 * albedo[c, ch]
                        colour[py, px, ch] = al * sh + sp
                elif kd == EYE:
                    # attr: (u, v) model-space offset from the eye centre in cm, and rim weight.
                    u = w0 * attr[a, 0] + w1 * attr[b, 0] + w2 * attr[c, 0]
                    v = w0 * attr[a, 1] + w1 * attr[b, 1] + w2 * attr[c, 1]
                    rim = w0 * attr[a, 2] + w1 * attr[b, 2] + w2 * attr[c, 2]
                    r = np.sqrt(u * u + v * v)
                    # Lid shadow on the eyeball, strongest at the rim.
                    occl = 1.0 - 0.55 * rim * rim * rim
                    for ch in range(3):
                        if r < 0.22:
                            base = palette[3, ch]
                        elif r < 0.58:
                            # Iris, darker towards its limbal ring.
                            base = palette[2, ch] * (1.0 - 0.5 * (r - 0.22) / 0.36)
                        else:
                            base = palette[1, ch]
                        colour[py, px, ch] = base * sh * occl + sp
                else:
                    rim = w0 * attr[a, 2] + w1 * attr[b, 2] + w2 * attr[c, 2]
                    t = rim * rim
                    for ch in range(3):
                        colour[py, px, ch] = (palette[5, ch] * (1.0 - t) + palette[4, ch] * t) * sh


# --------------------------------------------------------------------------------------------
# Scene
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Light:
    """Lighting and surface look of a render (one per clip): a directional light + ambient, and the skin."""

    direction: np.ndarray  # (3,) unit vector from the face towards the light, camera axes
    ambient: float
    diffuse: float
    specular: float
    shininess: float
    skin: np.ndarray  # (3,) RGB albedo in [0, 1]
    lips: np.ndarray  # (3,) RGB
    brows: np.ndarray  # (3,) RGB
    iris: np.ndarray  # (3,) RGB
    blotch: np.ndarray  # (3, 4): per-vertex low-frequency albedo variation, rows (kx, ky, kz, phase)
    noise_sigma: float  # sensor noise, 0-255 units
    eyeballs: bool = True  # False: eye holes show a dark backdrop only (to test what the detector needs)


def random_light(rng: np.random.Generator) -> Light:
    # Light from the camera's side, more often from above (y up is negative in camera axes).
    d = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.25), -1.0])
    tone = rng.uniform()
    skin = (1 - tone) * np.array([0.93, 0.76, 0.64]) + tone * np.array([0.42, 0.27, 0.19])
    skin = np.clip(skin * rng.uniform(0.93, 1.07, 3), 0.05, 1.0)
    lips = skin * np.array([0.78, 0.5, 0.5]) * rng.uniform(0.85, 1.05)
    brows = skin * rng.uniform(0.2, 0.5) * rng.uniform(0.85, 1.1, 3)
    iris_choices = np.array([[0.30, 0.18, 0.08], [0.20, 0.12, 0.06], [0.25, 0.38, 0.55], [0.30, 0.38, 0.25]])
    blotch = np.column_stack([rng.normal(0.0, 0.35, (3, 3)), rng.uniform(0, 2 * np.pi, 3)])
    return Light(direction=d / np.linalg.norm(d), ambient=float(rng.uniform(0.25, 0.45)),
                 diffuse=float(rng.uniform(0.55, 0.85)), specular=float(rng.uniform(0.03, 0.15)),
                 shininess=float(rng.uniform(8.0, 30.0)), skin=skin, lips=lips, brows=brows,
                 iris=iris_choices[rng.integers(len(iris_choices))] * rng.uniform(0.8, 1.2),
                 blotch=blotch, noise_sigma=float(rng.uniform(0.5, 3.0)))


def random_background(rng: np.random.Generator, size: int | tuple[int, int]) -> np.ndarray:
    """BGR uint8 background: a smooth gradient, blurred noise and textured rectangles, mixed at random."""
    w, h = (size, size) if isinstance(size, int) else size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = c0 + ramp[..., None] * (c1 - c0)
    if rng.uniform() < 0.7:
        cells = int(rng.integers(3, 40))
        noise = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
        noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
        img += noise * rng.uniform(10, 60)
    for _ in range(int(rng.integers(0, 7))):
        x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1, y1 = x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 10, h // 2))
        xs, ys = slice(max(x0, 0), min(x1, w)), slice(max(y0, 0), min(y1, h))
        patch = img[ys, xs]
        if patch.size == 0:
            continue
        colour = rng.uniform(0, 255, 3)
        style = rng.integers(3)
        if style == 0:  # fine noise texture
            tex = rng.normal(0, rng.uniform(5, 30), patch.shape[:2])[..., None]
        elif style == 1:  # stripes
            period = rng.uniform(4, 30)
            phase = xx[ys, xs] * np.cos(angle * 3) + yy[ys, xs] * np.sin(angle * 3)
            tex = (np.sin(phase * 2 * np.pi / period) * rng.uniform(10, 40))[..., None]
        else:  # flat
            tex = np.zeros(patch.shape[:2] + (1,))
        img[ys, xs] = colour + tex
    blur = float(rng.uniform(0.0, 2.0))
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape(model: IctModel, identity: np.ndarray, expression_ict: np.ndarray) -> np.ndarray:
    """Vertices (V, 3) cm in model axes; only non-zero coefficients are summed (most are zero)."""
    verts = model.mean.astype(np.float32).copy()
    for basis, coeffs in ((model.id_basis, identity), (model.exp_basis, expression_ict)):
        coeffs = np.asarray(coeffs, dtype=np.float32)
        nz = np.flatnonzero(coeffs)
        if len(nz):
            verts += np.tensordot(coeffs[nz], basis[nz], axes=1)
    return verts


def _caps(verts: np.ndarray, model: IctModel) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fans closing the eye and mouth holes: extra centre vertices (model axes), triangles, kinds, attrs.

    Each centre sits behind its hole's rim (an eyeball 3 mm under the lids, a mouth cavity 2 cm deep),
    so the caps read as an eye and an open mouth. attr = (u, v, rim) for the eye shading.
    """
    n = len(verts)
    centres, tris, kinds = [], [], []
    attr = np.zeros((n + 3, 3), dtype=np.float32)
    for i, (loop, kd, depth) in enumerate(((model.eye_loops[0], EYE, 0.3), (model.eye_loops[1], EYE, 0.3),
                                           (model.mouth_loop, MOUTH, 2.0))):
        rim = verts[loop]
        centre = rim.mean(axis=0) - np.array([0.0, 0.0, depth], dtype=np.float32)
        centres.append(centre)
        ci = n + i
        # Fan triangles ordered (centre, next, this) so, like the mesh, they wind counter-clockwise
        # seen from outside; orientation only matters for documentation, caps are never culled.
        tris.append(np.column_stack([np.full(len(loop), ci), np.roll(loop, -1), loop]))
        kinds.append(np.full(len(loop), kd))
        attr[loop, 0:2] = rim[:, :2] - centre[:2]
        attr[loop, 2] = 1.0
        attr[ci] = 0.0
    return (np.array(centres, dtype=np.float32), np.concatenate(tris).astype(np.int32),
            np.concatenate(kinds).astype(np.int8), attr)


def _albedo(model: IctModel, light: Light) -> np.ndarray:
    """Per-vertex RGB albedo: tinted skin with low-frequency blotches, darker lips/brows/lashes/nostrils."""
    p = model.mean.astype(np.float64)
    var = np.zeros(len(p))
    for kx, ky, kz, phase in light.blotch:
        var += np.sin(p @ np.array([kx, ky, kz]) + phase)
    alb = light.skin[None, :] * (1.0 + 0.04 * var[:, None])
    lips, brows, lashes, nostrils = model.features.T[..., None]
    alb = alb * (1 - lips) + light.lips[None] * lips
    alb = alb * (1 - brows) + light.brows[None] * brows
    alb = alb * (1 - 0.8 * lashes) + 0.04 * lashes
    alb = alb * (1 - 0.85 * nostrils)
    return np.clip(alb, 0.0, 1.0).astype(np.float32)


def render(model: IctModel, identity: np.ndarray, expression_ict: np.ndarray, rotation: np.ndarray,
           translation_cm: np.ndarray, focal: float, size: int | tuple[int, int], light: Light,
           background: np.ndarray | None, rng: np.random.Generator,
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one face.

    identity: (100,) ICT identity coefficients; expression_ict: (53,) ICT expression weights;
    rotation: 3x3 head rotation in camera axes (tracker.pose.euler_to_matrix); translation_cm: model
    origin in camera axes, cm; focal: pixels; size: int or (w, h); background: BGR uint8 (h, w, 3) or
    None for mid grey; rng: draws the sensor noise. The principal point is the image centre
    ((w - 1) / 2, (h - 1) / 2), pixel centres at integer coordinates.

    Returns (image BGR uint8, landmarks68 (68, 2) float64 pixels, occluded68 (68,) bool). A landmark
    is occluded when the z-buffer holds a surface in front of it (self-occlusion) or it falls outside
    the image.
    """
    return render_vertices(model, _shape(model, identity, expression_ict), rotation, translation_cm, focal, size, light,
                        background, rng)


def render_vertices(model: IctModel, verts: np.ndarray, rotation: np.ndarray, translation_cm: np.ndarray, focal: float,
                 size: int | tuple[int, int], light: Light, background: np.ndarray | None, rng: np.random.Generator,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`render` of a face whose vertices (V, 3, cm, model axes: :func:`_shape`) are already built."""
    w, h = (size, size) if isinstance(size, int) else size
    s = SUPERSAMPLE
    centres, cap_tris, cap_kinds, attr = _caps(verts, model)
    all_verts = np.concatenate([verts, centres])
    rot = np.asarray(rotation, dtype=np.float64) @ MODEL_TO_CAMERA
    cam = (all_verts.astype(np.float64) @ rot.T + np.asarray(translation_cm, dtype=np.float64)).astype(np.float32)

    normals_model = _vertex_normals(verts, model.tris)
    # Caps are lit as if they faced straight out of the face.
    normals_model = np.concatenate([normals_model, np.tile(np.float32([0, 0, 1]), (3, 1))])
    normals = (normals_model @ rot.T.astype(np.float32)).astype(np.float32)
    view = -cam / np.linalg.norm(cam, axis=1, keepdims=True)
    ldir = np.asarray(light.direction, dtype=np.float32)
    ndotl = np.clip(normals @ ldir, 0.0, None)
    shade = (light.ambient + light.diffuse * ndotl).astype(np.float32)
    half = view + ldir
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    spec = (light.specular * np.clip((normals * half).sum(1), 0.0, None) ** light.shininess * (ndotl > 0))
    spec = spec.astype(np.float32)

    tris = np.concatenate([model.tris, cap_tris])
    kinds = np.concatenate([np.zeros(len(model.tris), np.int8), cap_kinds])
    # Back faces (the inside of the head seen past the outline) face away from the viewer.
    t0, t1, t2 = cam[tris[:, 0]], cam[tris[:, 1]], cam[tris[:, 2]]
    back = (np.cross(t1 - t0, t2 - t0) * t0).sum(1) > 0

    z = cam[:, 2].astype(np.float64)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    u = focal * cam[:, 0] / z + cx
    v = focal * cam[:, 1] / z + cy
    # Final pixel k covers supersamples s*k .. s*k+s-1, whose centres sit at (j + 0.5) / s - 0.5.
    su, sv = (u + 0.5) * s - 0.5, (v + 0.5) * s - 0.5
    inv_z = np.where(z > 1e-3, 1.0 / z, -1.0).astype(np.float32)

    albedo = np.concatenate([_albedo(model, light), np.zeros((3, 3), np.float32)])
    dark = np.array([0.04, 0.03, 0.03])
    sclera, iris = (np.array([0.86, 0.82, 0.78]), light.iris) if light.eyeballs else (dark, dark)
    palette = np.array([[0.05, 0.035, 0.03], sclera, iris, [0.02, 0.02, 0.02],
                        light.lips * 0.35, [0.03, 0.012, 0.01]], dtype=np.float32)
    colour = np.zeros((h * s, w * s, 3), np.float32)
    depth = np.zeros((h * s, w * s), np.float32)
    _rasterize(su, sv, inv_z, tris, kinds, back, albedo, shade, spec, attr, palette, colour, depth)

    cover = (depth > 0).astype(np.float32)
    colour_small = cv2.resize(colour, (w, h), interpolation=cv2.INTER_AREA)
    cover_small = cv2.resize(cover, (w, h), interpolation=cv2.INTER_AREA)[..., None]
    bg = (np.full((h, w, 3), 128, np.uint8) if background is None else background)
    bg_rgb = bg[..., ::-1].astype(np.float32) / 255.0
    # Colour was accumulated over covered supersamples only, so area-averaging it is premultiplied.
    out = colour_small + (1.0 - cover_small) * bg_rgb
    out = out * 255.0 + rng.normal(0.0, light.noise_sigma, out.shape)
    image = np.ascontiguousarray(np.clip(np.round(out), 0, 255).astype(np.uint8)[..., ::-1])

    landmarks = np.column_stack([u[model.lm68], v[model.lm68]])
    occluded = _occluded(su[model.lm68], sv[model.lm68], z[model.lm68], depth)
    return image, landmarks, occluded


def _occluded(su: np.ndarray, sv: np.ndarray, z: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Landmark hidden: every supersample in its 3x3 neighbourhood holds a surface nearer than it.

    The neighbourhood keeps points on a silhouette visible (some neighbour is background or the
    point's own surface), while a cheek or nose in front of a point covers all nine.
    """
    hh, ww = depth.shape
    out = np.ones(len(z), dtype=bool)
    for i, (x, y, zi) in enumerate(zip(np.round(su).astype(int), np.round(sv).astype(int), z, strict=True)):
        if not (0 <= x < ww and 0 <= y < hh):
            continue
        patch = depth[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
        # Empty pixels (1/z = 0) are infinitely far: nothing in front there.
        with np.errstate(divide="ignore"):
            far = np.where(patch > 0, 1.0 / np.maximum(patch, 1e-12), np.inf)
        out[i] = bool(far.max() < zi - OCCLUSION_TOL_CM)
    return out


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def arkit_to_ict(model: IctModel, weights: dict[str, float]) -> np.ndarray:
    """(53,) ICT weights driving the ARKit weights; browInnerUp and cheekPuff drive both halves."""
    out = np.zeros(len(model.exp_names), dtype=np.float32)
    for i, name in enumerate(model.exp_names):
        out[i] = weights.get(ict_to_arkit_name(name), 0.0)
    return out


def sample_identity(rng: np.random.Generator, n_total: int = 100) -> np.ndarray:
    ident = np.zeros(n_total, dtype=np.float32)
    ident[:IDENTITY_COMPONENTS] = rng.normal(0.0, IDENTITY_SIGMA, IDENTITY_COMPONENTS)
    return ident


def sample_expression(rng: np.random.Generator) -> dict[str, float]:
    """Sparse ARKit weights: 2-6 random shapes U(0,1), then each key shape group with probability 0.5."""
    names = [n for n in ARKIT_NAMES if n != "tongueOut"]
    weights = {n: 0.0 for n in ARKIT_NAMES}
    for i in rng.choice(len(names), size=int(rng.integers(2, 7)), replace=False):
        weights[names[i]] = float(rng.uniform())
    if rng.uniform() < 0.5:
        weights["jawOpen"] = float(rng.uniform(0.0, 0.8))
    if rng.uniform() < 0.5:
        both = float(rng.uniform())
        same = rng.uniform() < 0.5
        weights["eyeBlinkLeft"] = both
        weights["eyeBlinkRight"] = both if same else float(rng.uniform())
    if rng.uniform() < 0.5:
        both = float(rng.uniform())
        same = rng.uniform() < 0.5
        weights["mouthSmileLeft"] = both
        weights["mouthSmileRight"] = both if same else float(rng.uniform())
    if rng.uniform() < 0.5:
        weights["browInnerUp"] = float(rng.uniform())
    # mouthClose closes the lips of an open jaw; beyond jawOpen it pushes them through each other.
    weights["mouthClose"] = min(weights["mouthClose"], weights["jawOpen"])
    return weights


def sample_camera(rng: np.random.Generator, size: int) -> tuple[float, np.ndarray]:
    """Focal 1.0-1.5x the width; face 45-70 cm away, its centre within the middle 30% of the frame."""
    focal = float(rng.uniform(1.0, 1.5) * size)
    z = rng.uniform(45.0, 70.0)
    off = rng.uniform(-0.15, 0.15, 2) * size
    return focal, np.array([off[0] * z / focal, off[1] * z / focal, z])


def nose_tip_cm(model: IctModel, identity: np.ndarray, expression_ict: np.ndarray, rotation: np.ndarray,
                translation_cm: np.ndarray) -> np.ndarray:
    """Camera-frame position (cm) of the nose tip (iBUG 30): a depth reference that, unlike the
    model origin (about 13 cm behind the nose, inside the head), any tracker can agree on."""
    v = int(model.lm68[30])
    p = (model.mean[v] + np.tensordot(np.asarray(identity, np.float32), model.id_basis[:, v], axes=1)
         + np.tensordot(np.asarray(expression_ict, np.float32), model.exp_basis[:, v], axes=1))
    return np.asarray(rotation) @ MODEL_TO_CAMERA @ p.astype(np.float64) + np.asarray(translation_cm)


def truth_record(yaw: float, pitch: float, roll: float, translation_cm: np.ndarray,
                 weights: dict[str, float], identity: np.ndarray, focal: float, size: int,
                 landmarks: np.ndarray, occluded: np.ndarray, nose_cm: np.ndarray) -> dict:
    """One frame's ground truth. translation_mm is the ICT model origin in camera axes."""
    rot = euler_to_matrix(yaw, pitch, roll)
    return {
        "yaw": round(float(yaw), 4), "pitch": round(float(pitch), 4), "roll": round(float(roll), 4),
        "quaternion": [round(float(q), 6) for q in matrix_to_quaternion(rot)],
        "translation_mm": [round(float(t) * 10.0, 3) for t in translation_cm],
        "nose_tip_mm": [round(float(t) * 10.0, 3) for t in nose_cm],
        "blendshapes": {n: round(float(weights.get(n, 0.0)), 5) for n in ARKIT_NAMES},
        "identity": [round(float(c), 5) for c in identity],
        "focal": round(float(focal), 3),
        "principal_point": [(size - 1) / 2.0, (size - 1) / 2.0],
        "image_size": [size, size],
        "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in landmarks],
        "occluded": [bool(o) for o in occluded],
    }


@dataclass(frozen=True)
class StillFace:
    """The random face and camera of one still (render_image): what its geometry depends on."""

    identity: np.ndarray  # (100,) ICT identity coefficients
    weights: dict[str, float]  # ARKit blendshape weights
    yaw: float
    pitch: float
    roll: float
    focal: float  # pixels
    translation_cm: np.ndarray  # model origin in camera axes


def sample_still_face(rng: np.random.Generator, size: int, identities: int = 100) -> StillFace:
    """The first draws of render_image: identity, expression, pose U(+-60, +-25, +-20), camera. Tools that
    need a still's geometry (tools/train_refiner.py's jaw labels) redraw it from the same seed."""
    identity = sample_identity(rng, identities)
    weights = sample_expression(rng)
    yaw, pitch, roll = rng.uniform(-60, 60), rng.uniform(-25, 25), rng.uniform(-20, 20)
    focal, t = sample_camera(rng, size)
    return StillFace(identity, weights, float(yaw), float(pitch), float(roll), focal, t)


def render_image(model: IctModel, rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict]:
    """One random still: identity, expression, pose U(+-60, +-25, +-20), light, background."""
    face = sample_still_face(rng, size, model.id_basis.shape[0])
    identity, weights, focal, t = face.identity, face.weights, face.focal, face.translation_cm
    yaw, pitch, roll = face.yaw, face.pitch, face.roll
    light = random_light(rng)
    bg = random_background(rng, size)
    rot, expr = euler_to_matrix(yaw, pitch, roll), arkit_to_ict(model, weights)
    image, lm, occ = render(model, identity, expr, rot, t, focal, size, light, bg, rng)
    nose = nose_tip_cm(model, identity, expr, rot, t)
    return image, truth_record(yaw, pitch, roll, t, weights, identity, focal, size, lm, occ, nose)


def _smooth(rng: np.random.Generator, n: int, fmin: float, fmax: float, parts: int = 3) -> np.ndarray:
    """Sum of sinusoids with random frequencies (Hz) and phases, scaled to [-1, 1] at most."""
    t = np.arange(n) / FPS
    freqs = rng.uniform(fmin, fmax, parts)
    amps = rng.uniform(0.3, 1.0, parts)
    sig = sum(a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for a, f in zip(amps, freqs, strict=True))
    return sig / amps.sum()


def _blinks(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Short blinks (0.15-0.3 s, raised cosine) every 1.5-5 s; now and then one eye only."""
    left, right = np.zeros(n), np.zeros(n)
    t = rng.uniform(0.3, 2.5)
    while t * FPS < n:
        dur = rng.uniform(0.15, 0.3) * FPS
        peak = rng.uniform(0.8, 1.0)
        start = t * FPS
        frames = np.arange(int(np.ceil(start)), min(int(np.floor(start + dur)) + 1, n))
        prof = peak * 0.5 * (1 - np.cos(2 * np.pi * (frames - start) / dur))
        which = rng.uniform()
        if which > 0.1:
            left[frames] = np.maximum(left[frames], prof)
        if which < 0.1 or which > 0.2:
            right[frames] = np.maximum(right[frames], prof)
        t += rng.uniform(1.5, 5.0)
    return left, right


def clip_trajectory(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Smooth head pose (n, 3) degrees and the six key blendshapes over n frames at 25 fps."""
    pose = np.column_stack([
        rng.uniform(-10, 10) + rng.uniform(15, 35) * _smooth(rng, n, 0.05, 0.4),
        rng.uniform(-5, 5) + rng.uniform(5, 15) * _smooth(rng, n, 0.05, 0.4),
        rng.uniform(-5, 5) + rng.uniform(4, 12) * _smooth(rng, n, 0.05, 0.3),
    ])
    smile = np.clip(rng.uniform(-0.3, 0.4) + 0.7 * _smooth(rng, n, 0.05, 0.3), 0, 1)
    asym = 0.15 * _smooth(rng, n, 0.05, 0.2)
    left, right = _blinks(rng, n)
    shapes = {
        "jawOpen": np.clip(0.2 + 0.45 * _smooth(rng, n, 0.3, 1.5), 0, 0.8),
        "eyeBlinkLeft": left,
        "eyeBlinkRight": right,
        "mouthSmileLeft": np.clip(smile + asym, 0, 1),
        "mouthSmileRight": np.clip(smile - asym, 0, 1),
        "browInnerUp": np.clip(rng.uniform(-0.4, 0.2) + 0.8 * _smooth(rng, n, 0.05, 0.4), 0, 1),
    }
    return pose, shapes


def _drift(rng: np.random.Generator, n: int) -> np.ndarray:
    """Slow head translation (cm) over a clip."""
    return np.column_stack([1.5 * _smooth(rng, n, 0.03, 0.2), 1.0 * _smooth(rng, n, 0.03, 0.2),
                            3.0 * _smooth(rng, n, 0.03, 0.2)])


def render_clip(model: IctModel, rng: np.random.Generator, size: int, frames: int, video_path: Path,
                truth_path: Path, progress: tqdm | None = None,
                trajectory: Callable = clip_trajectory, drift: Callable = _drift,
                shift: Callable[[int, np.ndarray, float], np.ndarray] | None = None) -> None:
    """One clip: fixed identity, light, background and camera; smooth pose, translation and key shapes.

    ``trajectory(rng, frames)`` gives the pose (frames×3 degrees) and key-shape weights,
    ``drift(rng, frames)`` the translation offsets (frames×3 cm): evaluation plugs in its own.
    ``shift(frame, points_cm, focal)``, when given, moves the head on (cm) by where its 68 landmark points
    (camera axes, cm) would be without it: a tool that wants the face at the frame's edge puts it there.
    """
    identity = sample_identity(rng, model.id_basis.shape[0])
    light = random_light(rng)
    bg = random_background(rng, size)
    focal, t0 = sample_camera(rng, size)
    pose, shapes = trajectory(rng, frames)
    drift = drift(rng, frames)
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"cannot open {video_path} for writing (OpenCV mp4v)")
    try:
        with open(truth_path, "w", encoding="utf-8") as out:
            for i in range(frames):
                weights = {n: 0.0 for n in ARKIT_NAMES}
                weights.update({k: float(v[i]) for k, v in shapes.items()})
                t = t0 + drift[i]
                rot, expr = euler_to_matrix(*pose[i]), arkit_to_ict(model, weights)
                verts = _shape(model, identity, expr)
                if shift is not None:
                    points = verts[model.lm68].astype(np.float64)
                    t = t + shift(i, points @ (rot @ MODEL_TO_CAMERA).T + t, focal)
                image, lm, occ = render_vertices(model, verts, rot, t, focal, size, light, bg, rng)
                writer.write(image)
                rec = {"frame": i, "time_s": round(i / FPS, 4)}
                nose = nose_tip_cm(model, identity, expr, rot, t)
                rec.update(truth_record(*pose[i], t, weights, identity, focal, size, lm, occ, nose))
                out.write(json.dumps(rec, separators=(",", ":")) + "\n")
                if progress is not None:
                    progress.update(1)
    finally:
        writer.release()


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=folder_to_write, required=True, help="output folder")
    parser.add_argument("--images", type=non_negative_int, default=100, help="number of still images")
    parser.add_argument("--clips", type=non_negative_int, default=0, help="number of clips")
    parser.add_argument("--frames", type=positive_int, default=100, help="frames per clip (25 fps)")
    parser.add_argument("--size", type=positive_int, default=512, help="image width and height, pixels")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed (same seed, same output)")
    parser.add_argument("--model", type=Path, default=ICT_PATH, help="ict_face.npz")
    args = parser.parse_args(argv)
    if (model := load_ict_for_tool(args.model)) is None:
        return 2
    # Each image and clip gets its own child seed, so one item does not depend on how many came before.
    seeds = np.random.SeedSequence(args.seed).spawn(args.images + args.clips)
    with tqdm(total=args.images + args.clips * args.frames, unit="frame", desc="rendering") as bar:
        if args.images:
            folder = args.out / "images"
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / "truth.jsonl", "w", encoding="utf-8") as out:
                for i in range(args.images):
                    image, rec = render_image(model, np.random.default_rng(seeds[i]), args.size)
                    name = f"{i:06d}.png"
                    cv2.imwrite(str(folder / name), image)
                    out.write(json.dumps({"file": name, **rec}, separators=(",", ":")) + "\n")
                    bar.update(1)
        if args.clips:
            folder = args.out / "clips"
            folder.mkdir(parents=True, exist_ok=True)
            for c in range(args.clips):
                rng = np.random.default_rng(seeds[args.images + c])
                render_clip(model, rng, args.size, args.frames, folder / f"clip_{c:03d}.mp4",
                            folder / f"clip_{c:03d}.jsonl", progress=bar)
    return 0


if __name__ == "__main__":
    sys.exit(main())

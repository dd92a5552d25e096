#!/usr/bin/env python3
"""Train the RDR-style refiner on helen_train, export it to ONNX, evaluate it on afw.

Stages (each one can be run alone; the data cache lives under /tmp, never in the repo):

    python tools/train_refiner.py data              # helen_train crops + renders + mesh features -> /tmp cache
    python tools/train_refiner.py train             # the 2D network: landmark steps + visibility head
    python tools/train_refiner.py model-params      # the truth's θ: ICT fitted to each crop's inner 51 points
    python tools/train_refiner.py train-3d          # both branches together, from the 2D network (30 epochs)
    python tools/train_refiner.py visibility-data   # more helen crops with more occluder kinds
    python tools/train_refiner.py train-visibility  # visibility head alone (20 epochs), rest frozen
    python tools/train_refiner.py expression-data   # more ICT renders, for the expression head
    python tools/train_refiner.py train-expression  # expression head alone, rest frozen
    python tools/train_refiner.py export            # engines/refiner.onnx (opset 13, dynamic batch) + checks
    python tools/train_refiner.py evaluate          # afw, detector included: ridge baseline vs refined
    python tools/train_refiner.py all               # all of the above in order
    python tools/train_refiner.py train-backbone --epochs 12     # comparison: a CNN of our own; ships nothing

The refiner takes the face mesh network's intermediate feature maps (features_48,
features_24, computed once per face), the ridge-mapped 68 landmarks S0 of the
same 192-px crop and that crop itself (the mesh's input, which the visibility head's
small pixel CNN reads). Its 3D branch starts from θ0, the affine fit of S0 to the ICT mean
face (neutral identity and expression), and its 2D branch from ΔS0 = S0 − S_p(θ0),
so that S = S_p + ΔS starts at S0. Each of the K = 2 recurrent steps samples the
maps bilinearly at the current landmarks (shape-indexed features), compresses each
point's features with a shared linear layer, concatenates the normalised shape, and
an MLP predicts both updates: θ <- θ + Δθ, ΔS <- ΔS + δS, S = S_p(θ) + ΔS.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))
from evaluate import nme_scores, summarise, table_cells
from evaluate_occlusion import recall_at_precision
from landmark_data import LANDMARKS68, annotated_faces, load_folder, match_face
from render_ict import KEY_SHAPES
from report import non_negative_int, positive_float, positive_int

from tracker.backends import create_session
from tracker.landmarks68 import IBUG68_MIRROR
from tracker.mesh import FEATURE_MAPS, MESH_MODEL
from tracker.pipeline import FaceTracker, TrackerConfig
from tracker.roi import Roi, crop, crop_points_to_image, image_points_to_crop
from tracker.types import ARKIT_BLENDSHAPES, ARKIT_MIRROR

CROP = 192
CACHE = Path("/tmp/refiner_cache")
CHECKPOINT = CACHE / "refiner.pt"  # the refiner the later stages refine and `export` writes out
# The 2D network of the `train` stage, kept apart: `train-3d` always starts from it, so a rerun of
# train-3d does not train an already trained dual network further.
CHECKPOINT_2D = CACHE / "refiner_2d.pt"
# More renders for the expression head alone (the only crops with known weights), in their own cache
# so that the landmark training data stays as it was. Their seeds start here, far from the landmark
# training renders (0-999) and from tools/evaluate_renders.py's held-out SeedSequence(1000) children.
EXPRESSION_CACHE = CACHE / "expression"
EXPRESSION_FIRST_SEED = 10_000
# helen_train crops with more kinds of occluder (occlude(extended=True)), for the visibility head alone.
VISIBILITY_CACHE = CACHE / "visibility"
ONNX_PATH = REPO / "engines" / "refiner.onnx"
# `export` keeps a new graph only if its landmarks are within this many crop px of the trained model's
# (the graph samples with its own formulation; they agree to ~3e-5 px).
GRAPH_TOLERANCE_PX = 1e-3
SEED = 0
STEPS = 2
POINT_DIM = 24  # per-landmark compressed feature size
HIDDEN = 256
# Dropout in the refinement steps' MLP. 0.1 was chosen on the held-out helen crops (engines/REFINER.md:
# 0.4 / 0.25 / 0.1 / 0 gave 4.85% / 4.72% / 4.65% / 4.80% NME after `train`).
STEP_DROPOUT = 0.1
EXPR_DROPOUT = 0.25  # the expression head's, before its last layer
VIS_HIDDEN = 64
VIS_WEIGHT = 0.05  # visibility BCE next to the landmark NME (~0.04): it must not dominate the landmarks
VIS_PIXEL_WIDTH = 16  # the visibility head's pixel CNN: 16 channels at 48×48, 32 at 24×24 (26 k parameters)
VIS_PIXEL_SEED = 3
EXPR_POINT_DIM = 16  # expression head: per-landmark compressed feature size
EXPR_HIDDEN = 256
EXPR_SEED = 1
# The expression head is a pair: two heads of the same architecture and loss, trained apart
# (train-expression), their weights averaged in the graph. The first is the single head shipped before
# (EXPR_SEED's initialisation, the stage's --seed data order); the second has its own seed for both. On the
# held-out render crops (seeds 900-999) the pair reads the key shapes better than either head alone
# (engines/REFINER.md, "Expression head"); a third head would take the ONNX file to 9.8 MB of its 10 MB.
EXPR_ENSEMBLE_SEEDS = (101,)
# Where the expression head also samples features besides the 68 points: places the 68 do not cover
# and the key expressions change (cheeks and nasolabial folds for smiles, forehead and glabella for the
# brows, under the eyes, the chin), each a fixed combination of the final 68 (iBUG indices, weights).
# On held-out render crops they lowered the key-shape MAE from 0.122 to 0.120 and browInnerUp's from
# 0.143 to 0.135 (engines/REFINER.md).
EXPRESSION_POINTS = (
    ((31, 0.5), (48, 0.5)), ((35, 0.5), (54, 0.5)),  # nasolabial
    ((2, 0.5), (48, 0.5)), ((14, 0.5), (54, 0.5)),  # lower cheeks
    ((2, 0.5), (31, 0.5)), ((14, 0.5), (35, 0.5)),  # upper cheeks
    ((21, 0.5), (22, 0.5)),  # glabella
    ((20, 1.5), (38, -0.5)), ((23, 1.5), (43, -0.5)),  # above the brows
    ((21, 0.8), (22, 0.8), (27, -0.6)),  # mid-forehead
    ((41, 1.5), (37, -0.5)), ((46, 1.5), (44, -0.5)),  # under the eyes
    ((8, 0.5), (57, 0.5)),  # chin
)
# The loss weight of the six key expressions (render_ict.KEY_SHAPES: jaw, blinks, smiles, inner
# brows) against the other 45, which avatars use less. On held-out render crops, key-shape MAE 0.131
# at 1, 0.122 at 3 and 5, 0.120 at 10, at a small cost in the other shapes (MSE 0.0219 -> 0.0237).
KEY_WEIGHT = 5.0
# Plus an absolute-error term on the six key shapes, weighted KEY_L1 against the squared one: their
# bar is a mean absolute error, and a squared loss alone pulls an ambiguous face (a smile on the side
# turned away) to the mean of its possible readings. On held-out render crops, with the training
# crops of the first 6,897 renders: key-shape MAE 0.119 at 0, 0.109 at 0.3, 0.110 at 1, 0.115 at 3.
KEY_L1 = 0.3
OWN_INPUT = 96  # the own-backbone comparison's input: the 192-px crop at half size
# Where each landmark's features are sampled: the point and four neighbours (crop pixels, crop axes).
OFFSETS = ((0, 0), (-4, 0), (4, 0), (0, -4), (0, 4))
# The 3D branch's model: ICT's 68 landmark vertices (engines/face_model.npz), its first MODEL_IDENTITY
# identity components (the later ones move these points by under 0.5 mm) and its 52 ARKit expressions,
# seen by an affine camera (weak perspective, crop px = A·X + t; the crop is already turned upright).
# Parameters θ: A / PX_PER_CM (6, row-major), t / CROP (2), identity (MODEL_IDENTITY), expression (52).
MODEL_IDENTITY = 10
PX_PER_CM = 8.0  # a face fills ~120 of the crop's 192 px: A's entries are then of order 1
THETA = 6 + 2 + MODEL_IDENTITY + 52
THETA_CAMERA, THETA_TRANSLATION = slice(0, 6), slice(6, 8)
THETA_IDENTITY, THETA_EXPRESSION = slice(8, 8 + MODEL_IDENTITY), slice(8 + MODEL_IDENTITY, THETA)
# The 3D branch's losses next to the landmark NME: S_p's NME against the truth θ's projection, and the
# squared error of its expressions. Held-out helen NME after train-3d, from the 2D network with step dropout
# 0.25 (4.72%): 4.71% at 1 (15 epochs), 4.68% at 0.3 (20 epochs), 4.65% at 0.3 (30 epochs). Shipped: 0.3,
# 30 epochs from the dropout-0.1 network (4.65%): 4.63%.
MODEL_WEIGHT = 0.3
MODEL_EXPRESSION_WEIGHT = 0.3
# Priors of the truth's θ fit (squared crop px per squared unit): identity ~ N(0, 1), expressions sparse.
PARAMS_ID_PRIOR = 2.0
PARAMS_EXPR_PRIOR = 10.0
INNER = slice(17, 68)  # the 51 inner points: the truth's θ is fitted to these (annotated jaws are contours)
HELEN, RENDER = 0, 1  # where a training crop comes from
RENDER_SIZE = 512


# --------------------------------------------------------------------------------------- data

def mesh_session():
    return create_session(MESH_MODEL, "onnxruntime", outputs=["landmarks", *FEATURE_MAPS])


def to_batch(crops_bgr: np.ndarray) -> np.ndarray:
    rgb = crops_bgr[..., ::-1]
    return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), dtype=np.float32) * (1.0 / 255.0)


def perturb(roi: Roi, rng: np.random.Generator) -> Roi:
    """Rotation +-30 deg, scale x0.9-1.1, shift +-5% of the size."""
    dx, dy = rng.uniform(-0.05, 0.05, 2) * roi.size
    return Roi(cx=roi.cx + dx, cy=roi.cy + dy, size=roi.size * rng.uniform(0.9, 1.1),
               angle=roi.angle + np.deg2rad(rng.uniform(-30.0, 30.0)))


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light colour jitter (gain, bias, per-channel tint) and an occasional blur."""
    out = img.astype(np.float32) * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)
    out *= rng.uniform(0.9, 1.1, 3)[None, None, :]
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        k = int(rng.choice([3, 5]))
        out = cv2.GaussianBlur(out, (k, k), 0)
    return out


def occlude(img: np.ndarray, truth: np.ndarray, donor: np.ndarray, scene: np.ndarray,
            rng: np.random.Generator, extended: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic occluder over 5-45% of the face's landmark box; returns the image and the 68 visibilities.

    Shapes: random convex polygon, ellipse, thick bar, or a hand (palm + fingers as rotated
    rectangles); textures: a piece of another training face, a piece of another training image at a
    random scale (``scene``, whole images, backgrounds included), a noisy solid colour, or shaded skin.
    ``extended`` (the visibility-data stage) adds an axis-aligned rectangle, and as textures the same
    part of another face (unshifted: a patch that looks like the face it hides) and a colour wash over
    another image. (tools/evaluate_occlusion.py draws its afw occluders with its own generator.)
    """
    x0, y0 = truth.min(0)
    x1, y1 = truth.max(0)
    area = rng.uniform(0.05, 0.45) * max(x1 - x0, 1.0) * max(y1 - y0, 1.0)
    cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
    mask = np.zeros(img.shape[:2], np.uint8)
    kind = rng.integers(5 if extended else 4)
    if kind == 4:  # axis-aligned rectangle
        aspect = rng.uniform(0.5, 2.0)
        w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
        cv2.rectangle(mask, (int(cx - w / 2), int(cy - h / 2)), (int(cx + w / 2), int(cy + h / 2)), 1, -1)
    elif kind == 0:  # convex polygon of 5-9 vertices
        r = np.sqrt(area / np.pi)
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(5, 10)))
        radii = r * rng.uniform(0.8, 1.25, len(angles))
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillConvexPoly(mask, cv2.convexHull(pts.astype(np.int32)), 1)
    elif kind == 1:  # ellipse
        aspect = rng.uniform(0.4, 2.5)
        a = np.sqrt(area * aspect / np.pi)
        cv2.ellipse(mask, (int(cx), int(cy)), (int(a), int(a / aspect)), rng.uniform(0, 180), 0, 360, 1, -1)
    elif kind == 2:  # bar across the image
        angle = rng.uniform(0, np.pi)
        d = np.array([np.cos(angle), np.sin(angle)]) * CROP
        thickness = max(3, int(area / CROP))
        p0, p1 = (np.array([cx, cy]) - d).astype(int), (np.array([cx, cy]) + d).astype(int)
        cv2.line(mask, tuple(p0.tolist()), tuple(p1.tolist()), 1, thickness)
    else:  # hand: palm and four fingers
        r = np.sqrt(area / 5.0)
        angle = rng.uniform(0, 2 * np.pi)
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)
        for k in range(4):
            a = angle + (k - 1.5) * 0.35
            tip = (cx + 2.6 * r * np.cos(a), cy + 2.6 * r * np.sin(a))
            cv2.line(mask, (int(cx), int(cy)), (int(tip[0]), int(tip[1])), 1, max(2, int(0.45 * r)))
    region = mask.astype(bool)
    texture = rng.integers(6 if extended else 4)
    out = img.copy()
    if texture == 4:  # the same part of another face
        out[region] = donor[region]
    elif texture == 5:  # another whole image under a colour wash
        wash = rng.uniform(0, 255, 3)
        out[region] = (0.5 * cv2.resize(scene, (CROP, CROP))[region] + 0.5 * wash).astype(np.uint8)
    elif texture == 0:  # a shifted piece of another face crop
        shift = rng.integers(-CROP // 3, CROP // 3, 2)
        out[region] = np.roll(donor, tuple(shift.tolist()), axis=(0, 1))[region]
    elif texture == 3:  # a random window of another image, 20-100% of its short side, scaled to the crop
        side = int(min(scene.shape[:2]) * rng.uniform(0.2, 1.0))
        y0 = int(rng.integers(0, scene.shape[0] - side + 1))
        x0 = int(rng.integers(0, scene.shape[1] - side + 1))
        out[region] = cv2.resize(scene[y0:y0 + side, x0:x0 + side], (CROP, CROP))[region]
    elif texture == 1:
        colour = rng.uniform(0, 255, 3)
        out[region] = np.clip(colour + rng.normal(0, 12, (int(region.sum()), 3)), 0, 255).astype(np.uint8)
    else:
        skin = np.array([rng.uniform(50, 150), rng.uniform(90, 190), rng.uniform(140, 240)])
        ys, _ = np.nonzero(region)
        shade = (ys - ys.mean()) / max(float(np.ptp(ys)), 1.0) * rng.uniform(-40, 40)
        out[region] = np.clip(skin + shade[:, None], 0, 255).astype(np.uint8)
    xy = np.clip(np.round(truth).astype(int), 0, CROP - 1)
    inside = (truth >= 0).all(1) & (truth <= CROP - 1).all(1)
    visible = ~(region[xy[:, 1], xy[:, 0]] & inside)
    return out, visible


def training_faces(renders: int, helen: bool = True, first_seed: int = 0):
    """(image, 68 truth points, source, 52 ARKit weights or None) of every helen_train face, then of
    ``renders`` ICT renders (whose expression weights are known).

    Renders use seeds first_seed..first_seed+renders-1 (the landmark data: 0..999, below the held-out
    seeds of tools/evaluate_renders.py)."""
    for item in load_folder(LANDMARKS68 / "helen_train") if helen else ():
        yield cv2.imread(str(item.image_path)), item.points, HELEN, None
    if renders:
        from render_ict import ICT_PATH, load_ict, render_image

        ict = load_ict(ICT_PATH)
        for k in range(first_seed, first_seed + renders):
            image, truth = render_image(ict, np.random.default_rng(k), RENDER_SIZE)
            weights = np.array([truth["blendshapes"][n] for n in ARKIT_BLENDSHAPES], np.float32)
            yield image, np.asarray(truth["landmarks"], np.float64), RENDER, weights


def make_data(augmentations: int, seed: int, occluded: float, renders: int, render_augmentations: int,
              cache: Path = CACHE, with_helen: bool = True, first_seed: int = 0,
              extended_occluders: bool = False) -> None:
    """Crops of every helen_train face (the tracker's own ROI plus ``augmentations`` perturbed ones)
    and of ``renders`` ICT renders (ROI plus ``render_augmentations``), into ``cache``."""
    rng = np.random.default_rng(seed)
    helen = len(load_folder(LANDMARKS68 / "helen_train")) if with_helen else 0
    tr = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=8, fit_3d=False, mirror_check=False))
    session = mesh_session()
    n_max = helen * (1 + augmentations) + renders * (1 + render_augmentations)
    cache.mkdir(parents=True, exist_ok=True)
    f48 = np.lib.format.open_memmap(cache / "f48.npy", "w+", np.float16, (n_max, 32, 48, 48))
    f24 = np.lib.format.open_memmap(cache / "f24.npy", "w+", np.float16, (n_max, 64, 24, 24))
    # The crops themselves at half size, for the comparison with a backbone of our own (train-backbone).
    crops96 = np.lib.format.open_memmap(cache / "crops96.npy", "w+", np.uint8, (n_max, OWN_INPUT, OWN_INPUT, 3))
    s0 = np.zeros((n_max, 68, 2), np.float32)
    gt = np.zeros((n_max, 68, 2), np.float32)
    visible = np.ones((n_max, 68), bool)
    image_id = np.zeros(n_max, np.int32)
    source = np.zeros(n_max, np.int8)
    expression = np.full((n_max, len(ARKIT_BLENDSHAPES)), np.nan, np.float32)  # renders only
    n, missed = 0, {HELEN: 0, RENDER: 0}
    # The previous image and its face crop texture the occluders.
    donor = np.zeros((CROP, CROP, 3), np.uint8)
    scene = np.zeros((CROP, CROP, 3), np.uint8)
    started = time.perf_counter()
    for k, (image, points, kind, weights) in enumerate(training_faces(renders, with_helen, first_seed)):
        tr.reset()
        meshes = tr.detect_meshes(image, limit=8)
        index = match_face([tr.mapping.landmarks(m) for m in meshes], points)
        if index is None:
            missed[kind] += 1
            continue
        base = meshes[index].roi
        rois = [base] + [perturb(base, rng) for _ in range(augmentations if kind == HELEN else render_augmentations)]
        crops, truths, visibility, weights_of = [], [], [], []
        for j, roi in enumerate(rois):
            c = crop(image, roi, CROP)
            t = image_points_to_crop(points, roi, CROP)
            v = np.ones(68, bool)
            w = weights
            if j > 0:
                c = photometric(c, rng)
                if rng.random() < 0.5:
                    c = np.ascontiguousarray(c[:, ::-1])
                    t = t[IBUG68_MIRROR].copy()
                    t[:, 0] = (CROP - 1) - t[:, 0]
                    w = None if weights is None else weights[ARKIT_MIRROR]
                if rng.random() < occluded:
                    c, v = occlude(c, t, donor, scene, rng, extended_occluders)
            crops.append(c)
            truths.append(t)
            visibility.append(v)
            weights_of.append(w)
        donor, scene = crops[0], image
        out = session.run(to_batch(np.stack(crops)))
        raw = out["landmarks"].reshape(len(crops), 468, 3).astype(np.float64)
        for j in range(len(crops)):
            s0[n] = tr.mapping.crop_landmarks(raw[j])
            gt[n] = truths[j]
            visible[n] = visibility[j]
            f48[n] = out["features_48"][j]
            crops96[n] = cv2.resize(crops[j], (OWN_INPUT, OWN_INPUT), interpolation=cv2.INTER_AREA)
            f24[n] = out["features_24"][j]
            image_id[n] = k
            source[n] = kind
            if weights_of[j] is not None:
                expression[n] = weights_of[j]
            n += 1
        if k % 100 == 0:
            print(f"  {k}/{helen + renders} images, {n} crops, {time.perf_counter() - started:.0f} s", flush=True)
    f48.flush()
    f24.flush()
    crops96.flush()
    np.savez(cache / "meta.npz", s0=s0[:n], gt=gt[:n], visible=visible[:n], image_id=image_id[:n],
             source=source[:n], expression=expression[:n], n=n)
    print(f"data: {helen} helen_train images ({missed[HELEN]} faces not found), {renders} renders "
          f"({missed[RENDER]} not found), {n} crops in {time.perf_counter() - started:.0f} s")


def load_meta() -> np.lib.npyio.NpzFile:
    """The data cache's meta.npz, or a one-line error naming the stage that writes it."""
    if not (CACHE / "meta.npz").is_file():
        raise SystemExit(f"error: no {CACHE / 'meta.npz'}: run `python tools/train_refiner.py data` first")
    return np.load(CACHE / "meta.npz")


def load_data():
    """The cache's maps, S0, truth (render jaws on their silhouette), visibility, image ids and sources."""
    meta = load_meta()
    n = int(meta["n"])
    f48 = np.load(CACHE / "f48.npy", mmap_mode="r")[:n]
    f24 = np.load(CACHE / "f24.npy", mmap_mode="r")[:n]
    gt = with_silhouette_jaws(meta["gt"], meta["image_id"], meta["source"])
    return np.asarray(f48), np.asarray(f24), meta["s0"], gt, meta["visible"], meta["image_id"], meta["source"]


@functools.cache
def _contour_model():
    """The reduced face model as the 3D fit loads it (its jaw rows and their sides), without the
    detector offsets: the renders' own geometry."""
    from tracker.fitting import FaceModel

    return FaceModel.load(offsets=None)


def silhouette_jaw(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A landmark-data render's 68 points and its jaw on the silhouette (17×2 image px), from its seed.

    A render's truth jaw is ICT's fixed vertices; annotators of real faces mark the visible outline
    instead. Each jaw point slides along the 3D fit's contour row for it (FaceModel.candidates, a
    horizontal slice of the face, and FaceModel.slide, its side) to the candidate outermost along the
    face's projected left-right axis; points that do not slide (the chin) stay put."""
    from render_ict import sample_still_face

    from tracker.fitting import JAW_ROWS
    from tracker.pose import MODEL_TO_CAMERA, euler_to_matrix

    model = _contour_model()
    face = sample_still_face(np.random.default_rng(seed), RENDER_SIZE)
    weights = np.array([face.weights.get(n, 0.0) for n in model.names])
    identity = face.identity[:len(model.identity)].astype(np.float64)
    points = (model.mean + np.tensordot(identity, model.identity, axes=1)
              + np.tensordot(weights, model.expression, axes=1))
    rotation = euler_to_matrix(face.yaw, face.pitch, face.roll) @ MODEL_TO_CAMERA
    cam = points @ rotation.T + face.translation_cm
    uv = face.focal * cam[:, :2] / cam[:, 2:] + (RENDER_SIZE - 1) / 2.0
    across = rotation[:2, 0] / np.linalg.norm(rotation[:2, 0])  # the subject's right-to-left, in the image
    jaw = uv[model.landmarks[:JAW_ROWS]].copy()
    for k in np.flatnonzero(model.slide[:JAW_ROWS]):
        row = model.candidates[k][model.candidates[k] >= 0]
        jaw[k] = uv[row[int(np.argmax(model.slide[k] * (uv[row] @ across)))]]
    return uv[model.landmarks], jaw


def with_silhouette_jaws(gt: np.ndarray, image_id: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``gt`` with each render crop's jaw moved to its silhouette (silhouette_jaw), mapped into the crop by
    the affine that takes the render's 68 points onto the crop's truth (mirrored crops: with the
    left/right swap). Renders are the landmark data's seeds 0..999, numbered after the helen images."""
    out = np.array(gt, dtype=np.float32, copy=True)
    renders = np.flatnonzero(source == RENDER)
    if not len(renders):
        return out
    first_render = int(image_id[source == HELEN].max()) + 1 if (source == HELEN).any() else 0
    seed = None
    for n in renders:
        if int(image_id[n]) - first_render != seed:  # a render's crops are consecutive: one geometry each
            seed = int(image_id[n]) - first_render
            points, jaw = silhouette_jaw(seed)
            full = points.copy()
            full[:17] = jaw
        fits = []
        for order in (np.arange(68), IBUG68_MIRROR):
            src = np.column_stack([points[order], np.ones(68)])
            affine = np.linalg.lstsq(src, gt[n].astype(np.float64), rcond=None)[0]
            fits.append((float(np.abs(src @ affine - gt[n]).max()), order, affine))
        residual, order, affine = min(fits, key=lambda f: f[0])
        if residual > 0.05:
            raise SystemExit(f"render crop {n}: its truth is no affine image of render {seed}'s points "
                             f"(residual {residual:.2f} px): the cache and the renderer disagree")
        out[n, :17] = (np.column_stack([full[order], np.ones(68)]) @ affine)[:17]
    return out


# ----------------------------------------------------------------------------------- 3D branch

@functools.cache
def branch_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 3D branch's model points: mean 68×3, identity MODEL_IDENTITY×68×3, expression 52×68×3 (cm);
    read once (the truth-θ fit asks for it per chunk of crops). Read-only: callers must not modify it."""
    d = np.load(REPO / "engines" / "face_model.npz")
    lm = d["lm68"]
    return (d["mean"][lm].astype(np.float64), d["id_basis"][:MODEL_IDENTITY, lm].astype(np.float64),
            d["exp_basis"][:, lm].astype(np.float64))


def fit_model_params(points: np.ndarray, known_expression: np.ndarray, iterations: int = 12) -> np.ndarray:
    """θ (N×THETA) of the 3D branch's model fitted to 68 crop-pixel points per face (their inner 51):
    alternately the affine camera (linear least squares) and the shape coefficients (ridge least
    squares with the PARAMS_*_PRIOR priors, expressions clipped to [0, 1]). Rows of
    ``known_expression`` without NaN (renders) keep those expressions and fit only the identity."""
    mean, ident, expr = branch_model()
    n, k = len(points), MODEL_IDENTITY
    obs = np.asarray(points, np.float64)[:, INNER]
    known = np.isfinite(known_expression).all(1)
    e = np.where(known[:, None], np.nan_to_num(known_expression), 0.0)
    alpha = np.zeros((n, k))
    basis = np.concatenate([ident, expr])[:, INNER]  # (k + 52)×51×3
    prior = np.concatenate([np.full(k, PARAMS_ID_PRIOR), np.full(len(expr), PARAMS_EXPR_PRIOR)])
    for _ in range(iterations):
        x = mean[INNER] + np.einsum("nk,kpc->npc", np.concatenate([alpha, e], 1), basis)
        xh = np.concatenate([x, np.ones((n, x.shape[1], 1))], 2)
        sol = np.linalg.solve(np.einsum("npi,npj->nij", xh, xh), np.einsum("npi,npc->nic", xh, obs))
        a, t = sol[:, :3].transpose(0, 2, 1), sol[:, 3]  # N×2×3, N×2
        jac = np.einsum("kpc,nrc->nprk", basis, a).reshape(n, -1, len(basis))  # N×102×(k+52)
        rhs = (obs - t[:, None] - np.einsum("pc,nrc->npr", mean[INNER], a)).reshape(n, -1)
        # Free rows solve identity and expression together; rows with known expressions the identity alone.
        normal = np.einsum("nri,nrj->nij", jac, jac) + np.diag(prior)
        coef = np.linalg.solve(normal, np.einsum("nri,nr->ni", jac, rhs))
        fixed_rhs = rhs - np.einsum("nri,ni->nr", jac[:, :, k:], e)
        fixed = np.linalg.solve(normal[:, :k, :k], np.einsum("nri,nr->ni", jac[:, :, :k], fixed_rhs))
        # Clipping after the joint solve leaves this round's identity matched to the unclipped
        # expressions; the next round's camera and solve see the clipped ones.
        alpha = np.where(known[:, None], fixed, coef[:, :k])
        e = np.where(known[:, None], e, np.clip(coef[:, k:], 0.0, 1.0))
    return np.concatenate([(a / PX_PER_CM).reshape(n, 6), t / CROP, alpha, e], 1).astype(np.float32)


def project_params(theta: np.ndarray) -> np.ndarray:
    """The 3D branch's projection S_p (N×68×2 crop px) of θ (N×THETA), in NumPy (the graph's twin)."""
    mean, ident, expr = branch_model()
    a = theta[:, THETA_CAMERA].reshape(-1, 2, 3) * PX_PER_CM
    coef = np.concatenate([theta[:, THETA_IDENTITY], np.clip(theta[:, THETA_EXPRESSION], 0, 1)], 1)
    x = mean + np.einsum("nk,kpc->npc", coef, np.concatenate([ident, expr]))
    return np.einsum("npc,nrc->npr", x, a) + theta[:, None, THETA_TRANSLATION] * CROP


def model_params() -> None:
    """The truth's θ for every crop of the landmark data (CACHE/params.npz): what the 3D branch learns."""
    meta = load_meta()
    started = time.perf_counter()
    theta = np.concatenate([fit_model_params(meta["gt"][i:i + 2048], meta["expression"][i:i + 2048])
                            for i in range(0, int(meta["n"]), 2048)])
    gt, source = meta["gt"][:len(theta)], meta["source"][:len(theta)]
    iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1)
    err = np.linalg.norm(project_params(theta) - gt, axis=-1)
    for name, code in (("helen", HELEN), ("renders", RENDER)):
        m = source == code
        print(f"{name}: {int(m.sum())} crops; the fitted model's NME on the inner 51 points "
              f"{100 * np.mean(err[m][:, INNER].mean(1) / iod[m]):.2f}%, on the jaw "
              f"{100 * np.mean(err[m][:, :17].mean(1) / iod[m]):.2f}%")
    np.savez(CACHE / "params.npz", theta=theta)
    print(f"θ of {len(theta)} crops -> {CACHE / 'params.npz'} in {time.perf_counter() - started:.0f} s")


# -------------------------------------------------------------------------------------- model

def build_model(graph_sampler: bool = False) -> tuple[type, type, Callable]:
    """The refiner's classes (Refiner, Export) and their bilinear sampler. ``graph_sampler``: the
    classes sample with ``sample_corner_major``, the formulation that the exported graph runs;
    otherwise with ``sample``, the one every training stage uses (see sample_corner_major)."""
    import torch
    from torch import nn

    def sample(features, points):
        """Bilinear sampling of [N,C,H,W] at [N,P,2] crop-pixel points -> [N,P,C].

        Same as F.grid_sample(align_corners=False, padding_mode="border") with the
        crop-pixel convention of the tracker (pixel centres at integers): a map of
        side H over the 192-px crop has its cell j centred at crop pixel (j + 0.5) * 192 / H - 0.5.
        Written with Floor / Gather / arithmetic so that it exports at opset 13 and
        runs on OpenCV DNN too (no GridSample op).
        """
        _, c, h, w = features.shape
        # Slices, not integer indexing, keep every tensor at rank 3 (OpenCV DNN drops or
        # mis-broadcasts the dims of a scalar Gather).
        x = ((points[..., :1] + 0.5) * (w / CROP) - 0.5).clamp(0.0, w - 1.0)  # N, P, 1
        y = ((points[..., 1:] + 0.5) * (h / CROP) - 0.5).clamp(0.0, h - 1.0)
        x0 = torch.floor(x).clamp(max=w - 2.0)
        y0 = torch.floor(y).clamp(max=h - 2.0)
        ax, ay = x - x0, y - y0
        # Batch sizes stay -1 in every reshape, and the batch offsets of the flat index come
        # from a CumSum (no Shape/Range/Expand ops): OpenCV DNN's importer cannot follow
        # shapes computed at run time.
        flat = features.transpose(1, 2).transpose(2, 3).reshape(-1, c)  # N*H*W, C
        batch = torch.cumsum(points[:, :1, :1] * 0 + 1, 0) - 1  # N, 1, 1: 0..N-1
        base = (batch * (h * w) + y0 * w + x0).long()  # N, P, 1
        offsets = torch.tensor([0, 1, w, w + 1], dtype=torch.long).view(1, 1, 4)
        idx = (base + offsets).reshape(-1, points.shape[1] * 4)  # N, 4P
        # N, P, 4C: the four neighbours side by side, blended by slices (OpenCV DNN mis-broadcasts
        # a 4D product and a ReduceSum here).
        v = flat[idx].reshape(-1, points.shape[1], 4 * c)
        return ((v[..., :c] * (1 - ax) + v[..., c:2 * c] * ax) * (1 - ay)
                + (v[..., 2 * c:3 * c] * (1 - ax) + v[..., 3 * c:] * ax) * ay)

    def sample_corner_major(features, points):
        """``sample`` in fewer and larger graph ops, for the exported graph, whose run time is mostly
        its node count: the four neighbours are gathered corner by corner into contiguous slabs
        [4, N·P, C] and blended by one product with their four bilinear weights (one affine map of
        the fractions) and three sums. Same value as ``sample`` up to float rounding (its weights are
        products taken first, ~1e-7); the training stages keep ``sample``, so that they reproduce
        the committed weights bit for bit. Same opset-13 ops, OpenCV DNN included."""
        _, c, h, w = features.shape
        assert h == w, "one Clip for x and y needs a square map"
        p = points.shape[1]
        xy = ((points + 0.5) * (w / CROP) - 0.5).clamp(0.0, w - 1.0)  # N, P, 2
        xy0 = torch.floor(xy).clamp(max=w - 2.0)
        # Weights (1-ax)(1-ay), ax(1-ay), (1-ax)ay, ax·ay: rows 0-3 an affine map of (ax, ay), rows 4-7 another.
        factors = torch.tensor([[-1.0, 0.0], [1, 0], [-1, 0], [1, 0], [0, -1], [0, -1], [0, 1], [0, 1]])
        constant = torch.tensor([1.0, 0, 1, 0, 1, 1, 0, 0])
        # 1, N·P, 8 -> 8, N·P, 1 by a Transpose (OpenCV DNN mis-shapes an Unsqueeze of a run-time shape).
        pairs = torch.nn.functional.linear((xy - xy0).reshape(1, -1, 2), factors, constant).transpose(0, 2)
        weights = pairs[:4] * pairs[4:]  # 4, N·P, 1
        batch = torch.cumsum(points[:, :1, :1] * 0 + 1, 0) - 1  # N, 1, 1: 0..N-1
        # Flat indices in float (exact below 2^24), one Cast at the end.
        base = batch * (h * w) + torch.nn.functional.linear(xy0, torch.tensor([[1.0, float(w)]]))  # N, P, 1
        corners = torch.tensor([[0.0], [1.0], [float(w)], [w + 1.0]])
        idx = (base.reshape(1, -1) + corners).long()  # 4, N·P
        flat = features.transpose(1, 2).transpose(2, 3).reshape(-1, c)  # N*H*W, C
        v = flat[idx] * weights  # 4, N·P, C
        return (v[0] + v[1] + v[2] + v[3]).reshape(-1, p, c)

    sampler = sample_corner_major if graph_sampler else sample

    def sample_around(maps, shape):
        """Each of ``maps`` sampled at the points ``shape`` [N,P,2] and at their OFFSETS neighbours ->
        N, P, len(OFFSETS)·ΣC: offset by offset, the maps in order within each. One sampling per map
        for all the offsets together: the graph's run time is mostly its node count (thousands of
        small ops), not their arithmetic, and a sampling is some 25 nodes."""
        p, k = shape.shape[1], len(OFFSETS)
        around = torch.cat([shape + torch.tensor([dx, dy], dtype=torch.float32) if (dx, dy) != (0, 0) else shape
                            for dx, dy in OFFSETS], 1)  # N, k·P, 2: offset by offset
        sampled = [sampler(m, around).reshape(-1, k, p, m.shape[1]) for m in maps]  # N, k, P, C
        joined = torch.cat(sampled, -1) if len(sampled) > 1 else sampled[0]
        return joined.transpose(1, 2).reshape(-1, p, k * joined.shape[-1])

    def shape_features(f48, f24, shape):
        """Each landmark's features: both maps sampled at the point and its OFFSETS neighbours -> N, 68, 480."""
        return sample_around((f48, f24), shape)

    class Step(nn.Module):
        """One recurrent step: from the features at the current shape, the 2D branch's update of the
        compensation ΔS and the 3D branch's update of θ (both heads zero-initialised: identity steps)."""

        def __init__(self) -> None:
            super().__init__()
            self.point = nn.Sequential(nn.Linear((32 + 64) * len(OFFSETS), POINT_DIM), nn.ReLU())
            self.mlp = nn.Sequential(nn.Dropout(STEP_DROPOUT), nn.Linear(68 * POINT_DIM + 136, HIDDEN), nn.ReLU(),
                                     nn.Dropout(STEP_DROPOUT), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                                     nn.Linear(HIDDEN, 136))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
            # The 3D head came after the 2D steps were trained: its own random stream leaves theirs as it was.
            with torch.random.fork_rng():
                self.params = nn.Linear(HIDDEN, THETA)
            nn.init.zeros_(self.params.weight)
            nn.init.zeros_(self.params.bias)

        def forward(self, f48, f24, shape):
            """(ΔS update in crop px [N,68,2], θ update [N,THETA])."""
            z = self.point(shape_features(f48, f24, shape)).reshape(-1, 68 * POINT_DIM)
            s = (shape / CROP - 0.5).reshape(-1, 136)
            hidden = self.mlp[:-1](torch.cat([z, s], 1))
            return self.mlp[-1](hidden).reshape(-1, 68, 2) * (CROP / 8.0), self.params(hidden)

    def conv(cin: int, cout: int, stride: int, dilation: int = 1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU())

    class Visibility(nn.Module):
        """Per-landmark visibility logit (not hidden by an occluder) at the final shape, from two sources.

        One small MLP shared by all landmarks plus a learned per-landmark bias, on shape_features at
        the final shape, detached (so the visibility loss does not move the landmarks); and, from the
        train-visibility stage on, a small CNN of the crop's own pixels (the 192-px crop averaged to
        96 px -> a 24×24 map), sampled at the same points and added into the MLP's hidden layer. The
        mesh's maps describe a face; an occluder's edges and foreign texture are in the pixels. The
        pixel branch is initialised from its own seed (so the landmark stages' random stream is what
        it was before it existed) with a zero input layer (so it starts as the features-only head)."""

        def __init__(self) -> None:
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear((32 + 64) * len(OFFSETS), VIS_HIDDEN), nn.ReLU(),
                                     nn.Linear(VIS_HIDDEN, 1))
            self.bias = nn.Parameter(torch.zeros(68))
            with torch.random.fork_rng():
                torch.manual_seed(VIS_PIXEL_SEED)
                w = VIS_PIXEL_WIDTH
                self.pixels = nn.Sequential(nn.AvgPool2d(2), conv(3, w, 2), conv(w, w, 1), conv(w, 2 * w, 2),
                                            conv(2 * w, 2 * w, 1, 2), conv(2 * w, 2 * w, 1, 4))
                self.pixel_in = nn.Linear(2 * w * len(OFFSETS), VIS_HIDDEN, bias=False)
                nn.init.zeros_(self.pixel_in.weight)

        def pixel_features(self, image, shape):
            """The pixel CNN's map of ``image`` [N,3,192,192] (RGB in [0, 1], the mesh's input) sampled at
            ``shape`` and its OFFSETS neighbours -> N, 68, 2·VIS_PIXEL_WIDTH·5."""
            return self.sampled(self.pixels(image), shape)

        @staticmethod
        def sampled(pixel_map, shape):
            """A pixel CNN map sampled at ``shape`` and its OFFSETS neighbours, as pixel_features does."""
            return sample_around((pixel_map,), shape)

        def forward(self, features, pixel_features=None):  # N, 68, 480 (and N, 68, 160)
            hidden = self.mlp[0](features)
            if pixel_features is not None:
                hidden = hidden + self.pixel_in(pixel_features)
            return self.mlp[2](self.mlp[1](hidden))[..., 0] + self.bias

    class Expression(nn.Module):
        """The 3D branch's expression: 52 ARKit weight logits from the features at the final shape.

        Each point's features (the 68 landmarks and the EXPRESSION_POINTS) are compressed by one
        shared layer and read together with the normalised shape (eyelid and lip geometry), so the
        head sees both the appearance (a closed lid, raised brows, a cheek fold) and the 2D shape.
        The shape is detached: this head never moves the points."""

        def __init__(self) -> None:
            super().__init__()
            combination = torch.zeros(len(EXPRESSION_POINTS), 68)
            for row, terms in enumerate(EXPRESSION_POINTS):
                for index, weight in terms:
                    combination[row, index] = weight
            self.register_buffer("combination", combination)
            points = 68 + len(EXPRESSION_POINTS)
            self.point = nn.Sequential(nn.Linear((32 + 64) * len(OFFSETS), EXPR_POINT_DIM), nn.ReLU())
            self.mlp = nn.Sequential(nn.Linear(points * EXPR_POINT_DIM + 136, EXPR_HIDDEN), nn.ReLU(),
                                     nn.Dropout(EXPR_DROPOUT), nn.Linear(EXPR_HIDDEN, len(ARKIT_BLENDSHAPES)))

        def points(self, shape):
            """The EXPRESSION_POINTS of a shape [N, 68, 2] -> [N, P, 2] (a MatMul: exports everywhere)."""
            return torch.nn.functional.linear(shape.transpose(1, 2), self.combination).transpose(1, 2)

        def forward(self, features, extra, shape):
            """``features``: shape_features at ``shape`` (N, 68, 480), computed once and shared;
            ``extra``: shape_features at ``self.points(shape)`` (N, P, 480)."""
            z = self.point(torch.cat([features, extra], 1)).reshape(-1, self.mlp[0].in_features - 136)
            return self.mlp(torch.cat([z, (shape.detach() / CROP - 0.5).reshape(-1, 136)], 1))

    class ExpressionEnsemble(nn.Module):
        """The Expression heads whose weights are averaged: each reads the same features at the same
        points (the first head's EXPRESSION_POINTS matrix) and is trained on its own (train-expression).
        Returns the weights in [0, 1], not logits."""

        def __init__(self) -> None:
            super().__init__()
            self.heads = nn.ModuleList([Expression() for _ in range(1 + len(EXPR_ENSEMBLE_SEEDS))])

        def points(self, shape):
            return self.heads[0].points(shape)

        def forward(self, features, extra, shape):
            # A sum, not a stack and a mean: OpenCV DNN mis-shapes a reduction over the stacked axis.
            total = torch.sigmoid(self.heads[0](features, extra, shape))
            for head in self.heads[1:]:
                total = total + torch.sigmoid(head(features, extra, shape))
            return total / len(self.heads)

    mean, ident, expr = branch_model()
    inner = np.zeros((68, 1))
    inner[INNER] = 1.0
    # The initial camera: the least-squares affine fit of the inner 51 points of S0 to the mean face,
    # a constant pseudo-inverse (4 × 68, zero on the jaw) applied to S0.
    homogeneous = np.concatenate([mean, np.ones((68, 1))], 1) * inner
    initial_fit = np.linalg.pinv(homogeneous)  # 4×68

    class Projection(nn.Module):
        """θ [N,THETA] -> S_p [N,68,2] crop px: the affine camera applied to the model's 68 points.
        Only rank-2 products of equal shapes and products with constants (OpenCV DNN mis-broadcasts
        per-face products of different shapes). The model's constants are rebuilt from
        engines/face_model.npz, never saved with the weights."""

        def __init__(self) -> None:
            super().__init__()
            f = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))
            # Model points as one vector: the 68 x, then the 68 y, then the 68 z (cm).
            self.register_buffer("mean", f(mean.T.reshape(-1)), persistent=False)
            self.register_buffer("basis", f(np.concatenate([ident, expr]).transpose(2, 1, 0).reshape(3 * 68, -1)),
                                 persistent=False)
            self.register_buffer("initial_fit", f(initial_fit), persistent=False)
            self.register_buffer("neutral", torch.zeros(THETA - 8, 8), persistent=False)  # -> zero coefficients
            self.register_buffer("to_points", torch.ones(68, 1), persistent=False)  # one value -> all 68 points

        def initial(self, shape):
            """θ of S0: the affine fit of its inner points to the mean face, neutral shape coefficients."""
            sol = torch.nn.functional.linear(shape.transpose(1, 2), self.initial_fit)  # N, 2, 4
            camera = torch.cat([sol[..., :3].reshape(-1, 6) / PX_PER_CM, sol[..., 3:4].reshape(-1, 2) / CROP], 1)
            # A product with a zero matrix, not torch.zeros: no run-time shape ops (OpenCV DNN cannot follow them).
            return torch.cat([camera, torch.nn.functional.linear(camera, self.neutral)], 1)

        def forward(self, theta):
            coef = torch.cat([theta[:, THETA_IDENTITY], theta[:, THETA_EXPRESSION].clamp(0.0, 1.0)], 1)
            points = torch.nn.functional.linear(coef, self.basis, self.mean)  # N, 204
            px, py, pz = points[:, :68], points[:, 68:136], points[:, 136:]
            spread = lambda i, scale: torch.nn.functional.linear(theta[:, i:i + 1], self.to_points * scale)  # N, 68
            x = (px * spread(0, PX_PER_CM) + py * spread(1, PX_PER_CM) + pz * spread(2, PX_PER_CM)
                 + spread(6, CROP))
            y = (px * spread(3, PX_PER_CM) + py * spread(4, PX_PER_CM) + pz * spread(5, PX_PER_CM)
                 + spread(7, CROP))
            return torch.cat([x.reshape(-1, 68, 1), y.reshape(-1, 68, 1)], 2)

    class Refiner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.steps = nn.ModuleList([Step() for _ in range(STEPS)])
            self.visibility = Visibility()
            self.projection = Projection()
            # False: the 2D-only network of the `train` stage (S <- S + ΔS, the 3D heads unused);
            # True (train-3d and after): S = S_p(θ) + ΔS, both branches updated at every step.
            self.dual = True
            # Trained after the rest, with the rest frozen (the train-expression stage). Initialised
            # from its own seed so that the landmark training's random stream is what it was before
            # this head existed (the `train` stage still reproduces the shipped landmark weights).
            with torch.random.fork_rng():
                torch.manual_seed(EXPR_SEED)
                self.expression = ExpressionEnsemble()

        def refine(self, features_48, features_24, landmarks):
            """The shape after each step, θ after each step (empty unless dual), and the shape-indexed
            features at the last shape, sampled once for both heads (detached: the heads' losses do not
            move the landmarks)."""
            shapes, thetas = [], []
            s = landmarks
            if self.dual:
                theta = self.projection.initial(landmarks)
                compensation = landmarks - self.projection(theta)  # ΔS0: S starts exactly at S0
            for step in self.steps:
                delta_s, delta_theta = step(features_48, features_24, s)
                if self.dual:
                    theta = theta + delta_theta
                    compensation = compensation + delta_s
                    s = self.projection(theta) + compensation
                    thetas.append(theta)
                else:
                    s = s + delta_s
                shapes.append(s)
            return shapes, thetas, shape_features(features_48, features_24, s.detach())

        def expression_features(self, features_48, features_24, shape):
            """shape_features at the expression head's extra points of ``shape`` (detached)."""
            return shape_features(features_48, features_24, self.expression.points(shape.detach()))

        def forward(self, features_48, features_24, landmarks):
            """The shape and θ after each step, and the visibility logits at the last shape."""
            shapes, thetas, features = self.refine(features_48, features_24, landmarks)
            return shapes, thetas, self.visibility(features)

    class Export(nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net
            # tongueOut: ICT has no tongue, the head never learnt it (its loss skips it): always 0.
            taught = torch.ones(1, len(ARKIT_BLENDSHAPES))
            taught[0, ARKIT_BLENDSHAPES.index("tongueOut")] = 0.0
            self.register_buffer("taught", taught)

        def forward(self, features_48, features_24, landmarks, image):
            shapes, thetas, features = self.net.refine(features_48, features_24, landmarks)
            at, theta = shapes[-1], thetas[-1]
            visibility = self.net.visibility(features, self.net.visibility.pixel_features(image, at))
            extra = self.net.expression_features(features_48, features_24, at)
            weights = self.net.expression(features, extra, at)
            # The 3D branch: its projection S_p [N,68,2], its affine camera [N,2,4] (crop px = A·X + t for
            # model points X in cm) and the 52 expression weights of the model that S_p projects.
            camera = torch.cat([theta[:, THETA_CAMERA].reshape(-1, 2, 3) * PX_PER_CM, theta[:, THETA_TRANSLATION].reshape(-1, 2, 1) * CROP], 2)
            model_expression = theta[:, THETA_EXPRESSION].clamp(0.0, 1.0) * self.taught
            return (at, torch.sigmoid(visibility), weights * self.taught,
                    self.net.projection(theta), camera, model_expression)

    return Refiner, Export, sampler


def load_checkpoint(net, path: Path, may_lack: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> None:
    """Load a saved refiner into ``net``. Keys starting with ``may_lack`` may be missing from the file
    (those parts keep their built values: a checkpoint from an earlier stage, or from before the
    visibility head's pixel CNN existed); keys starting with ``skip`` are not loaded. Any other
    mismatch, or no file, stops the stage with a message instead of a traceback."""
    import torch

    if not path.is_file():
        raise SystemExit(f"no {path}: run the earlier stages of tools/train_refiner.py first")
    state = {k: v for k, v in torch.load(path).items() if not k.startswith(skip)} if skip else torch.load(path)
    missing, unexpected = net.load_state_dict(state, strict=False)
    unexplained = [k for k in missing if not k.startswith(may_lack + skip)]
    if unexpected or unexplained:
        raise SystemExit(f"{path} does not match the refiner: missing {unexplained}, unexpected {unexpected}")


def _held_out_images(image_id: np.ndarray, source: np.ndarray, rng: np.random.Generator) -> set:
    """The 10% of helen_train images held out for checkpoint selection: the first draw of the stage's
    generator (held-out crops are helen ones only, so the criterion stays on real faces)."""
    images = np.unique(image_id[source == HELEN])
    return set(rng.choice(images, size=max(1, len(images) // 10), replace=False).tolist())


def _final_shape_features(net, f48, f24, rows: np.ndarray, s0: np.ndarray, expression_points: bool = False):
    """The frozen refiner's final shapes at ``rows`` of a cache (``s0`` aligned with ``rows``) and the
    shape-indexed features there (float16, ~65 kB per crop): what the heads read; with
    ``expression_points``, also the features at the expression head's extra points. The frozen part
    does not change while a head trains, so this runs once per stage."""
    import torch

    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))
    shapes, feats, extra = [], [], []
    with torch.no_grad():
        for i in range(0, len(rows), 256):
            b = rows[i:i + 256]
            maps = t(f48[b]), t(f24[b])
            s, _, features = net.refine(*maps, t(s0[i:i + 256]))
            shapes.append(s[-1].numpy())
            feats.append(features.numpy().astype(np.float16))
            if expression_points:
                extra.append(net.expression_features(*maps, s[-1]).numpy().astype(np.float16))
    out = np.concatenate(shapes), np.concatenate(feats)
    return (*out, np.concatenate(extra)) if expression_points else out


def nme_loss(pred, gt, iod, weight):
    """Mean over faces of the weighted mean point-to-point error over the inter-ocular distance."""
    return (((pred - gt).norm(dim=-1) * weight).sum(-1) / weight.sum(-1) / iod).mean()


def train(epochs: int, seed: int, batch: int, lr: float, stop_after: int | None = None, dual: bool = False) -> None:
    """The landmark steps and the visibility head. ``dual`` False (the `train` stage): the 2D network
    from scratch, S <- S + ΔS. ``dual`` True (`train-3d`): from that checkpoint, both branches
    together, S = S_p(θ) + ΔS, with θ taught by the truth's θ (the `model-params` stage) through its
    projection and its expressions."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if dual:  # before the data, which load slowly
        for needed, stage in ((CACHE / "params.npz", "model-params"), (CHECKPOINT_2D, "train")):
            if not needed.is_file():
                raise SystemExit(f"error: no {needed}: run `python tools/train_refiner.py {stage}` first")
    f48, f24, s0, gt, visible, image_id, source = load_data()
    # Held-out images (model selection) are helen_train ones only, so the criterion stays on real faces.
    held = _held_out_images(image_id, source, rng)
    # Validation: every crop of the held-out images (model selection), and the tracker's own crops
    # alone (the first crop of each held-out image), reported.
    val = np.array([i for i in range(len(s0)) if image_id[i] in held])
    val_roi = np.array([i for i in val if i == 0 or image_id[i - 1] != image_id[i]])
    trn = np.array([i for i in range(len(s0)) if image_id[i] not in held])
    print(f"train {len(trn)} crops ({int((source[trn] == RENDER).sum())} from renders), validation {len(val)} crops "
          f"({len(held)} held-out helen images); "
          f"{100 * (~visible).mean():.1f}% of landmarks hidden by synthetic occluders")
    Refiner, _, _ = build_model()
    net = Refiner()
    net.dual = dual
    saved_to = CHECKPOINT if dual else CHECKPOINT_2D
    if dual:
        # The 2D network has no 3D heads (steps.*.params) yet; its expression head and pixel CNN are unused.
        load_checkpoint(net, CHECKPOINT_2D, may_lack=("expression.", "visibility.pixel",
                                                      *(f"steps.{i}.params." for i in range(STEPS))))
        theta_gt = np.load(CACHE / "params.npz")["theta"]
        target_sp = project_params(theta_gt).astype(np.float32)
        expression_gt = np.clip(theta_gt[:, THETA_EXPRESSION], 0.0, 1.0)
    # The expression head and the visibility head's pixel CNN are trained by later stages (no gradient here).
    unused = ("expression.", "visibility.pixel")
    print(f"parameters trained here: {sum(p.numel() for n, p in net.named_parameters() if not n.startswith(unused))}")
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))
    iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1).astype(np.float32)
    # Every point counts: render jaws are taught on their silhouette (load_data), as annotators mark them.
    point_weight = np.ones((len(gt), 68), np.float32)
    all_points = torch.ones(1, 68)

    def evaluate(idx):
        """Held-out NME of the final shape, hidden-landmark recall at 80% precision, and (dual) the
        NME of the final S_p against the annotation's inner 51 points."""
        net.eval()
        with torch.no_grad():
            out, vis, sp = [], [], []
            for i in range(0, len(idx), 256):
                b = idx[i:i + 256]
                shapes, thetas, logits = net(t(f48[b]), t(f24[b]), t(s0[b]))
                out.append(shapes[-1].numpy())
                vis.append(logits.numpy())
                if dual:
                    sp.append(net.projection(thetas[-1]).numpy())
        pred = np.concatenate(out)
        nme = float((np.linalg.norm(pred - gt[idx], axis=-1).mean(-1) / iod[idx]).mean())
        model_nme = (float((np.linalg.norm(np.concatenate(sp) - gt[idx], axis=-1)[:, INNER].mean(-1)
                            / iod[idx]).mean()) if dual else np.nan)
        return nme, recall_at_precision(~visible[idx].ravel(), np.concatenate(vis).ravel(), 0.8), model_nme

    base_val = float((np.linalg.norm(s0[val] - gt[val], axis=-1).mean(-1) / iod[val]).mean())
    base_roi = float((np.linalg.norm(s0[val_roi] - gt[val_roi], axis=-1).mean(-1) / iod[val_roi]).mean())
    print(f"validation NME of S0 (ridge): {100 * base_val:.2f}% all crops, {100 * base_roi:.2f}% tracker ROI crops")
    if dual:
        v, _, v_model = evaluate(val)
        print(f"before: validation NME {100 * v:.2f}%, S_p inner 51 {100 * v_model:.2f}%; the truth θ's projection on the validation crops' inner 51: "
              f"{100 * float((np.linalg.norm(target_sp[val] - gt[val], axis=-1)[:, INNER].mean(-1) / iod[val]).mean()):.2f}%")
    best, best_epoch = np.inf, -1
    started = time.perf_counter()
    for epoch in range(epochs if stop_after is None else min(stop_after, epochs)):
        net.train()
        order = rng.permutation(trn)
        total = total_model = 0.0
        for i in range(0, len(order), batch):
            b = np.sort(order[i:i + batch])
            g = t(gt[b])
            shapes, thetas, logits = net(t(f48[b]), t(f24[b]), t(s0[b]))
            landmark_loss = sum(nme_loss(s, g, t(iod[b]), t(point_weight[b])) for s in shapes) / len(shapes)
            loss = landmark_loss + VIS_WEIGHT * F.binary_cross_entropy_with_logits(logits, t(visible[b]))
            if dual:
                target = t(target_sp[b])
                model_loss = sum(nme_loss(net.projection(th), target, t(iod[b]), all_points)
                                 for th in thetas) / len(thetas)
                expression = thetas[-1][:, THETA_EXPRESSION].clamp(0.0, 1.0)
                loss = (loss + MODEL_WEIGHT * model_loss
                        + MODEL_EXPRESSION_WEIGHT * ((expression - t(expression_gt[b])) ** 2).mean())
                total_model += float(model_loss.detach()) * len(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(landmark_loss.detach()) * len(b)
        sched.step()
        v, v_recall, v_model = evaluate(val)
        v_roi, _, _ = evaluate(val_roi)
        if v < best:
            best, best_epoch = v, epoch
            torch.save(net.state_dict(), saved_to)
        print(f"epoch {epoch:3d}  train {100 * total / len(trn):.2f}%  val {100 * v:.2f}% (ROI crops {100 * v_roi:.2f}%)  "
              f"hidden recall@80%P {100 * v_recall:.1f}%  "
              + (f"S_p: train {100 * total_model / len(trn):.2f}% of truth θ, val {100 * v_model:.2f}% inner 51  "
                 if dual else "")
              + f"best {100 * best:.2f}% (epoch {best_epoch})  {time.perf_counter() - started:.0f} s", flush=True)
    print(f"training: {time.perf_counter() - started:.0f} s, best validation NME {100 * best:.2f}% "
          f"at epoch {best_epoch} (S0 {100 * base_val:.2f}%), saved into {saved_to}")
    if not dual:
        # The later stages refine CHECKPOINT: without train-3d they take the 2D network as it is.
        shutil.copyfile(CHECKPOINT_2D, CHECKPOINT)


def branch_expression_report(crops: int = 4000) -> None:
    """The saved 3D branch's expression weights on render crops it never saw (the expression-data
    stage's first ``crops``), as MAE of the key shapes: what its `model_expression` output is worth."""
    import torch

    if not (EXPRESSION_CACHE / "meta.npz").is_file():
        print("no expression-data cache: the 3D branch's expressions are not scored")
        return
    Refiner, _, _ = build_model()
    net = Refiner()
    load_checkpoint(net, CHECKPOINT, may_lack=("visibility.pixel",))
    net.eval()
    f48, f24, rows, s0, weights, _ = _render_crops(EXPRESSION_CACHE)
    rows, s0, weights = rows[:crops], s0[:crops], weights[:crops]
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))
    out = []
    with torch.no_grad():
        for i in range(0, len(rows), 256):
            b = rows[i:i + 256]
            thetas = net.refine(t(f48[b]), t(f24[b]), t(s0[i:i + 256]))[1]
            out.append(thetas[-1][:, THETA_EXPRESSION].clamp(0.0, 1.0).numpy())
    mae = np.abs(np.concatenate(out) - weights).mean(0)
    key = [ARKIT_BLENDSHAPES.index(n) for n in KEY_SHAPES]
    print(f"3D branch expressions on {len(rows)} unseen render crops, MAE: "
          + "  ".join(f"{n} {mae[k]:.3f}" for n, k in zip(KEY_SHAPES, key)) + f"  key mean {mae[key].mean():.3f}")


def _render_crops(cache: Path) -> tuple[np.ndarray, ...]:
    """A cache's crops with known expression weights: (f48, f24 memmaps, S0, weights, render seed) of those rows."""
    meta = np.load(cache / "meta.npz")
    if "expression" not in meta.files:
        raise SystemExit(f"{cache} predates expression labels: rerun its data stage")
    rows = np.flatnonzero(np.isfinite(meta["expression"]).all(1))
    f48, f24 = (np.load(cache / name, mmap_mode="r") for name in ("f48.npy", "f24.npy"))
    renders = meta["source"] == RENDER
    # Image ids count the helen images first; render k of the stage has seed first_seed + k.
    first_seed = EXPRESSION_FIRST_SEED if cache == EXPRESSION_CACHE else 0
    seeds = meta["image_id"][rows] - int(meta["image_id"][renders].min()) + first_seed
    return f48, f24, rows, meta["s0"][rows], meta["expression"][rows], seeds


def train_expression(epochs: int, seed: int, batch: int, lr: float) -> None:
    """The expression heads alone, one after the other, on render crops (the only ones with known
    weights): the landmark data's renders (seeds 0-999) and the expression-data stage's (seeds 10,000 and
    up). The trained landmark steps and visibility head are frozen and unchanged.

    Renders of seeds 900-999 (all their crops) are held out for each head's checkpoint selection by the loss: the
    mean squared weight error over the 51 shapes ICT has (tongueOut is always 0), the six key shapes
    weighted KEY_WEIGHT (an absolute-error loss on all of them drove the sparse weights to 0, their
    median), plus KEY_L1 times the key shapes' mean absolute error."""
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    Refiner, _, _ = build_model()
    net = Refiner()
    # The head is trained afresh: a previous head's weights (perhaps of another size) are not loaded.
    load_checkpoint(net, CHECKPOINT, may_lack=("visibility.pixel",), skip=("expression.",))
    net.eval()
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))
    feats, extra, shapes, labels, seeds = [], [], [], [], []
    for cache in (CACHE, EXPRESSION_CACHE):
        if not (cache / "meta.npz").is_file():
            print(f"no {cache}: run `python tools/train_refiner.py expression-data` for more renders")
            continue
        f48, f24, rows, s0, weights, render_seeds = _render_crops(cache)
        at, features, at_extra = _final_shape_features(net, f48, f24, rows, s0, expression_points=True)
        shapes.append(at)
        feats.append(features)
        extra.append(at_extra)
        labels.append(weights)
        seeds.append(render_seeds)
    feats, extra, shapes, labels, seeds = (np.concatenate(a) for a in (feats, extra, shapes, labels, seeds))
    ensemble = net.expression
    key = [ARKIT_BLENDSHAPES.index(n) for n in KEY_SHAPES]
    used = np.ones(len(ARKIT_BLENDSHAPES), np.float32)
    used[ARKIT_BLENDSHAPES.index("tongueOut")] = 0.0
    weight = used.copy()
    weight[key] *= KEY_WEIGHT
    held = (seeds >= 900) & (seeds < 1000)
    trn, val = np.flatnonzero(~held), np.flatnonzero(held)
    print(f"expression heads: {len(ensemble.heads)} × {sum(p.numel() for p in ensemble.heads[0].parameters())} "
          f"parameters; {len(trn)} training crops ({len(np.unique(seeds[trn]))} renders), {len(val)} held-out "
          "crops (render seeds 900-999)")

    key_mask = np.zeros(len(ARKIT_BLENDSHAPES), np.float32)
    key_mask[key] = 1.0
    weight_t, key_mask_t = t(weight), t(key_mask)

    def loss_of(pred, truth):
        d = pred - truth
        return ((d ** 2 * weight_t).sum(1).mean() / float(used.sum())
                + KEY_L1 * (d.abs() * key_mask_t).sum(1).mean() / len(key))

    def errors(weights_of, idx):
        """Held-out loss, per-shape MAE and the MSE over the 51 taught shapes of ``weights_of``
        (features, extra, shape) -> weights in [0, 1]."""
        with torch.no_grad():
            pred = weights_of(t(feats[idx]), t(extra[idx]), t(shapes[idx]))
        d = pred.numpy() - labels[idx]
        return float(loss_of(pred, t(labels[idx]))), np.abs(d).mean(0), float((d ** 2 * used).sum(1).mean() / used.sum())

    def summary(mae, mse):
        return ("MAE " + "  ".join(f"{n} {mae[k]:.3f}" for n, k in zip(KEY_SHAPES, key))
                + f"  key mean {mae[key].mean():.4f}  MSE all 51 {mse:.4f}")

    for member in range(len(ensemble.heads)):
        if member > 0:
            # A further head: its own initialisation and data order, both from its seed.
            torch.manual_seed(EXPR_ENSEMBLE_SEEDS[member - 1])
            ensemble.heads[member] = type(ensemble.heads[0])()
            rng = np.random.default_rng(EXPR_ENSEMBLE_SEEDS[member - 1])
        head = ensemble.heads[member]
        opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        best, best_epoch, best_state, started = np.inf, -1, None, time.perf_counter()
        for epoch in range(epochs):
            head.train()
            order = rng.permutation(trn)
            for i in range(0, len(order), batch):
                b = order[i:i + batch]
                loss = loss_of(torch.sigmoid(head(t(feats[b]), t(extra[b]), t(shapes[b]))), t(labels[b]))
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            head.eval()
            held_loss, mae, mse = errors(lambda *x, h=head: torch.sigmoid(h(*x)), val)
            if held_loss < best:
                best, best_epoch = held_loss, epoch
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
            print(f"head {member + 1}/{len(ensemble.heads)} epoch {epoch:3d}  held-out loss {held_loss:.4f}  "
                  f"{summary(mae, mse)}  best {best:.4f} (epoch {best_epoch})  {time.perf_counter() - started:.0f} s",
                  flush=True)
        head.load_state_dict(best_state)
        print(f"expression head {member + 1}: best held-out loss {best:.4f} at epoch {best_epoch}", flush=True)
    ensemble.eval()
    held_loss, mae, mse = errors(ensemble, val)
    print(f"expression heads averaged: held-out loss {held_loss:.4f}  {summary(mae, mse)}")
    torch.save(net.state_dict(), CHECKPOINT)
    print(f"saved into {CHECKPOINT}")


def train_visibility(epochs: int, seed: int, batch: int, lr: float) -> None:
    """The visibility head alone, fine-tuned from the trained one with everything else frozen (so the
    landmarks and expression weights do not change), now with its pixel CNN, on the landmark data's crops
    plus the visibility-data stage's (more occluder kinds). Checkpoint selection: hidden-landmark recall
    at 80% precision on the crops of the helen images `train` held out."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    Refiner, _, _ = build_model()
    net = Refiner()
    # A checkpoint from before the pixel branch existed lacks it: it starts as built (zero input layer).
    load_checkpoint(net, CHECKPOINT, may_lack=("visibility.pixel",))
    net.eval()
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))
    # The crops the mesh saw, at half size (INTER_AREA: the 2×2 mean the graph's AvgPool takes), BGR uint8.
    image = lambda pixels: t(pixels).permute(0, 3, 1, 2)[:, [2, 1, 0]] / 255.0
    shapes, feats, crops, hidden, held = [], [], [], [], []
    for cache in (CACHE, VISIBILITY_CACHE):
        if not (cache / "meta.npz").is_file():
            raise SystemExit(f"no {cache}: run the data and visibility-data stages")
        meta = np.load(cache / "meta.npz")
        n = int(meta["n"])
        f48, f24 = (np.load(cache / name, mmap_mode="r") for name in ("f48.npy", "f24.npy"))
        # The same held-out helen images as `train` (the image ids of both caches count helen_train in order).
        out = _held_out_images(meta["image_id"][:n], meta["source"][:n], np.random.default_rng(seed))
        s, f = _final_shape_features(net, f48, f24, np.arange(n), meta["s0"][:n])
        shapes.append(s)
        feats.append(f)
        crops.append(np.load(cache / "crops96.npy", mmap_mode="r")[:n])
        hidden.append(~meta["visible"][:n])
        held.append(np.isin(meta["image_id"][:n], list(out)) & (meta["source"][:n] == HELEN))
    shapes, feats, crops, hidden, held = (np.concatenate(a) for a in (shapes, feats, crops, hidden, held))
    head = net.visibility
    # The graph pools the 192-px input to 96 px; the cache holds the 96-px crops: skip the pooling here.
    pixels = head.pixels[1:]

    def logits_of(b):
        return head(t(feats[b]), head.sampled(pixels(image(crops[b])), t(shapes[b])))

    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    trn, val = np.flatnonzero(~held), np.flatnonzero(held)

    def recall(idx):
        head.eval()
        with torch.no_grad():
            logits = np.concatenate([logits_of(idx[i:i + 512]).numpy() for i in range(0, len(idx), 512)])
        return recall_at_precision(hidden[idx].ravel(), logits.ravel(), 0.8)  # low visibility = hidden

    best, best_epoch, started = recall(val), -1, time.perf_counter()
    print(f"visibility head: {len(trn)} training crops, {len(val)} held-out helen crops; "
          f"{100 * hidden[trn].mean():.1f}% of training landmarks hidden; held-out recall@80%P before: {100 * best:.1f}%")
    for epoch in range(epochs):
        head.train()
        order = rng.permutation(trn)
        for i in range(0, len(order), batch):
            b = np.sort(order[i:i + batch])
            loss = F.binary_cross_entropy_with_logits(logits_of(b), t(~hidden[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        r = recall(val)
        if r > best:
            best, best_epoch = r, epoch
            torch.save(net.state_dict(), CHECKPOINT)
        print(f"epoch {epoch:3d}  held-out hidden recall@80%P {100 * r:.1f}%  best {100 * best:.1f}% "
              f"(epoch {best_epoch})  {time.perf_counter() - started:.0f} s", flush=True)
    print(f"visibility head: best held-out recall {100 * best:.1f}% at epoch {best_epoch}"
          + ("" if best_epoch >= 0 else " (the trained head; checkpoint unchanged)"))


def build_own_backbone():
    import torch
    from torch import nn

    def conv(cin: int, cout: int, stride: int):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class OwnBackbone(nn.Module):
        """A small CNN of our own in place of the face mesh network, for the comparison issue 6 asks
        for: the 96-px crop -> maps shaped like the mesh's features_48 (32 channels) and features_24
        (64), so the refiner's steps, sampling and heads run on it unchanged."""

        def __init__(self) -> None:
            super().__init__()
            self.to48 = nn.Sequential(conv(3, 24, 2), conv(24, 32, 1))
            self.to24 = nn.Sequential(conv(32, 64, 2), conv(64, 64, 1))

        def forward(self, crops):  # N, 3, 96, 96 in [0, 1]
            f48 = self.to48(crops)
            return f48, self.to24(f48)

    return OwnBackbone, torch


def train_backbone(epochs: int, seed: int, batch: int, lr: float) -> None:
    """The comparison: the same refiner (steps and visibility head, same data, loss and held-out helen
    images as `train`) on a small CNN of our own trained from scratch with it, instead of the face mesh
    network's feature maps. Reports held-out helen NME per epoch and, at the end, afw NME of one pass
    (no mirror, no offsets) for both backbones on the same faces, S0 the same ridge map."""
    import torch.nn.functional as F

    OwnBackbone, torch = build_own_backbone()
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    meta = load_meta()
    n = int(meta["n"])
    if not (CACHE / "crops96.npy").is_file():
        raise SystemExit("the data cache has no crops: rerun `python tools/train_refiner.py data`")
    crops = np.load(CACHE / "crops96.npy", mmap_mode="r")[:n]
    s0, gt, visible, image_id, source = (meta[k] for k in ("s0", "gt", "visible", "image_id", "source"))
    held = _held_out_images(image_id, source, rng)  # as in `train`
    val = np.array([i for i in range(n) if image_id[i] in held])
    trn = np.array([i for i in range(n) if image_id[i] not in held])
    Refiner, _, _ = build_model()
    backbone, net = OwnBackbone(), Refiner()
    net.dual = False  # the comparison was made on the 2D network
    params = list(backbone.parameters()) + [p for name, p in net.named_parameters()
                                            if not name.startswith(("expression", "visibility.pixel"))]
    print(f"own backbone: {sum(p.numel() for p in backbone.parameters())} parameters (+ refiner "
          f"{sum(p.numel() for p in params) - sum(p.numel() for p in backbone.parameters())}); "
          f"{len(trn)} training crops, {len(val)} held-out helen crops")
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))
    image = lambda pixels: t(pixels).permute(0, 3, 1, 2)[:, [2, 1, 0]] / 255.0  # BGR uint8 NHWC -> RGB [0, 1]
    iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1).astype(np.float32)
    # Render jaws untaught, as when this comparison was run (engines/REFINER.md), so its figures reproduce.
    point_weight = np.ones((len(gt), 68), np.float32)
    point_weight[source == RENDER, :17] = 0.0

    def predict(pixels, shapes):
        """Final shapes for N×96×96×3 BGR crops and their starting shapes."""
        backbone.eval()
        net.eval()
        with torch.no_grad():
            out = []
            for i in range(0, len(shapes), 256):
                f48, f24 = backbone(image(pixels[i:i + 256]))
                out.append(net(f48, f24, t(shapes[i:i + 256]))[0][-1].numpy())
        return np.concatenate(out)

    best, best_state, started = np.inf, None, time.perf_counter()
    for epoch in range(epochs):
        backbone.train()
        net.train()
        order = rng.permutation(trn)
        for i in range(0, len(order), batch):
            b = np.sort(order[i:i + batch])
            f48, f24 = backbone(image(crops[b]))
            shapes, _, logits = net(f48, f24, t(s0[b]))
            loss = sum(nme_loss(s, t(gt[b]), t(iod[b]), t(point_weight[b])) for s in shapes) / len(shapes)
            loss = loss + VIS_WEIGHT * F.binary_cross_entropy_with_logits(logits, t(visible[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        pred = predict(crops[val], s0[val])
        v = float((np.linalg.norm(pred - gt[val], axis=-1).mean(-1) / iod[val]).mean())
        if v < best:
            best = v
            best_state = ({k: x.clone() for k, x in backbone.state_dict().items()},
                          {k: x.clone() for k, x in net.state_dict().items()})
        print(f"epoch {epoch:3d}  held-out helen NME {100 * v:.2f}%  best {100 * best:.2f}%  "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    backbone.load_state_dict(best_state[0])
    net.load_state_dict(best_state[1])
    # afw, one pass from the tracker's own crop: own backbone vs the face mesh's maps (the shipped refiner).
    tr = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=8, fit_3d=False, mirror_check=False))
    rows = {"S0 (ridge map)": [], "refiner on the face mesh's maps (shipped)": [], "refiner on our own CNN": []}
    for item, img, mesh, _ in annotated_faces(tr, tr.mapping, load_folder(LANDMARKS68 / "afw")):
        if mesh is None:
            for r in rows.values():
                r.append({"found": False})
            continue
        start = tr.mapping.crop_landmarks(mesh.crop_points)
        shipped = tr.mapping.refiner.refine(mesh.features[0][None], mesh.features[1][None], start[None],
                                            mesh.pixels[None]).landmarks[0]
        small = cv2.resize(crop(img, mesh.roi, CROP), (OWN_INPUT, OWN_INPUT), interpolation=cv2.INTER_AREA)
        own = predict(small[None], start[None])[0]
        for name, pts in zip(rows, (start, shipped, own)):
            rows[name].append({"found": True, **nme_scores(crop_points_to_image(pts.astype(np.float64), mesh.roi,
                                                                                CROP), item.points)})
    print(f"own backbone: best held-out helen NME {100 * best:.2f}% after {epochs} epochs, "
          f"{time.perf_counter() - started:.0f} s")
    print("afw, one pass (no mirror, no offsets), detector short included:")
    print("| | found | NME | jaw NME | inner-51 NME | failures @0.08 | failures @0.10 | AUC@0.08 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {table_cells(summarise(r))} |")


# ------------------------------------------------------------------------------------- export

def export() -> None:
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    # The network as trained (PyTorch's reference outputs) and the same weights with the graph's sampler.
    Refiner, Export, sample = build_model()
    GraphRefiner, GraphExport, graph_sample = build_model(graph_sampler=True)
    net, graph_net = Refiner(), GraphRefiner()
    for network in (net, graph_net):
        load_checkpoint(network, CHECKPOINT)  # the graph needs every part, the visibility head's pixel CNN included
        network.eval()
    trained, model = Export(net).eval(), GraphExport(graph_net).eval()
    f48, f24, s0, _, _, _, _ = load_data()
    # The mesh's input for these crops: the cache keeps them at 96 px; doubled, the graph's 2×2 mean
    # gives them back exactly.
    crops = np.load(CACHE / "crops96.npy", mmap_mode="r")[:3]
    image = np.repeat(np.repeat(crops[..., ::-1], 2, axis=1), 2, axis=2).transpose(0, 3, 1, 2) / 255.0
    x = (torch.from_numpy(f48[:3].astype(np.float32)), torch.from_numpy(f24[:3].astype(np.float32)),
         torch.from_numpy(s0[:3]), torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
    # The hand-written sampler is grid_sample with align_corners=False and border padding.
    pts = torch.rand(3, 68, 2) * 230 - 19
    g = torch.stack([(pts[..., 0] + 0.5) / (CROP / 2) - 1, (pts[..., 1] + 0.5) / (CROP / 2) - 1], -1)
    ref = F.grid_sample(x[0], g.unsqueeze(2), align_corners=False, padding_mode="border")[..., 0].transpose(1, 2)
    print(f"samplers vs grid_sample, max |diff|: training {float((sample(x[0], pts) - ref).abs().max()):.2e}, "
          f"graph {float((graph_sample(x[0], pts) - ref).abs().max()):.2e}")
    ONNX_PATH.parent.mkdir(exist_ok=True)
    previous = None
    inputs = ["features_48", "features_24", "landmarks", "image"]
    feed = {name: v.numpy() for name, v in zip(inputs, x)}
    outputs = ["refined", "visibility", "expression", "projected", "camera", "model_expression"]
    if ONNX_PATH.is_file():  # the outputs of the model being replaced, for comparison (older ones lack `image`)
        old = ort.InferenceSession(str(ONNX_PATH), providers=["CPUExecutionProvider"])
        names = [o.name for o in old.get_outputs()]
        previous = dict(zip(names, old.run(names, {i.name: feed[i.name] for i in old.get_inputs()})))
    # Written beside the committed graph and swapped in only once it reproduces the trained model.
    candidate = ONNX_PATH.with_name(ONNX_PATH.stem + ".new.onnx")
    torch.onnx.export(model, x, str(candidate), opset_version=13, dynamo=False,
                      input_names=inputs, output_names=outputs,
                      dynamic_axes={k: {0: "N"} for k in (*inputs, *outputs)})
    with torch.no_grad():
        want = [v.numpy() for v in trained(*x)]
    got = ort.InferenceSession(str(candidate), providers=["CPUExecutionProvider"]).run(outputs, feed)
    diffs = ", ".join(f"{name} {np.abs(g - w).max():.2e}" for name, g, w in zip(outputs, got, want))
    print(f"ONNX Runtime vs PyTorch, max |diff|: {diffs}; {candidate.stat().st_size / 1e6:.2f} MB")
    landmark_error = float(np.abs(got[0] - want[0]).max())
    if not landmark_error <= GRAPH_TOLERANCE_PX:
        candidate.unlink()
        raise SystemExit(f"the exported graph's landmarks are {landmark_error:.2e} px from the trained model's "
                         f"(> {GRAPH_TOLERANCE_PX} px): {ONNX_PATH} left as it was")
    candidate.replace(ONNX_PATH)
    if previous is not None:
        print("vs the replaced engines/refiner.onnx, max |diff|: "
              + ", ".join(f"{name} {np.abs(g - previous[name]).max():.2e}" for name, g in zip(outputs, got)
                          if name in previous))
    try:
        cvnet = cv2.dnn.readNetFromONNX(str(ONNX_PATH))
        for name, v in feed.items():
            cvnet.setInput(np.ascontiguousarray(v), name)
        got_cv = cvnet.forward(outputs)
        print("OpenCV DNN vs PyTorch, max |diff|: " + ", ".join(
            f"{name} {np.abs(g.reshape(w.shape) - w).max():.2e}" for name, g, w in zip(outputs, got_cv, want)))
    except cv2.error as exc:
        print(f"OpenCV DNN cannot run it: {str(exc).strip().splitlines()[-1]}")


# ----------------------------------------------------------------------------------- evaluate

def evaluate(folder: Path) -> None:
    items = load_folder(folder)
    tr = FaceTracker(TrackerConfig(backend="onnxruntime", max_faces=8, fit_3d=False, mirror_check=False))
    rows = {"ridge map (baseline)": [], "ridge + refiner": [], "the refiner's 3D branch alone (S_p)": []}
    last = None  # the last face found: its maps time the refiner below
    for item, _, mesh, prediction in annotated_faces(tr, tr.mapping, items):
        if mesh is None:
            for r in rows.values():
                r.append({"found": False})
            continue
        last = mesh
        projected = tr.mapping.refiner.refine(mesh.features[0][None], mesh.features[1][None],
                                              tr.mapping.crop_landmarks(mesh.crop_points)[None],
                                              mesh.pixels[None]).projected[0]
        # Baseline: the same detection's plain ridge landmarks (no refiner); both with their offsets removed.
        for r, pred in zip(rows.values(), (prediction.initial, prediction.direct, projected.astype(np.float64))):
            r.append({"found": True, **nme_scores(crop_points_to_image(pred, mesh.roi, CROP), item.points)})
    print(f"{folder.name}: {len(items)} images, detector short included, backend onnxruntime, mirror pass off")
    print("| | found | NME | jaw NME | inner-51 NME | failures @0.08 | failures @0.10 | AUC@0.08 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {table_cells(summarise(r))} |")
    # Refiner cost alone, ONNX Runtime CPU, one thread, batch of two (face + mirror), on the last face's maps.
    if last is None:
        raise SystemExit(f"no annotated face found in {folder}")
    f48, f24 = (np.repeat(f[None], 2, 0) for f in last.features)
    s = np.repeat(tr.mapping.crop_landmarks(last.crop_points)[None].astype(np.float32), 2, 0)
    pixels = np.stack([last.pixels, last.pixels[:, :, ::-1]])
    refiner = tr.mapping.refiner
    for _ in range(20):
        refiner.refine(f48, f24, s, pixels)
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        refiner.refine(f48, f24, s, pixels)
        times.append(time.perf_counter() - t0)
    print(f"refiner alone, ONNX Runtime CPU 1 thread, batch 2: median {1e3 * np.median(times) / 2:.3f} ms per face")


# The stages that run the network in PyTorch (the others read images, caches and ONNX only).
TORCH_STAGES = ("train", "train-3d", "train-visibility", "train-expression", "export", "all",
                "train-backbone")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("data", "train", "model-params", "train-3d", "expression-data",
                                          "train-expression", "visibility-data", "train-visibility", "export",
                                          "evaluate", "all", "train-backbone"))
    parser.add_argument("--augmentations", type=non_negative_int, default=12,
                        help="perturbed crops per image (besides the ROI)")
    parser.add_argument("--renders", type=non_negative_int, default=1000,
                        help="ICT renders (seeds 0..N-1) added to the training data, for large poses and expressions")
    parser.add_argument("--render-augmentations", type=non_negative_int, default=3,
                        help="perturbed crops per render")
    parser.add_argument("--expression-renders", type=positive_int, default=18000,
                        help=f"extra renders for the expression head (seeds {EXPRESSION_FIRST_SEED} and up)")
    parser.add_argument("--occluded", type=float, default=0.5, help="share of perturbed crops given an occluder")
    parser.add_argument("--epochs", type=positive_int, default=50)
    parser.add_argument("--dual-epochs", type=positive_int, default=30, help="epochs of the train-3d stage")
    parser.add_argument("--dual-lr", type=positive_float, default=3e-4,
                        help="learning rate of the train-3d stage")
    parser.add_argument("--visibility-epochs", type=positive_int, default=20,
                        help="epochs of the train-visibility stage")
    parser.add_argument("--stop-after", type=positive_int,
                        help="run only the first N epochs of the --epochs cosine schedule")
    parser.add_argument("--batch", type=positive_int, default=64)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--seed", type=non_negative_int, default=SEED)
    parser.add_argument("--images", type=Path, default=LANDMARKS68 / "afw", help="evaluation folder")
    args = parser.parse_args()
    if not 0.0 <= args.occluded <= 1.0:
        parser.error(f"argument --occluded: expected a share from 0 to 1, got {args.occluded:g}")
    if args.stage in ("evaluate", "all") and not args.images.is_dir():
        parser.error(f"argument --images: {args.images} not found")
    if args.stage in TORCH_STAGES:
        try:
            import torch  # noqa: F401 (imported where used; here to fail before any work)
        except ImportError:
            raise SystemExit(f"error: the {args.stage} stage needs PyTorch (tool-time only: "
                             "pip install torch)") from None
    if args.stage in ("data", "all"):
        make_data(args.augmentations, args.seed, args.occluded, args.renders, args.render_augmentations)
    if args.stage in ("train", "all"):
        train(args.epochs, args.seed, args.batch, args.lr, args.stop_after)
    if args.stage in ("model-params", "all"):
        model_params()
    if args.stage in ("train-3d", "all"):
        train(args.dual_epochs, args.seed, args.batch, args.dual_lr, dual=True)
    if args.stage in ("visibility-data", "all"):
        make_data(6, args.seed + 2, 0.8, 0, 0, VISIBILITY_CACHE, extended_occluders=True)
    if args.stage in ("train-visibility", "all"):
        train_visibility(args.visibility_epochs, args.seed, args.batch, args.lr)
    if args.stage in ("expression-data", "all"):
        make_data(0, args.seed + 1, args.occluded, args.expression_renders, args.render_augmentations,
                  EXPRESSION_CACHE, with_helen=False, first_seed=EXPRESSION_FIRST_SEED)
    if args.stage in ("train-3d", "all"):  # needs the expression-data renders, which train-3d never sees
        branch_expression_report()
    if args.stage in ("train-expression", "all"):
        train_expression(args.epochs, args.seed, args.batch, args.lr)
    if args.stage in ("export", "all"):
        export()
    if args.stage in ("evaluate", "all"):
        evaluate(args.images)
    if args.stage == "train-backbone":  # the comparison only; not part of `all`, nothing shipped
        train_backbone(args.epochs, args.seed, args.batch, args.lr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

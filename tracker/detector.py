"""Face detection with MediaPipe's BlazeFace (short- and full-range), converted to ONNX.

The network predicts, per anchor, a box and six keypoints as offsets in input
pixels plus a score logit; this module builds the anchors, decodes, and merges
overlapping boxes with weighted non-maximum suppression, as MediaPipe does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tracker.backends import create_session

# name -> (onnx file, input size, SSD anchor strides, interpolated-scale anchors?)
DETECTOR_MODELS = {
    "short": ("face_detection_short_range.onnx", 128, (8, 16, 16, 16), True),
    "full": ("face_detection_full_range.onnx", 192, (4,), False),
}

# The tiles searched for small faces: each corner of the frame, this share of its width and height (so they
# overlap by a fifth of the frame: a face narrower than that lies whole in one of them).
TILE_SPAN = 0.6
CORNERS = (0, 1, 2, 3)
# Four more searches at a larger scale are four more chances to see a face in a texture: a tile's detection
# must score higher than the whole frame's (low-frequency noise gave 0.53-0.55, group-photo faces 0.54-0.95).
TILE_MIN_SCORE = 0.6
# The score a find must reach by default (FaceDetector's score_threshold, TrackerConfig.detection_threshold).
DEFAULT_SCORE_THRESHOLD = 0.5
# A whole-frame find holds back the corners' search (FaceDetector.detect's tile_below), or a corner's find of the
# same face, only when it scores as a default search's find must: below that, a lowered score_threshold let junk
# (0.1-0.23 on multi_face's first frame) pass for the small face the corners find.
SHOWN_MIN_SCORE = DEFAULT_SCORE_THRESHOLD
# A closer look at a find the face mesh refused: the square of this many times its side round it, searched alone.
# A box the detector draws between two heads (multi_face, frames 262-274: one box at 0.81-0.85 over two faces)
# holds both faces apart at this scale (0.75-0.91; 2 and 2.5 times found them too, at 0.63-0.88).
CLOSER_LOOK_SPAN = 3.0
# Frames 2 × MIN_AREA_FILTER_FACTOR times the network's input a side or more are shrunk in two steps
# (FaceDetector._letterbox): squares of whole pixels averaged first, on OpenCV's fast path for a whole-number
# factor, leave at least this factor for its general area filter, whose picture the two steps then match within
# about a grey level on average.
MIN_AREA_FILTER_FACTOR = 4
SAME_FACE_OVERLAP = 0.5  # two boxes are one face when their overlap covers more than this of the smaller one
# Quarter turns of the frame (clockwise) searched for faces the frame shows on their side or upside down:
# BlazeFace finds faces within about 45° of upright, and places an upside-down face's eyes as an upright one's.
TURNS = (2, 1, 3)
# Three more searches are three more chances to read a face into shadows or a profile: a turned search's find
# must score this much. On every third frame of the shared clips, the turned finds where the upright search found
# nothing scored up to 0.68 where no face was, and 0.72-0.79 on a blurred face of an audience that the upright
# search missed; 150 afw faces upright scored 0.79 or more.
TURN_MIN_SCORE = 0.75
_ROTATE_CODES = {1: cv2.ROTATE_90_CLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_COUNTERCLOCKWISE}

# Keypoint order of BlazeFace: subject's right eye, left eye, nose tip, mouth, right ear, left ear.
RIGHT_EYE, LEFT_EYE = 0, 1


@dataclass
class Detection:
    bbox: np.ndarray  # [x0, y0, x1, y1] image pixels
    score: float
    keypoints: np.ndarray  # 6×2 image pixels
    turn: int = 0  # quarter turns clockwise of the frame in which it was found (TURNS)


def ssd_anchors(input_size: int, strides: tuple[int, ...], interpolated: bool) -> np.ndarray:
    """Anchor centres (A×2, normalised) as MediaPipe's SsdAnchorsCalculator makes them (fixed size)."""
    centres = []
    layer = 0
    while layer < len(strides):
        same = layer
        per_cell = 0
        while same < len(strides) and strides[same] == strides[layer]:
            per_cell += 2 if interpolated else 1  # aspect ratio 1.0, plus the interpolated scale
            same += 1
        cells = int(np.ceil(input_size / strides[layer]))
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
        layer = same
    return np.concatenate(centres).astype(np.float32)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float):
    """MediaPipe's WEIGHTED suppression: overlapping boxes are averaged, weighted by score."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    out = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        iou = box_iou(boxes[i], boxes)
        group = remaining & (iou > iou_threshold)
        group[i] = True
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        kps = (keypoints[group] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[i])))
        remaining &= ~group
    return out


def _overlap_of_smaller(a: np.ndarray, b: np.ndarray) -> float:
    """How much of the smaller of two [x0, y0, x1, y1] boxes their intersection covers."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(w * h / max(smaller, 1e-9))


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one [x0,y0,x1,y1] box against N boxes."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _turned_back(points: np.ndarray, turn: int, w: int, h: int) -> np.ndarray:
    """Points (N×2, pixels, edges at 0 and the size) of the w×h frame turned ``turn`` quarter turns clockwise,
    in the unturned frame."""
    x, y = points[:, 0], points[:, 1]
    if turn == 1:  # turned clockwise: x' = h - y, y' = x
        return np.stack([y, h - x], axis=1)
    if turn == 2:
        return np.stack([w - x, h - y], axis=1)
    if turn == 3:  # turned anticlockwise: x' = y, y' = w - x
        return np.stack([w - y, x], axis=1)
    raise ValueError(f"a turn is 1, 2 or 3 quarter turns clockwise, not {turn!r}")


def same_face(a: Detection, b: Detection) -> bool:
    """Two searches' finds are taken for one face when their boxes' overlap covers most of the smaller box."""
    return _overlap_of_smaller(a.bbox, b.bbox) > SAME_FACE_OVERLAP


def _with_turned(found: list[Detection], turned: list[Detection]) -> list[Detection]:
    """The upright searches' finds with the turned searches', best first. A turned find that a find of the same
    face scoring as much comes before is left out. The upright finds it outscores stay, after it: boxes that
    overlap so may still be two faces, or the turned crop may show the mesh no face."""
    kept = list(found)
    for d in sorted(turned, key=lambda d: -d.score):
        if not any(k.score >= d.score and same_face(d, k) for k in kept):
            kept.append(d)
    return sorted(kept, key=lambda d: -d.score)


class FaceDetector:
    """BlazeFace on a letterboxed copy of the whole frame."""

    def __init__(
        self,
        model: str = "short",
        backend: str = "auto",
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        iou_threshold: float = 0.3,
        threads: int | None = None,
    ) -> None:
        if model not in DETECTOR_MODELS:
            raise ValueError(f"unknown detector '{model}'; choose one of {', '.join(DETECTOR_MODELS)}")
        filename, self.input_size, strides, interpolated = DETECTOR_MODELS[model]
        self.session = create_session(filename, backend, outputs=["regressors", "classificators"], threads=threads,
                                      max_batch=1)
        self.anchors = ssd_anchors(self.input_size, strides, interpolated)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold

    def _letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        h, w = image.shape[:2]
        n = self.input_size
        scale = n / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        block = max(h, w) // (n * MIN_AREA_FILTER_FACTOR)  # frame pixels a side averaged first
        if (w % nw or h % nh) and block >= 2 and min(h, w) >= block:
            # OpenCV's area filter has a fast path for a whole-number factor (as 1920×1080 has), and its general
            # one takes 2-5 times longer on a large frame (a 4000×3000 photo: 52 ms in one step, 11 ms in two).
            # The last row and column of squares may be cut short; those pixels, under a quarter of an input
            # pixel across, are left out of the canvas (the scale is the kept part's).
            h, w = h // block * block, w // block * block
            image = cv2.resize(image[:h, :w], (w // block, h // block), interpolation=cv2.INTER_AREA)
            scale = n / max(h, w)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (nw, nh), interpolation=interp)
        ox, oy = (n - nw) // 2, (n - nh) // 2
        canvas = np.zeros((n, n, 3), dtype=np.uint8)
        canvas[oy : oy + nh, ox : ox + nw] = resized
        # The long side fills the network's input exactly; the short side's rounding shifts it by half an input
        # pixel at most, at its far end.
        return canvas, scale, ox, oy

    def network_outputs(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], float, float, float]:
        """The network's raw outputs for a BGR uint8 frame ("regressors", "classificators"), and the letterbox
        that placed the frame in its input (scale, x offset, y offset)."""
        canvas, scale, ox, oy = self._letterbox(image)
        return self._run(canvas), scale, ox, oy

    def _run(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
        return self.session.run((rgb.astype(np.float32) * (2.0 / 255.0) - 1.0).transpose(2, 0, 1)[None])

    def detect(self, image: np.ndarray, tile_below: int = 0, corners: tuple[int, ...] = CORNERS,
               turns: tuple[int, ...] = ()) -> list[Detection]:
        """Faces in a BGR uint8 frame: the whole frame's finds best first, then its corners' (below); with
        ``turns``, all of them and the turned searches' finds best first (_with_turned).

        ``turns`` (quarter turns clockwise, 1-3; see TURNS): the frame turned so is searched too, and its finds
        are placed back in the frame, keypoints included, so that the eye line gives a sideways or upside-down
        face's turn. A turned find that outscores the upright find of the same face comes before it: an
        upside-down face scores lower upright, with its eyes misplaced.

        When the whole frame, squeezed into the network's input (128 or 192 px), shows fewer than
        ``tile_below`` faces scoring SHOWN_MIN_SCORE, the frame's ``corners`` (0-3: top left, top right, bottom
        left, bottom right; overlapping) are searched too, upright, at 1.7 times the scale: a group photo's small
        faces. Their finds follow, best first, unless the whole frame's upright search found them scoring that much
        (its lower finds of them are dropped). Frames under twice the
        network's input a side are not searched so: a corner would only be enlarged."""
        found, turned = self._detect_in(image, turns)
        # Faces the whole frame shows: its upright finds, and the turned finds of faces they missed.
        shown_upright = [d for d in found if d.score >= SHOWN_MIN_SCORE]
        shown = len(shown_upright) + sum(d.score >= SHOWN_MIN_SCORE and not any(same_face(d, k) for k in shown_upright)
                                         for d in _with_turned([], turned))
        if shown < tile_below and min(image.shape[:2]) >= 2 * self.input_size:
            h, w = image.shape[:2]
            th, tw = round(TILE_SPAN * h), round(TILE_SPAN * w)
            in_tiles = []
            for corner in corners:
                y0, x0 = (h - th) * (corner // 2), (w - tw) * (corner % 2)
                in_tiles += self._finds_in_window(image, x0, y0, x0 + tw, y0 + th)
            for d in sorted(in_tiles, key=lambda d: -d.score):
                # The same face seen again (a tile's edge may cut it into a box inside the whole one's); the whole
                # frame's finds of it that scored too low to count give way to it.
                if not any(same_face(d, k) for k in found if k.score >= SHOWN_MIN_SCORE):
                    found = [k for k in found if not same_face(d, k)] + [d]
        return _with_turned(found, turned) if turns else found

    def closer_look(self, image: np.ndarray, box: np.ndarray) -> list[Detection]:
        """The upright finds, scoring TILE_MIN_SCORE, in the square CLOSER_LOOK_SPAN times ``box``'s longer side
        round it (within the frame), placed in the frame, best first; none where that square is not at least a
        quarter closer than the whole frame's search."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in box)
        half = 0.5 * CLOSER_LOOK_SPAN * max(x1 - x0, y1 - y0)
        cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        left, top = max(0, int(cx - half)), max(0, int(cy - half))
        right, bottom = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
        if right - left < 2 or bottom - top < 2 or 1.25 * max(right - left, bottom - top) > max(h, w):
            return []
        return self._finds_in_window(image, left, top, right, bottom)

    def _finds_in_window(self, image: np.ndarray, left: int, top: int, right: int, bottom: int) -> list[Detection]:
        """The upright finds of the window [left, right) × [top, bottom) of ``image``, searched alone, that score
        TILE_MIN_SCORE, placed in the frame (keypoints too), best first."""
        finds = [d for d in self._detect_in(image[top:bottom, left:right])[0] if d.score >= TILE_MIN_SCORE]
        for d in finds:
            d.bbox += (left, top, left, top)
            d.keypoints += (left, top)
        return finds

    def _detect_in(self, image: np.ndarray, turns: tuple[int, ...] = ()) -> tuple[list[Detection], list[Detection]]:
        """Faces in ``image``: the upright search's, best first, and those of ``image`` turned by each of
        ``turns`` that score TURN_MIN_SCORE. The network's input is turned rather than the frame: a turn costs a
        network run, not a copy of the frame."""
        if any(turn not in _ROTATE_CODES for turn in turns):
            raise ValueError(f"a turn is 1, 2 or 3 quarter turns clockwise, not {turns!r}")
        canvas, scale, ox, oy = self._letterbox(image)
        n = self.input_size

        def placed(box: np.ndarray, kp: np.ndarray, score: float) -> Detection:
            box = (box.reshape(2, 2) - (ox, oy)) / scale
            return Detection(bbox=box.reshape(4), score=score, keypoints=(kp - (ox, oy)) / scale)

        upright = [placed(*found) for found in self._decode(self._run(canvas))]
        turned = []
        for turn in turns:
            for box, kp, score in self._decode(self._run(cv2.rotate(canvas, _ROTATE_CODES[turn]))):
                if score >= TURN_MIN_SCORE:
                    ends = _turned_back(box.reshape(2, 2), turn, n, n)
                    found = placed(np.concatenate([ends.min(0), ends.max(0)]), _turned_back(kp, turn, n, n), score)
                    found.turn = turn
                    turned.append(found)
        return upright, turned

    def _decode(self, out: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """The network's faces as (box, keypoints, score) in its input's pixels, overlapping ones merged."""
        raw = out["regressors"][0]
        logits = out["classificators"][0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
        keep = scores >= self.score_threshold
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep]
        n = float(self.input_size)
        centre = raw[:, 0:2] / n + anchors
        half = raw[:, 2:4] / n / 2.0
        boxes = np.concatenate([centre - half, centre + half], axis=1) * n
        kps = (raw[:, 4:16].reshape(-1, 6, 2) / n + anchors[:, None, :]) * n
        return weighted_nms(boxes, kps, scores, self.iou_threshold)

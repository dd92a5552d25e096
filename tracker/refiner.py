"""The project's trained landmark refiner (``engines/refiner.onnx``, see engines/REFINER.md).

It takes the face mesh network's intermediate feature maps of a 192-px face crop
(``features_48`` [N,32,48,48], ``features_24`` [N,64,24,24]) and the 68 landmarks
of that crop from the ridge map (crop pixels, [N,68,2]) and returns the refined 68
landmarks in crop pixels; per landmark, the probability that it is visible (not
hidden by something in front of the face; trained with synthetic occluders; it
also reads the crop's pixels, the mesh network's input ``image``); and
the face's 52 ARKit expression weights as its image shows them (trained on ICT
renders with known weights). Two recurrent steps sample the maps at the current
landmarks; the feature maps are computed once per face by the mesh network.

Each step updates two branches: a 3D one (θ: an affine camera, identity and
expression of the ICT face model's 68 points, projected to S_p) and a 2D
compensation ΔS; the landmarks are S = S_p + ΔS. The 3D branch's projection,
camera and expression come out too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracker.backends import create_session

REFINER_FILE = "refiner.onnx"


OUTPUTS = ("refined", "visibility", "expression", "projected", "camera", "model_expression")


@dataclass
class Refinement:
    """The refiner's outputs for a batch of N crops."""

    landmarks: np.ndarray  # N×68×2 crop pixels: S = S_p + ΔS
    visibility: np.ndarray  # N×68 in [0, 1]: not hidden by an occluder
    expression: np.ndarray  # N×52 ARKit weights in [0, 1], read from the crop's appearance and shape
    projected: np.ndarray  # N×68×2 crop pixels: the 3D branch's S_p (the landmarks are S_p + ΔS)
    camera: np.ndarray  # N×2×4 the 3D branch's affine camera: crop px = A·X + t, X the face model's points (cm)
    model_expression: np.ndarray  # N×52 the 3D branch's ARKit weights (the model S_p projects)


class Refiner:
    def __init__(self, backend: str = "auto", threads: int | None = None, max_batch: int = 2) -> None:
        """``max_batch``: the crops (faces and mirrors) of one call a TensorRT engine is built for."""
        self.session = create_session(REFINER_FILE, backend, outputs=list(OUTPUTS), threads=threads,
                                      max_batch=max_batch)

    def refine(self, features_48: np.ndarray, features_24: np.ndarray, crop_landmarks: np.ndarray,
               image: np.ndarray) -> Refinement:
        """The refined crops from the mesh feature maps, the initial [N,68,2] crop-pixel landmarks and the
        mesh's input crops ([N,3,192,192] RGB in [0, 1], which the visibility head reads)."""
        landmarks = np.asarray(crop_landmarks, dtype=np.float32).reshape(-1, 68, 2)
        out = self.session.run({"features_48": features_48, "features_24": features_24, "landmarks": landmarks,
                                "image": np.asarray(image, dtype=np.float32)})
        n = len(landmarks)
        return Refinement(landmarks=np.asarray(out["refined"]).reshape(n, 68, 2),
                          visibility=np.asarray(out["visibility"]).reshape(n, 68),
                          expression=np.asarray(out["expression"]).reshape(n, -1),
                          projected=np.asarray(out["projected"]).reshape(n, 68, 2),
                          camera=np.asarray(out["camera"]).reshape(n, 2, 4),
                          model_expression=np.asarray(out["model_expression"]).reshape(n, -1))

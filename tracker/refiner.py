"""The project's trained landmark refiner (``engines/refiner.onnx``, see engines/REFINER.md).

It takes the face mesh network's intermediate feature maps of a 192-px face crop
(``features_48`` [N,32,48,48], ``features_24`` [N,64,24,24]) and the 68 landmarks
of that crop from the ridge map (crop pixels, [N,68,2]) and returns the refined 68
landmarks in crop pixels; per landmark, the probability that it is visible (not
hidden by something in front of the face; trained with synthetic occluders); and
the face's 52 ARKit expression weights as its image shows them (trained on ICT
renders with known weights). Two recurrent steps sample the maps at the current
landmarks; the feature maps are computed once per face by the mesh network.
"""

from __future__ import annotations

import numpy as np

from tracker.backends import create_session

REFINER_FILE = "refiner.onnx"


class Refiner:
    def __init__(self, backend: str = "auto", threads: int | None = None) -> None:
        self.session = create_session(REFINER_FILE, backend, outputs=["refined", "visibility", "expression"],
                                      threads=threads)

    def refine(self, features_48: np.ndarray, features_24: np.ndarray,
               crop_landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Refined [N,68,2] crop-pixel landmarks, their [N,68] visibility in [0, 1] and the [N,52]
        ARKit expression weights in [0, 1], from the mesh feature maps and the initial [N,68,2] landmarks."""
        landmarks = np.asarray(crop_landmarks, dtype=np.float32).reshape(-1, 68, 2)
        out = self.session.run({"features_48": features_48, "features_24": features_24, "landmarks": landmarks})
        n = len(landmarks)
        return (np.asarray(out["refined"]).reshape(n, 68, 2), np.asarray(out["visibility"]).reshape(n, 68),
                np.asarray(out["expression"]).reshape(n, -1))

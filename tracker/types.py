"""Plain result records that flow from the pipeline to the outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracker.mesh import MeshResult


@dataclass
class FaceResult:
    id: int
    bbox: np.ndarray  # [x0, y0, x1, y1] image pixels
    score: float  # probability that a face is present (face mesh presence)
    landmarks: np.ndarray  # 68×2 image pixels, iBUG order
    mesh: MeshResult  # the face mesh this frame: ROI, crop-space and image-space points

    def to_record(self) -> dict:
        """The JSON Lines form of DESIGN.md; fields not computed are left out, never faked."""
        return {
            "id": self.id,
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(self.score, 4),
            "landmarks": np.round(self.landmarks, 2).tolist(),
        }


@dataclass
class FrameResult:
    frame: int
    time_s: float
    source: str
    faces: list[FaceResult] = field(default_factory=list)

    def to_record(self) -> dict:
        return {
            "frame": self.frame,
            "time_s": round(self.time_s, 4),
            "source": self.source,
            "faces": [f.to_record() for f in self.faces],
        }

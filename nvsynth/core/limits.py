"""What a valid label is: the one definition the samplers draw within and ``nvsynth inspect`` checks.

A row's labels are normalized (pitch, yaw) pairs in radians
(:mod:`nvsynth.core.geometry`), stored as float32. A row is valid when

* every gaze and head-pose angle lies within +-:data:`ANGLE_LIMIT_DEG` (90 degrees:
  beyond it the gaze, or the face, points away from the camera), and
* the head pose's norm sqrt(pitch^2 + yaw^2) is at most the run's
  ``render.max_pose_deg`` (80 by default, at most 90), which the file records in
  its ``config_json`` attribute.

Both checks run on the float32 values a file stores, so the render stage's
view sampler (:func:`render.views.sample_view`, which resamples a view that
fails them) and the validator (``nvsynth inspect``) can never disagree about
a row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Every label angle (gaze and head, pitch and yaw) lies within +- this many degrees.
ANGLE_LIMIT_DEG = 90.0
#: The default and largest ``render.max_pose_deg``.
DEFAULT_MAX_POSE_DEG = 80.0


@dataclass(frozen=True)
class LabelLimits:
    """The limits one run's rows obey."""

    max_pose_deg: float = DEFAULT_MAX_POSE_DEG  # head-pose norm
    angle_deg: float = ANGLE_LIMIT_DEG  # each angle of gaze and head

    @classmethod
    def of_file_attrs(cls, attrs: Mapping[str, Any]) -> LabelLimits:
        """The limits a file was rendered under (its ``config_json``); without one (a foreign ETH-XGaze
        file) only the +-90 degree angle limit applies."""
        raw = attrs.get("config_json")
        try:
            text = raw.decode() if isinstance(raw, bytes) else raw
            pose = float(json.loads(text)["render"]["max_pose_deg"]) if text is not None else math.inf
        except (ValueError, KeyError, TypeError):
            pose = math.inf
        return cls(max_pose_deg=pose)

    def violations(self, gaze: ArrayLike, head: ArrayLike) -> dict[str, NDArray[np.bool_]]:
        """Per row, which limit each (N, 2) label array breaks; NaN/inf rows are not counted here."""
        g = np.asarray(gaze, dtype=np.float32).reshape(-1, 2)
        h = np.asarray(head, dtype=np.float32).reshape(-1, 2)
        angle = np.float32(np.radians(self.angle_deg))
        fin_g, fin_h = np.isfinite(g).all(axis=1), np.isfinite(h).all(axis=1)
        hn = np.hypot(h[:, 0].astype(np.float64), h[:, 1].astype(np.float64))
        return {
            "gaze_angle": fin_g & (np.abs(g) > angle).any(axis=1),
            "head_angle": fin_h & (np.abs(h) > angle).any(axis=1),
            "head_norm": fin_h & (hn > np.radians(self.max_pose_deg)),
        }

    def problem(self, gaze: ArrayLike, head: ArrayLike) -> str | None:
        """Why one row's labels are not valid, or ``None``."""
        v = self.violations(gaze, head)
        if v["gaze_angle"][0]:
            return f"gaze beyond +-{self.angle_deg:g} deg"
        if v["head_angle"][0]:
            return f"head pose beyond +-{self.angle_deg:g} deg"
        if v["head_norm"][0]:
            return f"head pose beyond {self.max_pose_deg:g} deg"
        return None

    def describe(self, key: str) -> str:
        return {
            "gaze_angle": f"gaze angle beyond +-{self.angle_deg:g} degrees",
            "head_angle": f"head angle beyond +-{self.angle_deg:g} degrees",
            "head_norm": f"head-pose norm beyond render.max_pose_deg = {self.max_pose_deg:g} degrees",
        }[key]


def float32_norm_deg(pitchyaw: ArrayLike) -> float:
    """The head-pose norm in degrees of labels as stored (float32), as :class:`LabelLimits` measures it."""
    p = np.asarray(pitchyaw, dtype=np.float32).reshape(2).astype(np.float64)
    return float(np.degrees(np.hypot(p[0], p[1])))


__all__ = ["ANGLE_LIMIT_DEG", "DEFAULT_MAX_POSE_DEG", "LabelLimits", "float32_norm_deg"]

"""Gaze of the novel views: follow the head, or a new eye-in-head rotation per view, with exact labels.

``render.gaze`` (:class:`GazeSpec`):

* ``follow-head`` -- today's behaviour: the eyes are texture on the face and
  turn with it (the gaze in head coordinates is the source's for every view);
* ``gaussian`` -- an eye-in-head rotation per view: the gaze in the head frame of
  the labels (hR^T . g as (pitch, yaw), :attr:`render.views.View.head_rotation`)
  drawn as the eyes' primary position (:func:`primary_gaze`, the fitted face's
  forward direction in that frame) plus N(0, sigma) on pitch and yaw;
* ``file`` -- a gaze direction (normalized-camera pitch, yaw, radians) per view,
  a uniformly random row of ``render.gaze_file`` (e.g. every ``face_gaze`` of
  an ETH-XGaze-style h5, ``nvsynth targets --from-h5 FILES --gaze``); its
  eye-in-head rotation is that direction in the view's head frame.

Either way the eye's rotation from its primary position must stay within
``render.gaze_max_deg`` (the angle between the two directions); draws beyond it are drawn again, at
most ``render.max_attempts`` times, like head poses, and the view is skipped
with its reason otherwise. The gaze target is the point at a distance drawn
uniformly from ``render.gaze_distance_mm`` from the face centre along the new
direction; both eyes verge on it (:func:`eye_orientations`, each eye's visual
axis through the target), so ``face_gaze`` -- face centre -> target, the ETH-XGaze
convention -- is the new visual axis, and hR^T . g equals the drawn eye-in-head
direction exactly. Draws come from ``view_rng(seed, subject, frame, view,
STREAM_GAZE)``, so the head poses and appearance of every view are those of
``follow-head``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from nvsynth.core import geometry
from nvsynth.core.config import Config
from nvsynth.core.errors import ConfigError
from nvsynth.recon.eyeball import FORWARD, orientation_towards
from nvsynth.render.eyes import EyeRig
from nvsynth.render.patterns import load_pose_file
from nvsynth.render.views import FACE_CENTER_NORM, NormalizedSource, View, apply_rigid

FOLLOW_HEAD = "follow-head"


@dataclass(frozen=True)
class GazeSpec:
    """How the views' gaze is chosen (``render.gaze*``); small enough to hand to workers."""

    mode: str = FOLLOW_HEAD
    sigma: float = float(np.radians(15.0))  # radians, 'gaussian'
    max_angle: float = float(np.radians(35.0))  # radians, bound of the eye-in-head rotation
    distance: tuple[float, float] = (300.0, 1000.0)  # mm, face centre -> target
    directions: NDArray[np.float64] | None = None  # (N, 2) normalized-camera (pitch, yaw), 'file'
    origin: str = ""

    @property
    def redirects(self) -> bool:
        return self.mode != FOLLOW_HEAD


def load_gaze_spec(cfg: Config) -> GazeSpec:
    """The configured gaze (the file of ``file`` is read here, once per run)."""
    r = cfg.render
    common = {
        "mode": r.gaze,
        "sigma": float(np.radians(r.gaze_sigma_deg)),
        "max_angle": float(np.radians(r.gaze_max_deg)),
        "distance": (float(r.gaze_distance_mm[0]), float(r.gaze_distance_mm[1])),
    }
    if r.gaze == "file":
        if r.gaze_file is None:
            raise ConfigError("config: render.gaze 'file' needs render.gaze_file")
        return GazeSpec(**common, directions=load_pose_file(Path(r.gaze_file)), origin=str(r.gaze_file))
    return GazeSpec(**common)


@dataclass(frozen=True)
class GazeDraw:
    """One view's drawn gaze: the eye-in-head rotation (pitch, yaw; radians) and the target's distance (mm)."""

    eye_in_head: NDArray[np.float64]
    distance: float
    attempts: int


def primary_gaze(rig: EyeRig, source: NormalizedSource) -> NDArray[np.float64]:
    """The eyes' primary position (the fitted face's forward direction) as gaze-in-head (pitch, yaw) of the labels.

    The labels' head frame is the annotation's (MPIIGaze 6-point model); the
    fitted mesh's frame may be tilted from it (on the bundled sample by about 26
    degrees: its annotation reads the stretched portrait as looking up). The
    same for every view of a source.
    """
    forward = source.normalization.rotation @ rig.eyes.head_rotation @ FORWARD
    return geometry.pitchyaw_from_vector(source.head_rotation.T @ forward)


def sample_gaze(spec: GazeSpec, rng: np.random.Generator, view: View, primary: NDArray[np.float64],
                max_attempts: int) -> GazeDraw | str:  # fmt: skip
    """A gaze for ``view`` within ``spec.max_angle`` of ``primary``, or why there is none after ``max_attempts``."""
    closest = np.inf
    ahead = geometry.vector_from_pitchyaw(primary)
    for attempt in range(1, max_attempts + 1):
        if spec.directions is not None:
            g = geometry.vector_from_pitchyaw(spec.directions[int(rng.integers(len(spec.directions)))])
            py = geometry.pitchyaw_from_vector(view.head_rotation.T @ g)
        else:
            py = primary + rng.normal(0.0, spec.sigma, size=2)
        norm = float(np.radians(geometry.angular_error_deg(geometry.vector_from_pitchyaw(py), ahead)))
        if norm <= spec.max_angle and abs(py[0]) < np.pi / 2:
            return GazeDraw(np.asarray(py, dtype=np.float64), float(rng.uniform(*spec.distance)), attempt)
        closest = min(closest, norm)
    return (
        f"no eye-in-head rotation within {np.degrees(spec.max_angle):g} deg in {max_attempts} attempts "
        f"(closest {np.degrees(closest):.1f} deg)"
    )


@dataclass(frozen=True)
class GazeLabels:
    """The gaze columns of one row (normalized camera of the view)."""

    eye_rotation: NDArray[np.float64]  # (2,) eye-in-head (pitch, yaw) of the visual axis, radians
    target: NDArray[np.float64]  # (3,) gaze target, mm
    redirected: bool


def redirect_view(view: View, draw: GazeDraw) -> tuple[View, GazeLabels]:
    """The view with its gaze labels replaced by the drawn gaze (face centre -> target)."""
    g = view.head_rotation @ geometry.vector_from_pitchyaw(draw.eye_in_head)
    target = FACE_CENTER_NORM + draw.distance * g
    new = dataclasses.replace(view, gaze=g, face_gaze=geometry.pitchyaw_from_vector(g))
    return new, GazeLabels(draw.eye_in_head.copy(), target, True)


def follow_head_labels(view: View, gaze_target_source: NDArray[np.float64]) -> GazeLabels:
    """The gaze columns of a row whose eyes turn with the head (closed eyes, or no eyeball model)."""
    py = geometry.pitchyaw_from_vector(view.head_rotation.T @ view.gaze)
    return GazeLabels(py, apply_rigid(view.transform, gaze_target_source), False)


def eye_orientations(rig: EyeRig, view: View, target_norm: NDArray[np.float64]) -> NDArray[np.float64]:
    """(2, 3, 3) both eyes' orientations (eye frame -> source camera) verging on ``target_norm`` of ``view``."""
    T = view.transform
    target = np.linalg.solve(T[:3, :3], np.asarray(target_norm, dtype=np.float64) - T[:3, 3])
    R = rig.eyes.head_rotation
    return np.stack([orientation_towards(rig.model, R, rig.eyes.centres[e], target, e) for e in range(2)])

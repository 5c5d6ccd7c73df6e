"""Dense landmarks: MediaPipe Face Mesh (468 points) and MediaPipe Iris, run with LiteRT.

Models (Google, Apache-2.0; not part of this repository -- :mod:`nvsynth.core.assets`
resolves them from ``assets.face_landmark_model`` / ``assets.iris_landmark_model``,
``$NVSYNTH_FACE_LANDMARK_MODEL`` / ``$NVSYNTH_IRIS_LANDMARK_MODEL``, the cache, or a
pinned, checksummed download):

* ``face_landmark.tflite``, MediaPipe Face Mesh (Kartynnik et al., "Real-time Facial
  Surface Geometry from Monocular Video on Mobile GPUs", CVPR Workshops 2019).
  Input 1x192x192x3 float RGB in [0, 1]: a square face crop, rotated so that the
  eye line is horizontal. Outputs: 1404 values, 468 x (x, y, z) in crop pixels in
  the canonical face mesh's vertex order (z: relative depth in the scale of x,
  smaller is nearer), and a face-presence logit.
* ``iris_landmark.tflite``, MediaPipe Iris (Ablavatski et al., "Real-time Pupil
  Tracking from Monocular Video for Digital Puppetry", CVPR Workshops 2020).
  Input 1x64x64x3 float RGB in [0, 1]: an eye crop 2.3 times the eye-corner
  distance, centred on the corners' midpoint and rotated to their line. Outputs:
  71 eye-contour points (eyelids, halos, brow) and 5 iris points (centre first),
  x, y, z in crop pixels. Trained on the subject's right eye (image left): the
  left eye's crop is mirrored before inference and the result mirrored back.

Both run with ``ai-edge-litert`` (``ai_edge_litert.interpreter.Interpreter``), one
interpreter per model per landmarker object, created on first use.

Crops. MPIIFaceGaze annotates six points per frame (eye and mouth corners), so no
face detector is needed: the crop's roll is the eye line's, as in MediaPipe's
pipeline, and its centre and side reproduce the crop MediaPipe's tracking takes
from the landmarks (1.5 times their extent), fitted on four real faces
(:data:`ROI_SIDE_EYE_MOUTH`, ...). Without six points a face box (dlib HOG, then
CNN) gives a first, unrotated crop, and a second pass runs in the crop of the
first pass's landmarks. Crops are warped with ``cv2.warpAffine``; the points are
mapped back with the inverse affine (pixel centres at integers in the image,
model outputs in units of the crop's pixels from its edge), z scaled like x.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from nvsynth.core.assets import FACE_LANDMARK_MODEL, IRIS_LANDMARK_MODEL, resolve
from nvsynth.core.config import Config
from nvsynth.core.errors import AssetError, ReconError
from nvsynth.recon.eyes import EYE_CORNER_VERTICES, N_CONTOUR, N_IRIS, Irises, iris_3d
from nvsynth.recon.landmarks import Box, DlibLandmarker, Landmarks, NoFaceError
from nvsynth.recon.template import N_VERTICES, load_landmark_map

FACE_INPUT = 192
IRIS_INPUT = 64
#: Face crop from six points (eye line = x axis, ``ed`` = eye-to-mouth distance across it,
#: ``eo`` = outer-eye-corner distance): side = A * ed + B * eo, centre = eye centre + C * ed
#: toward the mouth. Fitted to the converged landmark crops of breakingbad, einstein, takeo and
#: the sample subject (side within 0.96-1.08 of them).
ROI_SIDE_EYE_MOUTH = 1.5
ROI_SIDE_EYE_WIDTH = 2.0
ROI_CENTRE_BELOW_EYES = 0.5
#: MediaPipe's crop from landmarks: their extent along the eye line and across it, times 1.5.
LANDMARK_ROI_SCALE = 1.5
#: First crop from a dlib face box (side times this, unrotated); a landmark crop follows.
BOX_ROI_SCALE = 1.7
#: MediaPipe Iris crop: 2.3 times the eye-corner distance.
IRIS_ROI_SCALE = 2.3
#: Default of ``recon.min_face_presence`` (MediaPipe's own tracking threshold too). Measured
#: presence: real faces 0.95-1.00 (0.78 at the least on rotated, shrunk, noisily cropped copies);
#: heavy blur (Gaussian sigma 0.2 x eye width) <= 0.02; random noise <= 2e-4; flat grey <= 2e-5.
DEFAULT_MIN_FACE_PRESENCE = 0.5
#: Mesh vertices whose line sets the roll of the landmark crop (MediaPipe: right and left outer eye corners).
ROLL_VERTICES = (33, 263)


@dataclass(frozen=True)
class Roi:
    """A square, rotated crop: centre (source pixels), side (pixels), roll (radians, image y down)."""

    cx: float
    cy: float
    side: float
    angle: float

    def affine(self, n: int) -> NDArray[np.float64]:
        """(2, 3) source pixel -> crop pixel of an ``n`` x ``n`` crop (pixel centres at integers)."""
        c, s, k = np.cos(self.angle), np.sin(self.angle), n / self.side
        R = k * np.array([[c, s], [-s, c]])
        t = np.full(2, (n - 1) / 2.0) - R @ np.array([self.cx, self.cy])
        return np.c_[R, t]

    @classmethod
    def from_six(cls, landmarks_6: ArrayLike) -> Roi:
        """The face crop from the annotation's six points (MPIIFaceGaze order, see ``nvsynth.core.ibug68.MPII_SIX``)."""
        p = np.asarray(landmarks_6, dtype=np.float64).reshape(6, 2)
        eye_r, eye_l, eyes, mouth = p[0:2].mean(0), p[2:4].mean(0), p[:4].mean(0), p[4:].mean(0)
        ex = eye_l - eye_r
        eo = float(np.linalg.norm(p[3] - p[0]))
        if not np.all(np.isfinite(p)) or eo < 1.0 or np.linalg.norm(ex) < 1.0:
            raise NoFaceError("annotation landmarks are degenerate")
        ex = ex / np.linalg.norm(ex)
        ey = np.array([-ex[1], ex[0]])
        ed = float((mouth - eyes) @ ey)
        if ed < 1.0:
            raise NoFaceError("annotation landmarks are degenerate (mouth not below the eyes)")
        c = eyes + ROI_CENTRE_BELOW_EYES * ed * ey
        side = ROI_SIDE_EYE_MOUTH * ed + ROI_SIDE_EYE_WIDTH * eo
        return cls(float(c[0]), float(c[1]), side, float(np.arctan2(ex[1], ex[0])))

    @classmethod
    def from_points(cls, dense: ArrayLike, scale: float = LANDMARK_ROI_SCALE) -> Roi:
        """MediaPipe's crop from landmarks: rolled to the outer eye corners, ``scale`` x their extent."""
        d = np.asarray(dense, dtype=np.float64)[:, :2]
        v = d[ROLL_VERTICES[1]] - d[ROLL_VERTICES[0]]
        a = float(np.arctan2(v[1], v[0]))
        c, s = np.cos(a), np.sin(a)
        R = np.array([[c, s], [-s, c]])  # image -> eye-line frame
        q = d @ R.T
        lo, hi = q.min(axis=0), q.max(axis=0)
        centre = R.T @ ((lo + hi) / 2.0)
        return cls(float(centre[0]), float(centre[1]), float(scale * np.max(hi - lo)), a)

    @classmethod
    def from_corners(cls, start: ArrayLike, end: ArrayLike, scale: float = IRIS_ROI_SCALE) -> Roi:
        """MediaPipe Iris's eye crop: centred on the corners' midpoint, rolled to their line, ``scale`` x apart."""
        a, b = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
        c, v = (a + b) / 2.0, b - a
        return cls(float(c[0]), float(c[1]), scale * float(np.linalg.norm(v)), float(np.arctan2(v[1], v[0])))

    @classmethod
    def from_box(cls, box: Box, scale: float = BOX_ROI_SCALE) -> Roi:
        """An unrotated first crop around a dlib face box."""
        side = scale * max(box.width, box.height)
        return cls((box.left + box.right) / 2.0 - 0.5, (box.top + box.bottom) / 2.0 - 0.5, side, 0.0)


@dataclass(frozen=True)
class FaceMesh:
    """One Face Mesh pass: the 468 points (source pixels; z relative depth, same scale), presence, crop."""

    points: NDArray[np.float64]  # (468, 3)
    presence: float
    roi: Roi


def crop(
    image: NDArray[np.uint8], roi: Roi, n: int, flip: bool = False
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """The model input (1, n, n, 3) float RGB in [0, 1] and the source -> crop affine (before any flip)."""
    A = roi.affine(n)
    patch = cv2.warpAffine(image, A, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    code = cv2.COLOR_GRAY2RGB if patch.ndim == 2 else cv2.COLOR_BGR2RGB
    rgb = cv2.cvtColor(patch, code)
    if flip:
        rgb = rgb[:, ::-1]
    return (rgb.astype(np.float32) * np.float32(1.0 / 255.0))[None], A


def to_source(out: NDArray[np.floating], A: NDArray[np.float64], n: int, flip: bool = False) -> NDArray[np.float64]:
    """Model points (k, 3) in crop pixels from the crop's edge -> source pixels (x, y) and z in source scale."""
    p = np.asarray(out, dtype=np.float64).reshape(-1, 3).copy()
    if flip:
        p[:, 0] = n - p[:, 0]
    Ai = cv2.invertAffineTransform(A)
    xy = (p[:, :2] - 0.5) @ Ai[:, :2].T + Ai[:, 2]
    return np.c_[xy, p[:, 2] * float(np.linalg.norm(Ai[:, 0]))]


class _Model:
    """A LiteRT interpreter for one model, with its input shape and outputs picked by size."""

    def __init__(self, path: Path, n: int, output_sizes: tuple[int, ...], threads: int) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ReconError(
                "recon.detector 'mediapipe' needs the LiteRT runtime: pip install ai-edge-litert"
            ) from None
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise AssetError(f"{path}: not a loadable TFLite model ({str(err).splitlines()[0]})") from None
        inp = self.interpreter.get_input_details()
        sizes = {int(np.prod(d["shape"])): d["index"] for d in self.interpreter.get_output_details()}
        if len(inp) != 1 or list(inp[0]["shape"]) != [1, n, n, 3] or any(k not in sizes for k in output_sizes):
            raise AssetError(f"{path}: not the expected MediaPipe model (input 1x{n}x{n}x3, outputs {output_sizes})")
        self.input = inp[0]["index"]
        self.outputs = [sizes[k] for k in output_sizes]

    def __call__(self, x: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        self.interpreter.set_tensor(self.input, x)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i).ravel() for i in self.outputs]


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0))))


class MediaPipeLandmarker:
    """The ``mediapipe`` landmark backend: 468 dense points, 68 picked from them, both irises.

    Each worker process builds its own instance; the interpreters are created on
    first use and kept by the instance (nothing is shared between processes).
    """

    name = "mediapipe"

    def __init__(
        self,
        face_model: Path,
        iris_model: Path,
        landmark_map: ArrayLike,
        min_face_presence: float = DEFAULT_MIN_FACE_PRESENCE,
        *,
        refine: bool = False,
        iris: bool = True,
        threads: int = 1,
    ) -> None:
        """``refine``: a second Face Mesh pass in the crop of the first pass's landmarks (six-point crops;
        box crops always get it). Off by default: it did not measurably help (68-point error on the labelled
        faces 0.119 -> 0.113, 0.106 -> 0.111, 0.064 -> 0.061; on 36 rotated, shrunk, noisily cropped copies
        0.118 -> 0.111, 0.108 -> 0.112, 0.062 -> 0.060) and doubles the Face Mesh cost.
        ``iris``: run MediaPipe Iris too. ``threads``: LiteRT threads per model."""
        self.face_model, self.iris_model = Path(face_model), Path(iris_model)
        self.landmark_map = np.asarray(landmark_map, dtype=np.int64)
        if self.landmark_map.shape != (68,):
            raise ValueError("landmark map must hold 68 vertex indices")
        self.min_face_presence = float(min_face_presence)
        self.refine, self.run_iris, self.threads = refine, iris, threads
        self._face: _Model | None = None
        self._iris: _Model | None = None
        self._detector: DlibLandmarker | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> MediaPipeLandmarker:
        """Model files from ``assets.*`` (or the environment, cache, download), map and threshold from ``cfg``."""
        a = cfg.assets
        return cls(
            resolve(FACE_LANDMARK_MODEL, a.face_landmark_model, a.cache_dir),
            resolve(IRIS_LANDMARK_MODEL, a.iris_landmark_model, a.cache_dir),
            load_landmark_map(cfg),
            cfg.recon.min_face_presence,
        )

    def load(self) -> None:
        """Create both interpreters now (a missing runtime or a bad model file fails here, in one line)."""
        _ = self.face_net
        if self.run_iris:
            _ = self.iris_net

    @property
    def face_net(self) -> _Model:
        if self._face is None:
            self._face = _Model(self.face_model, FACE_INPUT, (3 * N_VERTICES, 1), self.threads)
        return self._face

    @property
    def iris_net(self) -> _Model:
        if self._iris is None:
            self._iris = _Model(self.iris_model, IRIS_INPUT, (3 * N_CONTOUR, 3 * N_IRIS), self.threads)
        return self._iris

    # -- the models ------------------------------------------------------------------------------

    def face_mesh(self, image: NDArray[np.uint8], roi: Roi) -> FaceMesh:
        """One Face Mesh pass in ``roi`` (no presence gate)."""
        x, A = crop(image, roi, FACE_INPUT)
        pts, logit = self.face_net(x)
        return FaceMesh(to_source(pts, A, FACE_INPUT), _sigmoid(float(logit[0])), roi)

    def irises(self, image: NDArray[np.uint8], dense: ArrayLike) -> Irises:
        """MediaPipe Iris on both eyes, cropped from the dense points' eye corners."""
        d = np.asarray(dense, dtype=np.float64)[:, :2]
        contour, iris = np.empty((2, N_CONTOUR, 2)), np.empty((2, N_IRIS, 2))
        for eye in (0, 1):
            roi = Roi.from_corners(*d[EYE_CORNER_VERTICES[eye]])
            flip = eye == 1
            x, A = crop(image, roi, IRIS_INPUT, flip)
            con, iri = self.iris_net(x)
            contour[eye] = to_source(con, A, IRIS_INPUT, flip)[:, :2]
            iris[eye] = to_source(iri, A, IRIS_INPUT, flip)[:, :2]
        return Irises(contour, iris)

    # -- the backend -------------------------------------------------------------------------------

    def __call__(self, image: NDArray[np.uint8], landmarks_6: ArrayLike | None = None) -> Landmarks:
        """Landmarks of the face: in the six points' crop when given, else in a detected face box."""
        if landmarks_6 is None:
            if self._detector is None:
                self._detector = DlibLandmarker()
            boxes, source = self._detector.detect_faces(image)
            if not boxes:
                raise NoFaceError("no face found (dlib HOG and CNN)")
            return self.landmarks_in_box(image, boxes[0], source)
        roi = Roi.from_six(landmarks_6)
        return self._landmarks(image, roi, "annotation", passes=2 if self.refine else 1)

    def landmarks_in_box(self, image: NDArray[np.uint8], box: Box, source: str) -> Landmarks:
        """Landmarks in a face box from ``source`` ("hog" or "cnn"): an unrotated crop, then a landmark crop."""
        return self._landmarks(image, Roi.from_box(box), source, passes=2)

    def _landmarks(self, image: NDArray[np.uint8], roi: Roi, source: str, passes: int) -> Landmarks:
        h, w = image.shape[:2]
        if not (0.0 <= roi.cx < w and 0.0 <= roi.cy < h) or roi.side < 8.0:
            raise NoFaceError("face crop lies outside the image or is too small")
        mesh = self.face_mesh(image, roi)
        for _ in range(passes - 1):
            if mesh.presence < self.min_face_presence:
                break
            mesh = self.face_mesh(image, Roi.from_points(mesh.points))
        if not mesh.presence >= self.min_face_presence:
            raise NoFaceError(
                f"no face: MediaPipe face presence {mesh.presence:.3f} below recon.min_face_presence "
                f"{self.min_face_presence:g}"
            )
        dense = mesh.points
        if not np.all(np.isfinite(dense)):
            raise NoFaceError("MediaPipe Face Mesh returned non-finite points")
        irises = self.irises(image, dense) if self.run_iris else None
        lo, hi = dense[:, :2].min(axis=0), dense[:, :2].max(axis=0)
        return Landmarks(
            points=dense[self.landmark_map, :2].copy(),
            box=Box(float(lo[0]), float(lo[1]), float(hi[0]) + 1.0, float(hi[1]) + 1.0),
            detector=f"{self.name}/{source}",
            boxes=passes,
            dense=dense,
            presence=mesh.presence,
            irises=irises,
        )


def check_mediapipe(cfg: Config) -> None:
    """Fail early, in one line, when the mediapipe backend's runtime or model files are missing."""
    MediaPipeLandmarker.from_config(cfg).load()


def dense_record_fields(
    lms: Landmarks, fit_vertices: ArrayLike, camera_matrix: ArrayLike, dist_coeffs: ArrayLike
) -> dict[str, NDArray | float]:
    """The recon record's optional dense fields of a frame (empty for 68-point backends).

    ``fit_vertices``: the fitted mesh (468, 3) in camera mm; ``iris_3d`` is each iris
    centre's camera ray met with the plane of its fitted eyelid (:func:`recon.eyes.iris_3d`).
    """
    out: dict[str, NDArray | float] = {}
    if lms.dense is not None:
        out["dense_2d"] = np.asarray(lms.dense, dtype=np.float32)
    if lms.presence is not None:
        out["face_presence"] = float(lms.presence)
    if lms.irises is not None:
        ir = lms.irises
        out["eye_contour_2d"] = ir.contour.astype(np.float32)
        out["iris_2d"] = ir.iris.astype(np.float32)
        out["iris_radius_px"] = ir.radius.astype(np.float32)
        out["iris_3d"] = iris_3d(fit_vertices, ir.centre, camera_matrix, dist_coeffs).astype(np.float32)
    return out

"""True heads: a deformed canonical face mesh, textured from a public-domain portrait.

Texture. The template (MediaPipe's canonical mesh, :mod:`nvsynth.recon.template`)
is fitted to the portrait's 68 landmarks with nvsynth's own fit
(:func:`nvsynth.recon.fit.fit_landmarks`, in a pinhole camera of focal
2 x the portrait's longer side); after one butterfly subdivision
(:func:`nvsynth.recon.fit.subdivision`) each vertex's texture coordinate is its
projection into the portrait (where the portrait is turned so far that one
side of the face is partly hidden, that side takes its mirror's texels). So
every vertex carries the portrait's texel of its part of the face (the
eye-corner vertices its eye corners, ...).

Shape. The geometry is *not* the portrait fit: it is the subdivided template,
scaled to an outer-eye-corner distance drawn from 86-96 mm, then

* per-axis scales: height x U(0.94, 1.08), depth x U(0.85, 1.20) (the fit ties
  the depth to the width);
* a smooth random field: six Gaussian radial-basis bumps (centres at random
  vertices, widths 25-45 mm, amplitudes N(0, 2.5 mm) in x/y and N(0, 3.5 mm) in z);
* a different nose: the tip pushed out or in by U(-3, 7) mm and the nose made
  U(-15, +25) % wider, with a Gaussian falloff of 12 mm around the tip;
* a different jaw: below the mouth, the width scaled by U(-10, +10) %, the chin
  moved U(-6, 6) mm down and U(-5, 5) mm forward, blended in smoothly.

Head frame and units follow :mod:`nvsynth.core.geometry` (x right, y down,
z away from the camera for a frontal face; mm).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from nvsynth.core.geometry import project
from nvsynth.recon.fit import FitModel, fit_landmarks, subdivision
from nvsynth.recon.landmarks import DlibLandmarker, read_pts
from nvsynth.recon.template import FaceTemplate, load_landmark_map, load_template
from nvsynth.recon.visibility import visible_vertices

#: Portraits available offline: two public-domain ones bundled with the test dependencies, three
#: hand-labelled photos read at run time from ``$NVSYNTH_SHARED/faces`` (never copied).
BUNDLED = ("astronaut", "hopper")
SHARED_FACES = {"breakingbad": "breakingbad.jpg", "einstein": "einstein.jpg", "takeo": "takeo.ppm"}
PORTRAITS = (*BUNDLED, *SHARED_FACES)
#: Context kept around the landmarks' bounding box when the portrait is cropped, as a share of its size.
CROP_MARGIN = 0.6
#: A side of the portrait's face with this much larger a share of hidden vertices is textured by its mirror.
MIRROR_SIDE_SHARE = 0.05


@dataclass(frozen=True)
class Portrait:
    name: str
    image: NDArray[np.uint8]  # BGR, cropped around the face
    landmarks: NDArray[np.float64]  # (68, 2) iBUG points, pixels of ``image``
    source: str  # where the landmarks came from: "dlib" or "hand-labelled"


@dataclass(frozen=True)
class TrueHead:
    """A textured head mesh in its head frame (mm)."""

    name: str
    vertices: NDArray[np.float64]  # (V, 3) head frame, mm
    faces: NDArray[np.int32]  # (F, 3), the template's winding (normals out of the face)
    mirror: NDArray[np.int32]  # (V,) left/right mirror vertex (of the template's topology)
    uv: NDArray[np.float64]  # (V, 2) texture coordinates, pixels of ``texture``
    texture: NDArray[np.uint8]  # BGR
    landmark_vertices: NDArray[np.int64]  # (68,) vertex of each iBUG landmark (the landmark map)
    displacement_mm: float  # RMS distance to the similarity-aligned template (shape change)


def shared_dir() -> Path | None:
    """``$NVSYNTH_SHARED``, else ``../shared`` beside the repository; ``None`` when absent."""
    env = os.environ.get("NVSYNTH_SHARED")
    d = Path(env) if env else Path(__file__).resolve().parents[3] / "shared"
    return d if d.is_dir() else None


def _crop(image: NDArray[np.uint8], pts: NDArray[np.float64]) -> tuple[NDArray[np.uint8], NDArray[np.float64]]:
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    m = CROP_MARGIN * (hi - lo)
    h, w = image.shape[:2]
    x0, y0 = (max(0, int(v)) for v in lo - m)
    x1, y1 = min(w, int(np.ceil(hi[0] + m[0]))), min(h, int(np.ceil(hi[1] + m[1])))
    return np.ascontiguousarray(image[y0:y1, x0:x1]), pts - np.array([x0, y0], dtype=np.float64)


def load_portrait(name: str, landmarker: DlibLandmarker | None = None) -> Portrait:
    """A portrait by name (:data:`PORTRAITS`) with its 68 landmarks, cropped around the face."""
    if name in BUNDLED:
        if name == "astronaut":
            from skimage import data

            image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
        else:
            import matplotlib.cbook

            image = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
        pts = (landmarker or DlibLandmarker())(image).points
        source = "dlib"
    elif name in SHARED_FACES:
        d = shared_dir()
        if d is None:
            raise FileNotFoundError(f"portrait {name!r} needs the shared faces folder ($NVSYNTH_SHARED/faces)")
        path = d / "faces" / SHARED_FACES[name]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read {path}")
        pts = read_pts(path.with_suffix(".pts"))
        source = "hand-labelled"
    else:
        raise ValueError(f"unknown portrait {name!r}; choose from {', '.join(PORTRAITS)}")
    crop, local = _crop(image, np.asarray(pts, dtype=np.float64))
    return Portrait(name, crop, local, source)


def template_from_env() -> FaceTemplate:
    """The canonical face mesh from ``$NVSYNTH_FACE_TEMPLATE`` (else ``$NVSYNTH_SHARED/assets``)."""
    env = os.environ.get("NVSYNTH_FACE_TEMPLATE")
    if env:
        return load_template(Path(env))
    d = shared_dir()
    if d is None:
        raise FileNotFoundError("set NVSYNTH_FACE_TEMPLATE to MediaPipe's canonical_face_model.obj")
    return load_template(d / "assets" / "canonical_face_model.obj")


def portrait_uv(portrait: Portrait, model: FitModel, steps: int = 1) -> NDArray[np.float64]:
    """Texture coordinates of the subdivided template fitted to the portrait (pixels)."""
    h, w = portrait.image.shape[:2]
    f = 2.0 * max(h, w)
    K = np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    fit = fit_landmarks(model, portrait.landmarks, K)
    sub = subdivision(model.faces, model.template.mirror, steps)
    verts = sub.apply(fit.vertices)
    uv = project(verts, K)
    # A turned portrait hides part of one side: texture that whole side with its mirror image
    # (the seam is the midline, where a vertex is its own mirror, so the texture stays continuous).
    hidden = ~visible_vertices(verts, sub.faces, K)
    x = sub.apply(model.template.vertices)[:, 0]
    share = [float(hidden[side].mean()) for side in (x < -1e-6, x > 1e-6)]
    if abs(share[0] - share[1]) > MIRROR_SIDE_SHARE:
        side = (x < -1e-6) if share[0] > share[1] else (x > 1e-6)
        uv[side] = uv[sub.mirror[side]]
    return np.clip(uv, 0.0, [w - 1.0, h - 1.0])


def _rbf_field(rng: np.random.Generator, X: NDArray[np.float64], n: int = 6) -> NDArray[np.float64]:
    D = np.zeros_like(X)
    for c in rng.choice(len(X), size=n, replace=False):
        sigma = rng.uniform(25.0, 45.0)
        amp = rng.normal(0.0, [2.5, 2.5, 3.5])
        r2 = np.sum((X - X[c]) ** 2, axis=1)
        D += np.exp(-r2 / (2.0 * sigma**2))[:, None] * amp
    return D


def _smoothstep(t: NDArray[np.float64]) -> NDArray[np.float64]:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def deform(
    X: NDArray[np.float64], lm: NDArray[np.int64], rng: np.random.Generator
) -> tuple[NDArray[np.float64], dict[str, float]]:
    """The true shape from the (subdivided) template ``X`` (head frame, mm); see the module docstring."""
    io = float(np.linalg.norm(X[lm[45]] - X[lm[36]]))
    params = {
        "eye_distance_mm": rng.uniform(86.0, 96.0),
        "height": rng.uniform(0.94, 1.08),
        "depth": rng.uniform(0.85, 1.20),
        "nose_out_mm": rng.uniform(-3.0, 7.0),
        "nose_width": rng.uniform(-0.15, 0.25),
        "jaw_width": rng.uniform(-0.10, 0.10),
        "chin_down_mm": rng.uniform(-6.0, 6.0),
        "chin_forward_mm": rng.uniform(-5.0, 5.0),
    }
    s = params["eye_distance_mm"] / io
    Y = X * s * np.array([1.0, params["height"], params["depth"]])
    Y = Y + _rbf_field(rng, Y)
    # nose: around the tip (the vertex nearest the camera on the midline)
    mid = np.abs(Y[:, 0]) < 3.0
    tip = int(np.flatnonzero(mid)[np.argmin(Y[mid, 2])])
    g = np.exp(-np.sum((Y - Y[tip]) ** 2, axis=1) / (2.0 * 12.0**2))
    Y[:, 2] -= params["nose_out_mm"] * g
    Y[:, 0] += params["nose_width"] * (Y[:, 0] - Y[tip, 0]) * g
    # jaw: below the mouth corners, blended in towards the chin
    y_mouth = 0.5 * (Y[lm[48], 1] + Y[lm[54], 1])
    w = _smoothstep((Y[:, 1] - y_mouth) / max(Y[lm[8], 1] - y_mouth, 1.0))
    Y[:, 0] *= 1.0 + params["jaw_width"] * w
    Y[:, 1] += params["chin_down_mm"] * w
    Y[:, 2] -= params["chin_forward_mm"] * w
    return Y, params


def similarity_rms(A: NDArray[np.float64], B: NDArray[np.float64]) -> float:
    """RMS distance (mm) between point sets after the best similarity transform of ``B`` onto ``A`` (Umeyama)."""
    ma, mb = A.mean(axis=0), B.mean(axis=0)
    a, b = A - ma, B - mb
    U, S, Vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.diag([1.0, 1.0, d])
    R = U @ D @ Vt
    scale = float(np.trace(np.diag(S) @ D) / np.sum(b * b))
    return float(np.sqrt(np.mean(np.sum((a - scale * b @ R.T) ** 2, axis=1))))


def build_true_head(
    portrait: Portrait, template: FaceTemplate, seed: int, model: FitModel | None = None, steps: int = 1
) -> tuple[TrueHead, dict[str, float]]:
    """The true head of ``portrait`` with the deformation drawn from ``seed``; returns it and its parameters."""
    lmap = load_landmark_map()
    model = model or FitModel(template, lmap)
    uv = portrait_uv(portrait, model, steps)
    sub = subdivision(template.faces, template.mirror, steps)
    X = sub.apply(template.vertices)  # the template's vertices keep their indices
    lm = np.asarray(lmap, dtype=np.int64)
    Y, params = deform(X, lm, np.random.default_rng(seed))
    rms = similarity_rms(Y, X)
    head = TrueHead(
        name=portrait.name,
        vertices=Y,
        faces=np.asarray(sub.faces, dtype=np.int32),
        mirror=np.asarray(sub.mirror, dtype=np.int32),
        uv=uv,
        texture=portrait.image,
        landmark_vertices=lm,
        displacement_mm=rms,
    )
    return head, {**params, "rms_vs_template_mm": rms}

"""Measure nvsynth's own dlib-68 -> template-vertex map on real faces (and the face-box rule).

Faces: the three hand-labelled iBUG photos in ``../shared/faces`` and
scikit-image's astronaut (landmarks from dlib in its HOG box).

Map
---
1. Place the template on each face with a scaled-orthographic camera
   (3D rotation, model-frame x/y scales, 2D shift). Start from geometric anchors found on the
   mesh itself -- nose tip (the vertex nearest the viewer), chin (lowest
   midline vertex), the two ear-level extremes of the outline -- then refine
   ICP-style: every interior landmark (17-67) takes the nearest projected
   front-facing vertex and the pose is refitted to those pairs.
2. For every landmark, choose the vertex whose projections lie nearest to the
   labelled point over all faces (distance / outer-eye-corner distance, capped
   at 0.3 per face so that one badly fitting face cannot decide alone),
   symmetrically: a left/right landmark pair takes a mirror pair of vertices,
   a midline landmark a midline vertex, and a jaw landmark a vertex of the
   mesh's outline (the silhouette of a frontal face; recon re-picks jaw
   vertices on the silhouette of each pose anyway). Repeat (pose refit on the map) a few times.
3. Score: refit each face's pose to a map's 51 interior correspondences and
   report the mean distance over the 68 (and the 51) points divided by the
   outer-eye-corner distance. Ours is scored in-sample and leave-one-face-out;
   ``--compare FILE`` scores another map (e.g. ``../shared/assets/dlib68_to_mp468.json``,
   key ``empirical``) the same way.

Box (``--box``): fit ``side = A*|eyes-mouth| + B*|outer eye corners|`` and the
centre offset along the eyes-to-mouth direction to dlib's own HOG boxes.

Usage::

    python scripts/measure_landmark_map.py --shared ../shared \
        --out supplementary/face_model/landmark_map.json --compare ../shared/assets/dlib68_to_mp468.json --box
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nvsynth.core import ibug68
from nvsynth.core.atomic import write_text
from nvsynth.recon.landmarks import DlibLandmarker, read_pts
from nvsynth.recon.template import FaceTemplate, load_template

#: iBUG left/right landmark pairs, and the landmarks on the midline.
IBUG_PAIRS = tuple((int(a), int(b)) for a, b in enumerate(ibug68.MIRROR) if a < b)
IBUG_MIDLINE = tuple(int(a) for a, b in enumerate(ibug68.MIRROR) if a == b)
#: Per-face cost cap (in outer-eye distances) when choosing a vertex.
TRUNCATE = 0.3


@dataclass(frozen=True)
class Face:
    name: str
    image: NDArray[np.uint8]
    points: NDArray[np.float64]  # (68, 2), 0-based pixels
    source: str  # "hand-labelled" or "dlib"


def load_faces(shared: Path, landmarker: DlibLandmarker) -> list[Face]:
    faces = []
    for name in ("breakingbad.jpg", "einstein.jpg", "takeo.ppm"):
        img = cv2.imread(str(shared / "faces" / name), cv2.IMREAD_COLOR)
        faces.append(Face(name.split(".")[0], img, read_pts(shared / "faces" / (name.split(".")[0] + ".pts")), "iBUG"))
    from skimage import data

    ast = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    lm = landmarker(ast)
    faces.append(Face("astronaut", ast, lm.points, "dlib"))
    return faces


# --- scaled-orthographic pose ---------------------------------------------------------------


@dataclass(frozen=True)
class OrthoPose:
    rvec: NDArray[np.float64]
    scale: NDArray[np.float64]  # (2,) model-frame scale of x (and z) and of y
    shift: NDArray[np.float64]

    @property
    def rotation(self) -> NDArray[np.float64]:
        return cv2.Rodrigues(self.rvec)[0]

    def project(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        sx, sy = self.scale
        return ((X * np.array([sx, sy, sx])) @ self.rotation.T)[:, :2] + self.shift

    def front_facing(self, normals: NDArray[np.float64]) -> NDArray[np.bool_]:
        return (normals @ self.rotation.T)[:, 2] < -0.05  # camera looks along +z


def fit_ortho(X: NDArray[np.float64], x: NDArray[np.float64], init: OrthoPose) -> OrthoPose:
    """Least-squares pose (rotation, x/y scales, shift) of model points X onto image points x."""

    def res(p: NDArray[np.float64]) -> NDArray[np.float64]:
        pose = OrthoPose(p[:3], np.exp(p[3:5]), p[5:7])
        return (pose.project(X) - x).ravel()

    p0 = np.r_[init.rvec, np.log(init.scale), init.shift]
    r = least_squares(res, p0, method="lm")
    return OrthoPose(r.x[:3], np.exp(r.x[3:5]), r.x[5:7])


def vertex_normals(t: FaceTemplate) -> NDArray[np.float64]:
    v, f = t.vertices, t.faces
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def outline_vertices(t: FaceTemplate) -> NDArray[np.int64]:
    """Vertices on the mesh's open boundary (the face outline)."""
    e = np.sort(np.concatenate([t.faces[:, [0, 1]], t.faces[:, [1, 2]], t.faces[:, [2, 0]]]), axis=1)
    uniq, count = np.unique(e, axis=0, return_counts=True)
    return np.unique(uniq[count == 1])


def anchors(t: FaceTemplate) -> dict[int, int]:
    """Landmark -> vertex for four points found from the mesh's geometry alone."""
    v = t.vertices
    mid = np.flatnonzero(t.mirror == np.arange(len(v)))
    return {
        ibug68.NOSE_TIP: int(np.argmin(v[:, 2])),  # nearest the viewer
        ibug68.CHIN: int(mid[np.argmax(v[mid, 1])]),  # lowest midline vertex
        int(ibug68.JAW[0]): int(np.argmin(v[:, 0])),  # outline extremes at ear level
        int(ibug68.JAW[-1]): int(np.argmax(v[:, 0])),
    }


def initial_pose(t: FaceTemplate, pts: NDArray[np.float64]) -> OrthoPose:
    a = anchors(t)
    lm = np.array(list(a.keys()))
    X = t.vertices[list(a.values())]
    # 2D similarity of the anchors' (x, y) onto the image points, then a 3D refit.
    M, _ = cv2.estimateAffinePartial2D(X[:, :2].astype(np.float32), pts[lm].astype(np.float32))
    s = float(np.hypot(M[0, 0], M[1, 0]))
    roll = float(np.arctan2(M[1, 0], M[0, 0]))
    init = OrthoPose(np.array([0.0, 0.0, roll]), np.array([s, s]), M[:, 2].astype(np.float64))
    return fit_ortho(X, pts[lm], init)


def icp_pose(t: FaceTemplate, normals: NDArray[np.float64], pts: NDArray[np.float64], iters: int = 15) -> OrthoPose:
    pose = initial_pose(t, pts)
    for _ in range(iters):
        front = np.flatnonzero(pose.front_facing(normals))
        proj = pose.project(t.vertices[front])
        d = np.linalg.norm(proj[None, :, :] - pts[ibug68.INTERIOR, None, :], axis=2)
        idx = front[np.argmin(d, axis=1)]
        pose = fit_ortho(t.vertices[idx], pts[ibug68.INTERIOR], pose)
    return pose


def pose_from_map(t: FaceTemplate, pts: NDArray[np.float64], lmap: NDArray[np.int64], init: OrthoPose) -> OrthoPose:
    return fit_ortho(t.vertices[lmap[ibug68.INTERIOR]], pts[ibug68.INTERIOR], init)


# --- map ------------------------------------------------------------------------------------


def choose_map(
    t: FaceTemplate, normals: NDArray[np.float64], faces: list[Face], poses: list[OrthoPose]
) -> NDArray[np.int64]:
    """Per-landmark vertex with the least summed normalised distance, mirror-symmetric."""
    n_v = len(t.vertices)
    cost = np.zeros((ibug68.N_LANDMARKS, n_v))
    for face, pose in zip(faces, poses, strict=True):
        io = np.linalg.norm(face.points[ibug68.LEFT_EYE_OUTER] - face.points[ibug68.RIGHT_EYE_OUTER])
        proj = pose.project(t.vertices)
        d = np.linalg.norm(proj[None, :, :] - face.points[:, None, :], axis=2) / io
        d[:, ~pose.front_facing(normals)] += 10.0  # never pick a vertex that faces away
        cost += np.minimum(d, TRUNCATE)  # one badly fitting face must not decide alone
    out = np.full(ibug68.N_LANDMARKS, -1, dtype=np.int64)
    mirror = t.mirror
    # Jaw points lie on the face outline, which for a frontal view is the mesh's outline.
    off_outline = np.setdiff1d(np.arange(n_v), outline_vertices(t))
    cost[np.ix_(ibug68.JAW, off_outline)] += 10.0
    for a, b in IBUG_PAIRS:
        c = cost[a] + cost[b][mirror]
        v = int(np.argmin(c))
        out[a], out[b] = v, int(mirror[v])
    mid = np.flatnonzero(mirror == np.arange(n_v))
    for k in IBUG_MIDLINE:
        out[k] = int(mid[np.argmin(cost[k, mid])])
    assert (out >= 0).all()
    return out


def measure_map(t: FaceTemplate, faces: list[Face], rounds: int = 4) -> NDArray[np.int64]:
    normals = vertex_normals(t)
    poses = [icp_pose(t, normals, f.points) for f in faces]
    lmap = choose_map(t, normals, faces, poses)
    for _ in range(rounds):
        poses = [pose_from_map(t, f.points, lmap, p) for f, p in zip(faces, poses, strict=True)]
        new = choose_map(t, normals, faces, poses)
        if np.array_equal(new, lmap):
            break
        lmap = new
    return lmap


def score_map(t: FaceTemplate, face: Face, lmap: NDArray[np.int64]) -> tuple[float, float]:
    """(all-68 error, interior-51 error) after refitting the pose to the map, / outer-eye distance."""
    normals = vertex_normals(t)
    pose = pose_from_map(t, face.points, lmap, icp_pose(t, normals, face.points, iters=3))
    proj = pose.project(t.vertices[lmap])
    io = np.linalg.norm(face.points[ibug68.LEFT_EYE_OUTER] - face.points[ibug68.RIGHT_EYE_OUTER])
    d = np.linalg.norm(proj - face.points, axis=1) / io
    return float(d.mean()), float(d[ibug68.INTERIOR].mean())


def load_map(path: Path) -> NDArray[np.int64]:
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        data = data.get("indices", data.get("empirical"))
    return np.asarray(data, dtype=np.int64)


# --- face box -------------------------------------------------------------------------------


#: Augmentations for the box calibration: image scales and in-plane rotations (degrees).
BOX_SCALES = (0.8, 0.9, 1.0, 1.12, 1.25)
BOX_ROTATIONS = (-8.0, 0.0, 8.0)


def _hog_box_sample(
    landmarker: DlibLandmarker, image: NDArray[np.uint8], pts: NDArray[np.float64]
) -> tuple[float, float, float, float] | None:
    """(HOG side, |eyes-mouth|, |eye width|, centre offset along eyes->mouth / |eyes-mouth|)."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    dets, _scores, _ = landmarker.hog.run(gray, 0, -0.6)  # also below-threshold boxes
    c = pts.mean(axis=0)
    hit = [d for d in dets if d.left() <= c[0] <= d.right() and d.top() <= c[1] <= d.bottom()]
    if not hit:
        return None
    d = hit[0]
    side = float(d.right() + 1 - d.left())
    centre = np.array([(d.left() + d.right() + 1) / 2, (d.top() + d.bottom() + 1) / 2])
    eyes = pts[ibug68.MPII_SIX[:4]].mean(axis=0)  # the four eye corners
    mouth = pts[ibug68.MPII_SIX[4:]].mean(axis=0)  # the mouth corners
    em = float(np.linalg.norm(mouth - eyes))
    eo = float(np.linalg.norm(pts[ibug68.LEFT_EYE_OUTER] - pts[ibug68.RIGHT_EYE_OUTER]))
    along = float(np.dot(centre - eyes, (mouth - eyes) / em) / em)
    return side, em, eo, along


def calibrate_box(faces: list[Face], landmarker: DlibLandmarker) -> tuple[float, float, float]:
    """Fit the six-landmark box rule to dlib's HOG boxes of the labelled faces.

    Each face is also scaled and rotated a little (HOG boxes snap to its
    pyramid's grid, so one image alone gives a noisy sample).
    """
    rows = []
    for f in faces:
        c = f.points.mean(axis=0)
        per_face = []
        for s in BOX_SCALES:
            for deg in BOX_ROTATIONS:
                M = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), deg, s)
                h, w = f.image.shape[:2]
                img = cv2.warpAffine(f.image, M, (round(w * s), round(h * s)), flags=cv2.INTER_LINEAR)
                pts = f.points @ M[:, :2].T + M[:, 2]
                sample = _hog_box_sample(landmarker, img, pts)
                if sample is not None:
                    per_face.append(sample)
        if not per_face:
            print(f"  {f.name}: no HOG box on the labelled face; left out")
            continue
        arr = np.array(per_face)
        print(
            f"  {f.name}: {len(arr)} HOG boxes, side/(eyes-mouth) {np.median(arr[:, 0] / arr[:, 1]):.3f}, "
            f"side/(eye width) {np.median(arr[:, 0] / arr[:, 2]):.3f}, centre along {np.median(arr[:, 3]):.3f}"
        )
        rows.extend(per_face)
    arr = np.array(rows)
    (a, b), *_ = np.linalg.lstsq(arr[:, 1:3], arr[:, 0], rcond=None)
    c = float(np.median(arr[:, 3]))
    ratio = arr[:, 1:3] @ np.array([a, b]) / arr[:, 0]
    print(f"  box rule: side = {a:.3f}*|eyes-mouth| + {b:.3f}*|eye width|, centre along = {c:.3f} (median)")
    lo, hi = np.percentile(ratio, [10, 90])
    print(f"  predicted/HOG side: median {np.median(ratio):.3f}, 10-90% {lo:.3f}-{hi:.3f}")
    return float(a), float(b), c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--template", type=Path, default=None, help="canonical_face_model.obj (default: SHARED/assets)")
    ap.add_argument("--out", type=Path, default=None, help="write the measured map here (JSON)")
    ap.add_argument("--compare", type=Path, nargs="*", default=[], help="other maps to score the same way")
    ap.add_argument("--box", action="store_true", help="also calibrate the six-landmark face-box rule")
    args = ap.parse_args(argv)

    t = load_template(args.template or args.shared / "assets" / "canonical_face_model.obj")
    landmarker = DlibLandmarker()
    faces = load_faces(args.shared, landmarker)
    print("faces:", ", ".join(f"{f.name} ({f.source})" for f in faces))

    if args.box:
        print("face box vs dlib HOG:")
        calibrate_box(faces, landmarker)

    lmap = measure_map(t, faces)
    ours = np.array([score_map(t, f, lmap) for f in faces])
    loo = []
    for i, f in enumerate(faces):
        held = measure_map(t, faces[:i] + faces[i + 1 :])
        loo.append(score_map(t, f, held))
    loo = np.array(loo)
    print("score = mean point distance / outer-eye-corner distance (68 points | 51 interior)")
    names = [f.name for f in faces]
    print(f"  {'map':<28}" + "".join(f"{n:>20}" for n in names) + f"{'mean':>20}")

    def row(label: str, s: NDArray[np.float64]) -> None:
        cells = "".join(f"{a:>11.4f} |{b:>6.4f}" for a, b in s)
        print(f"  {label:<28}{cells}{s[:, 0].mean():>11.4f} |{s[:, 1].mean():>6.4f}")

    row("ours (in-sample)", ours)
    row("ours (leave-one-face-out)", loo)
    for path in args.compare:
        other = load_map(path)
        row(path.name[:28], np.array([score_map(t, f, other) for f in faces]))
        same = int((other == lmap).sum())
        print(f"    {same}/68 landmarks pick the same vertex as ours")

    if args.out is not None:
        payload = {
            "description": (
                "dlib 68 (iBUG order) -> MediaPipe canonical face mesh vertex, measured by "
                "scripts/measure_landmark_map.py; left/right symmetric"
            ),
            "measured_on": names,
            "score_in_sample": round(float(ours[:, 0].mean()), 4),
            "score_leave_one_out": round(float(loo[:, 0].mean()), 4),
            "indices": [int(i) for i in lmap],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, json.dumps(payload, indent=1) + "\n")
        print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

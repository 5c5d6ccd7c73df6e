"""Recon records of any length for the render benchmarks, from the bundled sample subject.

``nvsynth recon`` runs once on ``supplementary/sample/p00`` (six 1280x720
calibrated frames); its records are then cycled to ``frames`` records of
subject p00, each with its own frame index (so its views and appearance
differ), as a subject of MPIIFaceGaze's size (3,000 frames) would be.
The records keep pointing at the six sample images.

    python benchmarks/sample_records.py OBJ [--frames 3000]   # writes OBJ/p00/day01/00000.npz ...
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SAMPLE_RAW = REPO / "supplementary" / "sample"


def make_records(obj: Path, frames: int, subject: str = "p00", detector: str = "dlib") -> Path:
    """Write ``frames`` records of ``subject`` under ``obj``; returns the dataset root the records point into.

    ``detector``: ``recon.detector``; with ``mediapipe`` the subject's eyeball model (``eyeball.json``, which
    redirected gaze needs) is copied beside the records too.
    """
    import shutil

    from nvsynth.core.config import from_dict
    from nvsynth.recon.eyeball import eyeball_path
    from nvsynth.recon.record import ReconRecord
    from nvsynth.runtime.recon_run import run as run_recon

    with tempfile.TemporaryDirectory(prefix="nvsynth-sample-recon-") as tmp:
        first = Path(tmp)
        cfg = from_dict({"data": {"input": str(SAMPLE_RAW), "records": str(first)}, "recon": {"detector": detector}})
        run_recon(cfg, subjects="p00")
        records = sorted((ReconRecord.load(p) for p in (first / "p00").rglob("*.npz")), key=lambda r: r.frame_index)
        if eyeball_path(first / "p00").is_file():
            (Path(obj) / subject).mkdir(parents=True, exist_ok=True)
            shutil.copy(eyeball_path(first / "p00"), eyeball_path(Path(obj) / subject))
    if not records:
        raise SystemExit("recon produced no records for the sample subject")
    for i in range(frames):
        rec = dataclasses.replace(records[i % len(records)], frame_index=i, subject=subject)
        rec.save(Path(obj) / subject / "day01" / f"{i:05d}.npz")
    return SAMPLE_RAW


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("obj", type=Path, help="folder to write the records to (holds p00/)")
    ap.add_argument("--frames", type=int, default=3000, help="records to write (default 3000)")
    args = ap.parse_args(argv)
    raw = make_records(args.obj, args.frames)
    print(f"{args.frames} records in {args.obj / 'p00'}; data.input: {raw}")


if __name__ == "__main__":
    main()

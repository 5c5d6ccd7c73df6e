"""The ``nvsynth`` command line: recon, render, targets, inspect, demo.

This is the one place that turns the layers' exceptions (``nvsynth.core.errors``)
into what a user sees: one line, no traceback, and an exit code from
:func:`exit_code` (2 for usage and configuration mistakes, 1 otherwise).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nvsynth import __version__
from nvsynth.core.errors import ConfigError, NvsynthError


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="config file (default: ./config_path.yaml if present); CLI options override it",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvsynth",
        description=(
            "Novel-view synthesis for gaze datasets (MPII-NV). "
            "Run `recon` on MPIIFaceGaze, then `render -save OUTDIR`, then `inspect OUTDIR`."
        ),
    )
    parser.add_argument("--version", action="version", version=f"nvsynth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("recon", help="fit a metric 3D face mesh to every source frame")
    _add_config(p)
    p.add_argument("--subjects", metavar="LIST", help="comma-separated subjects, e.g. p00,p03 (default: all)")
    p.add_argument("--limit", type=int, metavar="K", help="at most K frames per subject")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: recon.workers)")
    p.add_argument("--force", action="store_true", help="recompute frames whose record already exists")
    p.add_argument(
        "--export-obj", action="store_true", default=None, help="also write a textured .obj/.mtl/.png per frame"
    )

    p = sub.add_parser("render", help="render novel head poses and write per-subject HDF5 files")
    _add_config(p)
    p.add_argument("-save", "--save", dest="save", type=Path, required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--subjects", metavar="LIST", help="comma-separated subjects (default: all with recon records)")
    p.add_argument("--views", type=int, metavar="N", help="views per source frame (default: render.views)")
    p.add_argument(
        "--pattern",
        choices=["xgaze-train", "eyediap-cs", "eyediap-ft", "gaussian", "file", "source"],
        help="head-pose pattern (default: render.pattern)",
    )
    p.add_argument(
        "--gaze",
        choices=["follow-head", "gaussian", "file"],
        help="gaze of the views: eyes turn with the head, or redirected eyeballs (default: render.gaze)",
    )
    p.add_argument("--seed", type=int, metavar="S", help="random seed (default: render.seed)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: render.workers)")
    p.add_argument("--limit", type=int, metavar="K", help="at most K source frames per subject")
    p.add_argument("--resume", action="store_true", help="finish interrupted subjects, skip finished ones")

    p = sub.add_parser("targets", help="make a head-pose (or gaze) pattern file from ETH-XGaze-style h5 files")
    p.add_argument(
        "--from-h5", nargs="+", type=Path, required=True, metavar="FILE", help="h5 files with face_head_pose"
    )
    p.add_argument(
        "-o", "--output", type=Path, required=True, metavar="POSES.npy", help="output (N, 2) pitch/yaw, radians"
    )
    p.add_argument(
        "--gaze", action="store_true", help="collect face_gaze instead (for render.gaze: file, render.gaze_file)"
    )

    p = sub.add_parser("inspect", help="summarize, validate and plot rendered h5 files")
    p.add_argument("path", type=Path, help="an h5 file or a folder of them")
    p.add_argument(
        "-o", "--out", type=Path, default=None, metavar="OUT", help="folder for the PNGs (default: no images)"
    )
    p.add_argument("--num", type=int, default=16, metavar="N", help="samples on the contact sheet (default 16)")
    p.add_argument("--index", type=int, default=None, metavar="I", help="print row I's labels and save its patch")

    p = sub.add_parser("demo", help="recon -> render -> inspect on the bundled sample subject")
    _add_config(p)
    p.add_argument("-o", "--out", type=Path, default=Path("nvsynth-demo"), metavar="OUTDIR", help="output folder")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    from nvsynth.core.config import load_config, with_overrides

    # The config is validated before a stage module is imported, so that a bad
    # config reports itself (exit 2) even where a stage cannot load.
    if args.command == "recon":
        cfg = with_overrides(
            load_config(args.config), {"recon.workers": args.workers, "recon.export_obj": args.export_obj}
        )
        from nvsynth.runtime.recon_run import run as run_recon

        return run_recon(cfg, subjects=args.subjects, limit=args.limit, force=args.force)
    if args.command == "render":
        cfg = with_overrides(
            load_config(args.config),
            {
                "render.views": args.views,
                "render.pattern": args.pattern,
                "render.seed": args.seed,
                "render.workers": args.workers,
                "render.gaze": args.gaze,
            },
        )
        from nvsynth.runtime.render_run import run as run_render

        return run_render(cfg, outdir=args.save, subjects=args.subjects, limit=args.limit, resume=args.resume)
    if args.command == "targets":
        from nvsynth.app.targets import targets_from_h5

        return targets_from_h5(args.from_h5, args.output, dataset="face_gaze" if args.gaze else "face_head_pose")
    if args.command == "inspect":
        from nvsynth.app.inspect import run as run_inspect

        return run_inspect(args.path, out=args.out, num=args.num, index=args.index)
    if args.command == "demo":
        from nvsynth.app.demo import run as run_demo

        return run_demo(args.out, config=args.config)
    raise AssertionError(args.command)


def exit_code(err: NvsynthError) -> int:
    """The exit code for an expected error: 2 for usage/configuration mistakes, 1 for the rest."""
    return 2 if isinstance(err, ConfigError) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except NvsynthError as err:
        print(f"nvsynth {args.command}: error: {err}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        print(f"nvsynth {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The ``nvsynth`` command line: recon, render, targets, inspect, demo.

This is the one place that turns the layers' exceptions (``nvsynth.core.errors``)
into what a user sees: one line, no traceback, and an exit code from
:func:`exit_code` (2 for usage and configuration mistakes, a wrong path
included; 1 otherwise). An ``OSError`` that no layer translated still ends in
one line naming its path. A run stopped by SIGINT or SIGTERM prints one line
that names the command which continues it (exit code 128 + the signal).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from nvsynth import __version__
from nvsynth.core.errors import ConfigError, NvsynthError, PathError, WorkerError, path_error

#: ``--input-kind`` (``data.kind`` in nvsynth.core.config; readers in nvsynth.datasets.registry).
DATA_KINDS = ("auto", "mpiifacegaze", "xgaze-h5", "folder")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="config file (default: ./config_path.yaml if present); CLI options override it",
    )


def _workers(text: str) -> int | str:
    """``--workers``: an integer >= 1 or ``auto``."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'auto', got {text!r}")
    return n


def _device(text: str) -> int | str:
    """``--device``: ``auto``, ``cpu`` or a CUDA device number."""
    if text in ("auto", "cpu"):
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 'auto', 'cpu' or a CUDA device number, got {text!r}")
    return int(text)


_WORKERS_HELP = "worker processes, or auto: one per usable CPU (default: {}.workers)"
_EXECUTOR_HELP = (
    "where the workers run: local (this process), process (worker processes), ray (one Ray actor per worker, "
    "on $RAY_ADDRESS or runtime.ray_address, else a local Ray; pip install 'nvsynth[ray]') (default: runtime.executor)"
)
#: ``--executor`` choices (``nvsynth.core.config.RuntimeConfig.executor``; a test checks they agree).
EXECUTORS = ("local", "process", "ray")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvsynth",
        description=(
            "Novel-view synthesis for gaze datasets (MPII-NV). "
            "Run `recon` on a dataset (MPIIFaceGaze, ETH-XGaze-layout h5, a folder of calibrated images), "
            "then `render -save OUTDIR`, then `inspect OUTDIR`."
        ),
    )
    parser.add_argument("--version", action="version", version=f"nvsynth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("recon", help="fit a metric 3D face mesh to every source frame")
    _add_config(p)
    p.add_argument(
        "--input",
        type=Path,
        metavar="PATH",
        help="the dataset (default: data.input): an MPIIFaceGaze root, an ETH-XGaze-layout .h5 or folder of them, "
        "or a folder with labels.csv",
    )
    p.add_argument(
        "--input-kind", choices=list(DATA_KINDS), help="the dataset reader (default: data.kind, auto: detected)"
    )
    p.add_argument("--subjects", metavar="LIST", help="comma-separated subjects, e.g. p00,p03 (default: all)")
    p.add_argument("--limit", type=int, metavar="K", help="at most K frames per subject")
    p.add_argument("--workers", type=_workers, metavar="N|auto", help=_WORKERS_HELP.format("recon"))
    p.add_argument("--executor", choices=list(EXECUTORS), help=_EXECUTOR_HELP)
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
    p.add_argument(
        "--normalization",
        choices=["mpii-nv", "eth-xgaze"],
        help="output normalization constants (default: render.normalization)",
    )
    p.add_argument("--workers", type=_workers, metavar="N|auto", help=_WORKERS_HELP.format("render"))
    p.add_argument("--executor", choices=list(EXECUTORS), help=_EXECUTOR_HELP)
    p.add_argument(
        "--device",
        type=_device,
        metavar="auto|cpu|N",
        help="GL device: auto (the GPU of CUDA device 0, i.e. the first of CUDA_VISIBLE_DEVICES, if NVIDIA EGL "
        "has one, else Mesa), cpu (Mesa llvmpipe) or CUDA device N (default: render.device)",
    )
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
        overrides = {
            "recon.workers": args.workers,
            "runtime.executor": args.executor,
            "recon.export_obj": args.export_obj,
            "data.input": args.input.resolve() if args.input is not None else None,
            "data.kind": args.input_kind,
        }
        cfg = with_overrides(load_config(args.config), overrides)
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
                "runtime.executor": args.executor,
                "render.normalization": args.normalization,
                "render.device": args.device,
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
    """The exit code for an expected error: 2 for usage/configuration mistakes (a wrong path too), 1 for the rest."""
    if isinstance(err, PathError):
        return 2 if err.user_mistake else 1
    return 2 if isinstance(err, ConfigError) else 1


def continue_command(command: str, argv: Sequence[str]) -> str:
    """The command line that continues an interrupted run (``render`` gets ``--resume``)."""
    words = ["nvsynth", *argv]
    if command == "render" and "--resume" not in words:
        words.append("--resume")
    return shlex.join(words)


def interrupted_line(command: str, argv: Sequence[str], signame: str) -> str:
    """The one line of a run stopped by a signal."""
    if command == "render":
        return (f"nvsynth render: interrupted by {signame}; the committed units are kept: "
                f"resume with `{continue_command(command, argv)}`")  # fmt: skip
    if command == "recon":
        return (f"nvsynth recon: interrupted by {signame}; finished frames are kept: "
                f"continue with `{continue_command(command, argv)}`")  # fmt: skip
    return f"nvsynth {command}: interrupted by {signame}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from nvsynth.runtime.interrupt import install_sigterm

    install_sigterm()  # SIGTERM (what schedulers send) stops like Ctrl-C: one line, workers shut down
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit gives EFBIG (one line), not a silent kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        return _dispatch(args)
    except NvsynthError as err:
        hint = ""
        if isinstance(err, WorkerError) and args.command in ("render", "recon"):
            kept = "the committed units are kept: resume with" if args.command == "render" else "continue with"
            hint = f"; {kept} `{continue_command(args.command, argv)}`"
        print(f"nvsynth {args.command}: error: {_one_line(err)}{hint}", file=sys.stderr)
        return exit_code(err)
    except OSError as err:  # not translated by a layer: still one line that names the path
        pe = path_error(err, None, "read or write it")
        print(f"nvsynth {args.command}: error: {_one_line(pe)}", file=sys.stderr)
        return exit_code(pe)
    except KeyboardInterrupt as err:
        signum = int(getattr(err, "signum", signal.SIGINT))
        print(interrupted_line(args.command, argv, signal.Signals(signum).name), file=sys.stderr)
        return 128 + signum


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).splitlines()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())

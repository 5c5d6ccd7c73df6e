"""Peak memory of `nvsynth render` on a subject of MPIIFaceGaze's size (3,000 frames): it must stay flat.

The subject: the bundled sample's recon records cycled to ``--frames``
records with distinct frame indices (``benchmarks/sample_records.py``).
``nvsynth render`` runs as a child process (the CLI, as a user runs it); this
script samples ``/proc`` every ``--every`` seconds for the render process and
all its descendants (the worker processes, multiprocessing's resource
tracker) and prints

* each process's peak RSS (``VmHWM``, the kernel's high-water mark, so a
  peak between two samples is not missed) and its last RSS;
* the main process's RSS over the run (at each tenth of the elapsed time):
  flat means nothing accumulates per source;
* ``getrusage(RUSAGE_CHILDREN).ru_maxrss``, the largest peak of any one
  descendant, as a cross-check.

Run it at two sizes (e.g. ``--frames 300`` and ``--frames 3000``): equal
peaks mean memory does not grow with the subject.

    python benchmarks/bench_memory.py [--frames 3000] [--views 16] [--workers auto] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Proc:
    pid: int
    role: str
    hwm_kb: int = 0
    rss_kb: int = 0
    series: list[tuple[float, int]] = field(default_factory=list)  # (seconds, RSS kB)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):  # the task ended meanwhile
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += _children(p)
    return found


def _status(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in kB, or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    vals = {ln.split(":")[0]: int(ln.split()[1]) for ln in text.splitlines() if ln.startswith(("VmHWM", "VmRSS"))}
    if "VmRSS" not in vals:  # exited, not yet reaped
        return None
    return vals.get("VmHWM", 0), vals["VmRSS"]


def _role(pid: int, main: int) -> str:
    if pid == main:
        return "main (nvsynth render)"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if "resource_tracker" in cmd:
        return "resource tracker"
    return "worker" if "multiprocessing" in cmd or "spawn_main" in cmd else cmd[:60]


def watch(cmd: list[str], every: float, log: Path) -> tuple[int, float, dict[int, Proc]]:
    """Run ``cmd``, sampling its process tree; returns (exit code, wall seconds, processes by pid)."""
    procs: dict[int, Proc] = {}
    t0 = time.perf_counter()
    with open(log, "w") as err:
        child = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, cwd=REPO)
        while True:
            now = time.perf_counter() - t0
            for pid in _descendants(child.pid):
                st = _status(pid)
                if st is None:
                    continue
                p = procs.get(pid) or procs.setdefault(pid, Proc(pid, _role(pid, child.pid)))
                p.hwm_kb, p.rss_kb = max(p.hwm_kb, st[0]), st[1]
                p.series.append((now, st[1]))
            if child.poll() is not None:
                break
            time.sleep(every)
    return child.returncode, time.perf_counter() - t0, procs


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from sample_records import make_records

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3000, help="source frames of the subject (default 3000)")
    ap.add_argument("--views", type=int, default=16, help="views per source (default 16)")
    ap.add_argument("--workers", default="auto", help="render workers (default auto)")
    ap.add_argument("--every", type=float, default=0.25, help="seconds between samples (default 0.25)")
    ap.add_argument("--keep", type=Path, help="keep the records and output in this folder")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="nvsynth-mem-")) if args.keep is None else args.keep
    try:
        obj = work / "obj"
        t = time.perf_counter()
        raw = make_records(obj, args.frames)
        print(f"{args.frames} records in {time.perf_counter() - t:.0f} s")
        cfg = work / "cfg.yaml"
        cfg.write_text(f"data:\n  mpii: {{raw: {raw}, obj: {obj}}}\n")
        out = work / "out"
        cmd = [sys.executable, "-m", "nvsynth.app.cli", "render", "--config", str(cfg), "-save", str(out),
               "--views", str(args.views), "--workers", str(args.workers)]  # fmt: skip
        rc, wall, procs = watch(cmd, args.every, work / "render.log")
        lines = (work / "render.log").read_text().replace("\r", "\n").splitlines()
        for ln in lines:
            if ln.startswith(("nvsynth render:", "rendered ")):
                print(ln)
        if rc != 0:
            raise SystemExit(f"render failed ({rc}): {lines[-3:]}")
        size = sum(p.stat().st_size for p in out.glob("*.h5")) / 1e9
        images = args.frames * args.views
        print(f"{images} images ({args.frames} frames x {args.views} views), {wall:.0f} s, h5 {size:.2f} GB")
        for p in sorted(procs.values(), key=lambda p: (p.role != "main (nvsynth render)", p.pid)):
            print(f"  pid {p.pid:>7} {p.role:<24} peak RSS {p.hwm_kb / 1024:7.0f} MB, last {p.rss_kb / 1024:6.0f} MB")
        main_proc = next(p for p in procs.values() if p.role.startswith("main"))
        tenths = []
        for k in range(1, 11):
            at = wall * k / 10
            tenths.append(min(main_proc.series, key=lambda s: abs(s[0] - at))[1] / 1024)
        print("  main RSS at each tenth of the run (MB): " + " ".join(f"{v:.0f}" for v in tenths))
        for role in ("worker",):
            ws = [p for p in procs.values() if p.role == role]
            for p in ws:
                mids = [p.series[len(p.series) * k // 4][1] / 1024 for k in (1, 2, 3)] if p.series else []
                print(f"  {role} {p.pid} RSS at 1/4, 1/2, 3/4 of its life (MB): " + " ".join(f"{v:.0f}" for v in mids))
        print(
            f"  largest peak of any one descendant (getrusage RUSAGE_CHILDREN): "
            f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB (recon of the sample included)"
        )
        total = sum(p.hwm_kb for p in procs.values()) / 1024
        print(f"  sum of peaks over the process tree: {total:.0f} MB; usable CPUs {len(os.sched_getaffinity(0))}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

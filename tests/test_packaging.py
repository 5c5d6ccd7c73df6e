"""The installed package: one top-level import name, ``nvsynth`` (docs/design.md, "Layout")."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (whl,) = out.glob("nvsynth-*.whl")
    return whl


def test_wheel_has_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"nvsynth"}
    # the stage folders and the shipped data are inside it
    for path in (
        "nvsynth/recon/fit.py",
        "nvsynth/render/gl.py",
        "nvsynth/core/geometry.py",
        "nvsynth/supplementary/sample/p00/p00.txt",
        "nvsynth/supplementary/face_model/landmark_map.json",
    ):
        assert path in names, path


def test_fresh_venv_imports_only_nvsynth(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300)

    def run(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([py, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)

    ok = run("import nvsynth.recon, nvsynth.render, nvsynth.supplementary, nvsynth.core; print('ok')")
    assert ok.returncode == 0 and ok.stdout.strip() == "ok", ok.stderr
    for name in ("recon", "render", "supplementary"):
        res = run(f"import {name}")
        assert res.returncode != 0 and "ModuleNotFoundError" in res.stderr, name

"""Shared test fixtures.

Data from ``../shared`` (face template, EYEDIAP targets, labelled faces) is
found through ``NVSYNTH_SHARED`` or the folder beside the repository. Tests
that need it skip when it is absent, unless ``NVSYNTH_REQUIRE_SHARED=1``
(CI), where its absence is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("NVSYNTH_SHARED")
    return Path(env) if env else REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    d = _shared_dir()
    if not (d / "assets" / "canonical_face_model.obj").is_file():
        if os.environ.get("NVSYNTH_REQUIRE_SHARED") == "1":
            pytest.fail(f"NVSYNTH_REQUIRE_SHARED=1 but shared data is missing at {d}")
        pytest.skip(f"shared test data not found at {d}")
    return d


@pytest.fixture(scope="session")
def template_path(shared: Path) -> Path:
    return shared / "assets" / "canonical_face_model.obj"


@pytest.fixture(autouse=True)
def _offline_assets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never download during tests; point the template at the shared copy."""
    monkeypatch.setenv("NVSYNTH_OFFLINE", "1")
    d = _shared_dir()
    if "NVSYNTH_FACE_TEMPLATE" not in os.environ and (d / "assets" / "canonical_face_model.obj").is_file():
        monkeypatch.setenv("NVSYNTH_FACE_TEMPLATE", str(d / "assets" / "canonical_face_model.obj"))
    if "NVSYNTH_TARGETS_DIR" not in os.environ and (d / "targets").is_dir():
        monkeypatch.setenv("NVSYNTH_TARGETS_DIR", str(d / "targets"))


@pytest.fixture(scope="module")
def template(template_path: Path):  # -> nvsynth.recon.template.FaceTemplate
    """The canonical face mesh, loaded once per test module."""
    from nvsynth.recon.template import load_template

    return load_template(template_path)


@pytest.fixture(scope="module")
def renderer():  # -> nvsynth.render.gl.FaceRenderer
    """One real renderer (EGL context) per test module, released afterwards."""
    from nvsynth.render.gl import FaceRenderer

    r = FaceRenderer()
    yield r
    r.release()


@pytest.fixture(scope="session")
def sample_recon(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``nvsynth recon`` with the mediapipe backend on the bundled sample: (records root, what it printed)."""
    import contextlib
    import io

    from nvsynth.core.config import from_dict
    from nvsynth.runtime.recon_run import run

    obj = tmp_path_factory.mktemp("sample-recon")
    assets = shared / "assets"
    cfg = from_dict(
        {
            "data": {"input": str(REPO / "supplementary" / "sample"), "records": str(obj)},
            "assets": {
                "face_template": str(assets / "canonical_face_model.obj"),
                "face_landmark_model": str(assets / "face_landmark.tflite"),
                "iris_landmark_model": str(assets / "iris_landmark.tflite"),
            },
            "recon": {"detector": "mediapipe"},
        }
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run(cfg, subjects="p00")
    return obj, out.getvalue()


@pytest.fixture(scope="session")
def sample_records(sample_recon: tuple[Path, str]) -> list:  # -> list[ReconRecord]
    """The sample's six mediapipe records, in frame order."""
    from nvsynth.recon.record import ReconRecord

    paths = sorted((sample_recon[0] / "p00").rglob("*.npz"))
    return [ReconRecord.load(p) for p in paths]

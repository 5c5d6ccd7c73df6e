"""Ground-truth fidelity, small: one synthetic subject whose true head is known (benchmarks/fidelity).

The astronaut's true head (deformation seed 11) in 3 frames, through ``nvsynth recon``
and ``nvsynth render`` (patterns ``gaussian``, 2 views, and ``source``), every row scored
against the true head rendered at the row's labelled pose. The figures are defined in
``benchmarks/fidelity/score.py``; ``benchmarks/bench_fidelity.py`` is the full benchmark.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

pytest.importorskip("skimage")

from benchmarks.fidelity import run, score  # noqa: E402

SPEC = run.Spec("p80", "astronaut", 11)
FRAMES = 3
VIEWS = 2
PATTERNS = ("gaussian", "source")


@pytest.fixture(scope="module")
def built(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[score.RowScore]]:
    """(benchmark folder, truths, scores) of the small run."""
    root = tmp_path_factory.mktemp("fidelity")
    with pytest.MonkeyPatch.context() as mp:  # the CLI runs in subprocesses: offline, shared template
        mp.setenv("NVSYNTH_OFFLINE", "1")
        mp.setenv("NVSYNTH_FACE_TEMPLATE", str(shared / "assets" / "canonical_face_model.obj"))
        mp.setenv("NVSYNTH_SHARED", str(shared))
        truths = run.build(root, [SPEC], FRAMES, verbose=False)
        run.run_nvsynth(root, [SPEC.subject], PATTERNS, VIEWS)
        return root, truths, run.score_all(root, truths, PATTERNS, keep_images=0)


@pytest.fixture(scope="module")
def scores(built: tuple[Path, dict, list[score.RowScore]]) -> list[score.RowScore]:
    return built[2]


def test_row_transform_is_nvsynth_view_geometry() -> None:
    """The benchmark's row transform (from the stored columns) equals the render stage's own transform."""
    from nvsynth.core.geometry import HeadPose
    from nvsynth.render.views import make_view, normalize_source

    rng = np.random.default_rng(3)
    K = np.array([[1010.0, 0.0, 652.0], [0.0, 1010.0, 347.0], [0.0, 0.0, 1.0]])
    for _ in range(5):
        rvec = np.array([np.pi, 0.0, 0.0]) + rng.normal(0, 0.3, 3)
        tvec = np.array([rng.uniform(-100, 100), rng.uniform(-60, 60), rng.uniform(450, 700)])
        src = normalize_source(rvec, tvec, K, np.array([0.0, 150.0, -20.0]))
        view = make_view(src, rng.normal(0.0, 0.35, 2), np.zeros((68, 3)))
        assert view is not None
        fc = HeadPose.from_rvec(rvec, tvec).face_center()
        T = score.row_transform(
            view.face_mat_norm.astype(np.float32), view.rotation_matrix.astype(np.float32), fc
        )  # as stored in the h5 (float32)
        pts = rng.normal(fc, 60.0, (50, 3))
        moved = pts @ view.transform[:3, :3].T + view.transform[:3, 3]
        np.testing.assert_allclose(pts @ T[:3, :3].T + T[:3, 3], moved, atol=1e-3)  # mm


def test_flow_reads_a_known_shift(built: tuple[Path, dict, list[score.RowScore]]) -> None:
    """DIS flow on the truth's own texture reads a known 2 mm sideways shift (3.2 patch px at 300 mm)."""
    from nvsynth.core.geometry import normalize
    from nvsynth.datasets.mpii import open_subject
    from nvsynth.render.gl import FaceRenderer

    root, truths, _ = built
    truth = truths[SPEC.subject]
    subject = open_subject(root / "raw", SPEC.subject)
    frame = subject.frame_list(1)[0]
    R = normalize(frame.head_pose, subject.calibration.camera.matrix).rotation
    T = score.row_transform(R, np.eye(3), frame.head_pose.face_center())  # the source view
    shifted = T.copy()
    shifted[0, 3] += 2.0
    rec = score.truth_record(truth, frame, subject)
    fr = FaceRenderer()
    try:
        patches, masks = score.to_patches(fr.render(truth.head.texture, score.truth_mesh(truth, rec), [T, shifted]))
    finally:
        fr.release()
    mag = score.flow_magnitude(patches[0], patches[1])[masks[0] & masks[1]]
    expected = 2.0 * 960.0 / 300.0 / 2.0
    assert abs(float(np.median(mag)) - expected) < 0.3, (np.median(mag), expected)


def _pattern(scores: list[score.RowScore], novel: bool) -> score.Summary:
    return score.summarize([s for s in scores if (s.pattern != "source") == novel])


def test_every_row_is_scored_and_the_measurement_floor_is_low(scores: list[score.RowScore]) -> None:
    assert len(scores) == FRAMES * VIEWS + FRAMES
    assert all(s.flow.size > 1000 and s.mask_px > 1000 for s in scores)
    # the true mesh through nvsynth's own render path scores (nearly) zero: the yardstick is sound
    both = score.summarize(scores)
    assert both.oracle_median <= 0.5, both
    # the background-share mesh reproduces the stored patches (the render stage builds its mesh that way)
    assert both.repro <= 1.0, both
    assert np.isfinite(both.background_share) and 0.0 <= both.background_share < 0.5


def test_source_pattern_matches_the_true_head(scores: list[score.RowScore]) -> None:
    src = _pattern(scores, novel=False)
    assert src.median <= 1.0, src


def test_novel_views_match_the_true_head(scores: list[score.RowScore]) -> None:
    novel = _pattern(scores, novel=True)
    assert novel.median <= 2.0, novel

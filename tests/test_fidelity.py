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
def scores(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> list[score.RowScore]:
    root = tmp_path_factory.mktemp("fidelity")
    with pytest.MonkeyPatch.context() as mp:  # the CLI runs in subprocesses: offline, shared template
        mp.setenv("NVSYNTH_OFFLINE", "1")
        mp.setenv("NVSYNTH_FACE_TEMPLATE", str(shared / "assets" / "canonical_face_model.obj"))
        mp.setenv("NVSYNTH_SHARED", str(shared))
        truths = run.build(root, [SPEC], FRAMES, verbose=False)
        run.run_nvsynth(root, [SPEC.subject], PATTERNS, VIEWS)
        return run.score_all(root, truths, PATTERNS, keep_images=0)


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


@pytest.mark.xfail(
    strict=False,
    reason="baseline before the 'novel views that match the head' fixes: source-pattern median 2.3 px, p90 3.9 px "
    "(fitted mesh not at the annotation's depth)",
)
def test_source_pattern_matches_the_true_head(scores: list[score.RowScore]) -> None:
    src = _pattern(scores, novel=False)
    assert src.median <= 1.0, src


@pytest.mark.xfail(
    strict=False,
    reason="baseline before the 'novel views that match the head' fixes: novel-view median 17.1 px, p90 21.0 px "
    "(fitted mesh not at the annotation's depth, jaw, fill)",
)
def test_novel_views_match_the_true_head(scores: list[score.RowScore]) -> None:
    novel = _pattern(scores, novel=True)
    assert novel.median <= 2.0, novel

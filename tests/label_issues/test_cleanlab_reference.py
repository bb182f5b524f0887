"""cleanlab as the reference detector: its mask and image scores on the finder's posteriors, in the report."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from jcas_monai.data.io import IGNORE_INDEX, write_label
from jcas_monai.label_issues import (
    CleanlabReference,
    ImageResult,
    LabelIssueReport,
    image_score,
    pixel_suspicion,
    spearman,
)

NAMES = ["background", "tool"]


def _result(folder, index: int, wrong: int, rng: np.random.Generator, ignore: int = 0) -> ImageResult:
    """An 8 x 8 image whose clean label is a tool square; ``wrong`` background pixels are labelled tool and
    the first ``ignore`` pixels carry no label. The posterior is right everywhere and most confident where the
    label is wrong."""
    clean = np.zeros((8, 8), dtype=np.uint8)
    clean[2:6, 2:6] = 1
    given = clean.copy()
    flips = rng.choice(np.flatnonzero(clean.ravel() == 0), size=wrong, replace=False)
    given.flat[flips] = 1
    given.flat[:ignore] = IGNORE_INDEX
    p_tool = np.where(clean == 1, rng.uniform(0.85, 0.95, clean.shape), rng.uniform(0.05, 0.15, clean.shape))
    p_tool.flat[flips] = 0.01
    probs = np.stack([1 - p_tool, p_tool]).astype(np.float32)
    path = folder / f"label_{index}.png"
    write_label(path, given)
    evaluated = given != IGNORE_INDEX
    pixels = pixel_suspicion(torch.from_numpy(probs), torch.from_numpy(given.astype(np.int64)), "softmax")
    return ImageResult(
        image=str(folder / f"image_{index}.png"),
        label=str(path),
        score=image_score(pixels.suspicion, pixels.valid, "softmin"),
        flagged_fraction=0.0,
        likely_true_class=None,
        suspicion=pixels.suspicion.numpy(),
        flagged=np.zeros(given.shape, dtype=bool),
        likely=np.zeros(given.shape, dtype=np.uint8),
        prediction=(p_tool > 0.5).astype(np.uint8),
        pairs=np.zeros((2, 2), dtype=np.int64),
        labelled=int(evaluated.sum()),
        error=(given != clean) & evaluated,
        evaluated=evaluated,
        probs=probs,
    )


def _results(folder) -> list[ImageResult]:
    rng = np.random.default_rng(0)
    return [_result(folder, i, wrong, rng, ignore=3 if i == 0 else 0) for i, wrong in enumerate([0, 1, 3, 6, 10, 15])]


def test_cleanlab_flags_exactly_the_pixels_a_confident_model_contradicts(tmp_path):
    pytest.importorskip("cleanlab")
    reference = CleanlabReference()
    results = _results(tmp_path)
    for result in results:
        reference.add(result)
    summary = reference.summary(top_fraction=0.2)
    errors = sum(int(r.error.sum()) for r in results)
    assert summary["flagged_pixel_precision"] == 1.0 and summary["flagged_pixel_recall"] == 1.0
    assert summary["flagged_fraction"] == pytest.approx(errors / sum(int(r.evaluated.sum()) for r in results))
    assert summary["num_pixel_issues"]["image_spearman"] == pytest.approx(1.0)
    # cleanlab's soft-min quality is 1 - the bundle's own soft-min of the softmax suspicion
    wrong = np.array([r.wrong_fraction for r in results])
    ours = spearman(np.array([r.score for r in results]), wrong)
    assert summary["softmin"]["image_spearman"] == pytest.approx(ours)
    assert summary["softmin"]["precision_at_top"]["any_wrong_pixel"] == 1.0


def test_the_report_adds_cleanlab_beside_its_own_evaluation(tmp_path):
    pytest.importorskip("cleanlab")

    class Finder:
        def __init__(self, results):
            self.results = results

        def __iter__(self):
            return iter(self.results)

        def settings(self):
            return {"model": "m.pt", "T_C": None}

    LabelIssueReport(tmp_path / "out", NAMES, previews=0, cleanlab=True).write(Finder(_results(tmp_path)))
    evaluation = json.loads((tmp_path / "out" / "summary.json").read_text())["evaluation"]
    assert evaluation["cleanlab"]["flagged_pixel_recall"] == 1.0
    assert evaluation["cleanlab"]["softmin"]["image_spearman"] == pytest.approx(evaluation["image_spearman"], abs=1e-6)


def test_labels_of_different_sizes_are_refused_naming_the_label(tmp_path):
    pytest.importorskip("cleanlab")
    reference = CleanlabReference()
    first, second = _results(tmp_path)[:2]
    reference.add(first)
    second.probs = np.full((2, 4, 8), 0.5, dtype=np.float32)
    with pytest.raises(ValueError, match=r"label_1\.png: size 4x8.*one size \(8x8"):
        reference.add(second)


def test_without_cleanlab_the_report_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    monkeypatch.setitem(sys.modules, "cleanlab.segmentation", None)
    with pytest.raises(ImportError, match="pip install cleanlab"):
        LabelIssueReport(tmp_path, NAMES, cleanlab=True)


def test_a_result_without_its_posterior_is_refused_naming_the_label(tmp_path):
    pytest.importorskip("cleanlab")
    result = _results(tmp_path)[1]
    result.probs = None
    with pytest.raises(ValueError, match=r"label_1\.png: scored without its class posterior.*keep_probs=True"):
        CleanlabReference().add(result)


@pytest.mark.parametrize("cleanlab", [False, True])
def test_the_bundle_keeps_posteriors_only_for_the_cleanlab_reference(cleanlab):
    from conftest import LABEL_ISSUES, TRAIN
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([TRAIN, LABEL_ISSUES])
    parser["label_issues_cleanlab"] = cleanlab
    assert parser.get_parsed_content("label_issues#finder#keep_probs") is cleanlab
